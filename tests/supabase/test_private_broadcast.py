"""supabase/migrations/20261129000000_private_broadcast.sql, on a real supabase_local.

Every INSERT statement on ``monitoring_events`` is broadcast on the private topic
``monitor:events``, its rows packed into as few messages as fit under the payload limit
in ``monitoring_broadcast_settings``; a row too large for any message is announced by
seq. A retried write (``ON CONFLICT DO NOTHING``, the sink's upsert) sends nothing again.
Signed-in users receive ``monitor:events`` and ``monitor:control``; only the service role
may send on them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from realtime import RealtimeSubscribeStates

from tests.fixtures.supabase_local import SupabaseLocal
from tests.supabase_local.test_realtime import Inbox
from tests.supabase_local.test_realtime_authorization import join, private, signed_in

EVENTS_TOPIC = "monitor:events"
CONTROL_TOPIC = "monitor:control"
CHECKSUM = "ab" * 32


def row(seq: int, *, payload: dict | None = None) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_type": "page.view",
        "source": "web",
        "criticality": "user_activity",
        "occurred_at": "2026-11-29T12:00:00+00:00",
        "received_at": "2026-11-29T12:00:01+00:00",
        "payload": payload or {},
        "checksum": CHECKSUM,
    }


def upsert(server: SupabaseLocal, rows: list[dict[str, Any]]) -> httpx.Response:
    """The sink's write: one upsert on seq that ignores rows already there, as service role."""
    return httpx.post(
        f"{server.url}/rest/v1/monitoring_events",
        params={"on_conflict": "seq"},
        headers={
            "apikey": server.secret_key,
            "Prefer": "resolution=ignore-duplicates,return=minimal",
        },
        json=rows,
        timeout=10,
    )


@pytest.fixture
def table(supabase_local: SupabaseLocal):
    supabase_local.truncate()
    yield supabase_local
    supabase_local.sql("UPDATE public.monitoring_broadcast_settings SET max_payload_kb = 256")
    supabase_local.truncate()


def event_messages(inbox: Inbox) -> list[dict[str, Any]]:
    return [m["payload"] for m in inbox.items if m["event"] == "events"]


async def test_one_statement_is_one_message_with_every_row_in_seq_order(table):
    inbox = Inbox()
    async with signed_in(table, str(uuid.uuid4())) as user:
        state, _, _ = await join(user, EVENTS_TOPIC, private(), inbox)
        response = await asyncio.to_thread(upsert, table, [row(3), row(1), row(2)])
        message = await inbox.get(lambda m: m["event"] == "events")
        await inbox.nothing(lambda m: m is not message)

    assert state == RealtimeSubscribeStates.SUBSCRIBED
    assert response.status_code == 201
    assert [event["seq"] for event in message["payload"]["events"]] == [1, 2, 3]
    assert message["payload"]["announced"] == []
    first = message["payload"]["events"][0]
    assert set(first) == {"seq", "event_type", "source", "criticality", "occurred_at",
                          "received_at", "payload", "checksum"}  # fmt: skip
    assert first["checksum"] == CHECKSUM


async def test_a_retried_write_broadcasts_only_the_rows_it_inserted(table):
    inbox = Inbox()
    await asyncio.to_thread(upsert, table, [row(1), row(2)])
    async with signed_in(table, str(uuid.uuid4())) as user:
        await join(user, EVENTS_TOPIC, private(), inbox)
        await asyncio.to_thread(upsert, table, [row(1), row(2)])  # a retry: nothing new
        await asyncio.to_thread(upsert, table, [row(2), row(3)])  # half new
        message = await inbox.get(lambda m: m["event"] == "events")
        await inbox.nothing(lambda m: m is not message)

    assert [event["seq"] for event in message["payload"]["events"]] == [3]


async def test_rows_are_packed_under_the_payload_limit_and_a_huge_one_is_announced(table):
    table.sql("UPDATE public.monitoring_broadcast_settings SET max_payload_kb = 4")
    filler = "x" * 1500  # about 1.8 kB a row: two fit in 4 kB, three do not
    rows = [row(seq, payload={"note": filler}) for seq in range(1, 6)]
    rows.append(row(6, payload={"note": "y" * 5000}))  # alone over the limit
    rows.append(row(7))
    inbox = Inbox()
    async with signed_in(table, str(uuid.uuid4())) as user:
        await join(user, EVENTS_TOPIC, private(), inbox)
        await asyncio.to_thread(upsert, table, rows)
        messages = await inbox.collect(lambda m: m["event"] == "events", 3)
        await inbox.nothing(lambda m: m["event"] == "events" and m not in messages)

    payloads = [m["payload"] for m in messages]
    carried = [event["seq"] for p in payloads for event in p["events"]]
    announced = [seq for p in payloads for seq in p["announced"]]
    assert carried == [1, 2, 3, 4, 5, 7]
    assert announced == [6]
    assert all(len(json.dumps(p, separators=(",", ":"))) <= 4000 for p in payloads)


async def test_signed_in_users_receive_both_topics_and_anonymous_visitors_neither(table):
    async with signed_in(table, str(uuid.uuid4())) as user, signed_in(table, None) as anon:
        user_events, _, _ = await join(user, EVENTS_TOPIC, private())
        user_control, _, _ = await join(user, CONTROL_TOPIC, private())
        anon_events, _, _ = await join(anon, EVENTS_TOPIC, private())
        anon_control, _, _ = await join(anon, CONTROL_TOPIC, private())

    assert user_events == user_control == RealtimeSubscribeStates.SUBSCRIBED
    assert anon_events == anon_control == RealtimeSubscribeStates.CHANNEL_ERROR


@pytest.mark.parametrize("topic", [EVENTS_TOPIC, CONTROL_TOPIC])
async def test_a_signed_in_user_cannot_send_on_the_monitor_topics(table, topic):
    listener_inbox = Inbox()
    async with signed_in(table, "1") as sender, signed_in(table, "2") as listener:
        await join(listener, topic, private(), listener_inbox)
        _, _, channel = await join(sender, topic, private())
        await channel.send_broadcast("control", {"action": "switch_transport"})
        await channel.send_broadcast("events", {"events": [row(999)], "announced": []})
        await listener_inbox.nothing()


async def test_a_permissive_send_policy_for_everything_still_leaves_the_topics_closed(table):
    # Someone later adds "authenticated may send anywhere": the restrictive policy holds.
    table.sql(
        'CREATE POLICY "too broad" ON realtime.messages FOR INSERT TO authenticated'
        " WITH CHECK (true)"
    )
    try:
        listener_inbox = Inbox()
        async with signed_in(table, "1") as sender, signed_in(table, "2") as listener:
            await join(listener, CONTROL_TOPIC, private(), listener_inbox)
            _, _, channel = await join(sender, CONTROL_TOPIC, private())
            await channel.send_broadcast("control", {"action": "switch_transport"})
            await listener_inbox.nothing()
    finally:
        table.sql('DROP POLICY "too broad" ON realtime.messages')
