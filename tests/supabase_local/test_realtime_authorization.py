"""Realtime Authorization and Broadcast from the database, through the official client.

A private channel is joined only when the RLS policies on ``realtime.messages`` let the
joining user read it; ``realtime.send`` (from SQL, a trigger, RPC) reaches the channels of
its topic after commit, in commit order; a private join can ask for the messages it
missed (broadcast replay). The policies here are the ones Supabase documents for
per-user topics: ``realtime.topic() = 'user:' || (auth.jwt() ->> 'sub')``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from tests.fixtures.supabase_local import SupabaseLocal, running_supabase_local
from tests.supabase_local.test_realtime import WAIT, Inbox

POLICIES = """
CREATE POLICY "user topic: receive" ON realtime.messages FOR SELECT TO authenticated
    USING (realtime.topic() = 'user:' || (auth.jwt() ->> 'sub'));
CREATE POLICY "user topic: send" ON realtime.messages FOR INSERT TO authenticated
    WITH CHECK (realtime.topic() = 'user:' || (auth.jwt() ->> 'sub')
                AND extension = 'broadcast');
CREATE POLICY "lobby: receive only" ON realtime.messages FOR SELECT TO authenticated
    USING (realtime.topic() = 'lobby');
"""
DROP_POLICIES = """
DROP POLICY IF EXISTS "user topic: receive" ON realtime.messages;
DROP POLICY IF EXISTS "user topic: send" ON realtime.messages;
DROP POLICY IF EXISTS "lobby: receive only" ON realtime.messages;
"""


@pytest.fixture(scope="module")
def policies(supabase_local: SupabaseLocal) -> Iterator[SupabaseLocal]:
    supabase_local.sql(DROP_POLICIES + POLICIES)
    yield supabase_local
    supabase_local.sql(DROP_POLICIES)


def private(replay: dict[str, int] | None = None, *, is_private: bool = True) -> dict:
    broadcast: dict[str, Any] = {"self": True, "ack": True}
    if replay is not None:
        broadcast["replay"] = replay
    return {
        "config": {
            "broadcast": broadcast,
            "presence": {"key": "", "enabled": False},
            "private": is_private,
        }
    }


@contextlib.asynccontextmanager
async def signed_in(server: SupabaseLocal, sub: str | None) -> AsyncIterator[Any]:
    """A client on the publishable key, as user ``sub`` (None: anonymous)."""
    client = AsyncRealtimeClient(
        f"{server.url}/realtime/v1", server.publishable_key, auto_reconnect=False
    )
    try:
        if sub is not None:
            await client.set_auth(server.mint_signed("authenticated", sub))
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


async def join(client: Any, topic: str, params: dict, events: Inbox | None = None) -> Any:
    """Join; returns (state, error or None, channel)."""
    states = Inbox()
    channel = client.channel(topic, params)
    if events is not None:
        channel.on_broadcast("*", events)
    await asyncio.wait_for(channel.subscribe(states), WAIT)
    state, *rest = await states.get()
    return state, (rest[0] if rest else None), channel


def send_sql(server: SupabaseLocal, topic: str, event: str, payload: dict, *, private=True):
    server.sql("SELECT realtime.send(%s::jsonb, %s, %s, %s)", json.dumps(payload), event, topic,
               private)  # fmt: skip


# -- who may join --------------------------------------------------------------------------


async def test_a_user_joins_their_own_topic_and_is_refused_anothers(policies):
    async with signed_in(policies, "7") as seven, signed_in(policies, None) as anon:
        own, _, _ = await join(seven, "user:7", private())
        other, other_error, _ = await join(seven, "user:8", private())
        anonymous, _, _ = await join(anon, "user:7", private())

    assert own == RealtimeSubscribeStates.SUBSCRIBED
    assert other == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "Unauthorized: You do not have permissions to read from this Channel topic: user:8" in (
        str(other_error)
    )
    assert anonymous == RealtimeSubscribeStates.CHANNEL_ERROR


async def test_no_policy_means_no_private_channel(supabase_local):
    async with signed_in(supabase_local, str(uuid.uuid4())) as user:
        state, _, _ = await join(user, f"nobody-allows-{uuid.uuid4().hex[:6]}", private())

    assert state == RealtimeSubscribeStates.CHANNEL_ERROR


async def test_probe_rows_of_the_checks_are_never_stored(policies):
    async with signed_in(policies, "7") as seven:
        await join(seven, "user:7", private())

    assert policies.sql("SELECT count(*) AS n FROM realtime.messages WHERE topic = 'user:7'"
                        " AND payload IS NULL") == [{"n": 0}]  # fmt: skip


# -- Broadcast from the database -------------------------------------------------------------


async def test_realtime_send_from_sql_reaches_the_joined_user_only(policies):
    mine, public_inbox = Inbox(), Inbox()
    async with signed_in(policies, "7") as seven, signed_in(policies, "7") as same_name_public:
        await join(seven, "user:7", private(), mine)
        await join(same_name_public, "user:7", private(is_private=False), public_inbox)

        await asyncio.to_thread(send_sql, policies, "user:7", "note", {"n": 1})

        message = await mine.get()
        await public_inbox.nothing()  # a public channel of the same name is another topic
    assert message["event"] == "note"
    assert message["payload"]["n"] == 1
    assert message["meta"]["id"] == message["payload"]["id"]  # send adds the id


async def test_a_trigger_sends_in_the_writers_transaction_and_a_rollback_sends_nothing(policies):
    table = f"rt_notes_{uuid.uuid4().hex[:6]}"
    policies.sql(
        f"CREATE TABLE public.{table} (id int PRIMARY KEY, body text);"
        f" CREATE FUNCTION public.{table}_send() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN PERFORM realtime.broadcast_changes('user:7', TG_OP, TG_OP, TG_TABLE_NAME,"
        f" TG_TABLE_SCHEMA, NEW, OLD); RETURN NULL; END $$;"
        f" CREATE TRIGGER send AFTER INSERT ON public.{table}"
        f" FOR EACH ROW EXECUTE FUNCTION public.{table}_send();"
    )
    inbox = Inbox()
    try:
        async with signed_in(policies, "7") as seven:
            await join(seven, "user:7", private(), inbox)
            await asyncio.to_thread(
                policies.sql,
                f"BEGIN; INSERT INTO public.{table} VALUES (1, 'kept'); COMMIT;"
                f" BEGIN; INSERT INTO public.{table} VALUES (2, 'rolled back'); ROLLBACK;"
                f" INSERT INTO public.{table} VALUES (3, 'kept too');",
            )
            first = await inbox.get(lambda m: m["payload"]["record"]["id"] == 1)
            third = await inbox.get(lambda m: m["payload"]["record"]["id"] == 3)
            await inbox.nothing(lambda m: m["payload"]["record"]["id"] == 2)
    finally:
        policies.sql(f"DROP TABLE public.{table}; DROP FUNCTION public.{table}_send()")

    assert first["event"] == "INSERT"
    assert (first["payload"]["operation"], first["payload"]["table"]) == ("INSERT", table)
    assert third["payload"]["record"] == {"id": 3, "body": "kept too"}


async def test_an_rpc_that_sends_reaches_the_joined_user(policies):
    function = f"notify_{uuid.uuid4().hex[:6]}"
    policies.sql(
        f"CREATE FUNCTION public.{function}(target text, body jsonb) RETURNS void"
        f" LANGUAGE sql AS $$ SELECT realtime.send(body, 'rpc', 'user:' || target, true) $$"
    )
    inbox = Inbox()
    try:
        async with signed_in(policies, "7") as seven:
            await join(seven, "user:7", private(), inbox)
            answer = await asyncio.to_thread(
                httpx.post,
                f"{policies.url}/rest/v1/rpc/{function}",
                headers={"apikey": policies.secret_key},
                json={"target": "7", "body": {"from": "rpc"}},
            )
            message = await inbox.get(lambda m: m["event"] == "rpc")
    finally:
        policies.sql(f"DROP FUNCTION public.{function}(text, jsonb)")

    assert answer.status_code == 204
    assert message["payload"]["from"] == "rpc"


async def test_messages_arrive_in_commit_order(policies):
    inbox = Inbox()
    async with signed_in(policies, "7") as seven:
        await join(seven, "user:7", private(), inbox)
        for n in range(20):
            await asyncio.to_thread(send_sql, policies, "user:7", "tick", {"n": n})
        ticks = await inbox.collect(lambda m: m["event"] == "tick", 20)

    assert [m["payload"]["n"] for m in ticks] == list(range(20))


# -- sending from clients ------------------------------------------------------------------------


async def test_a_client_broadcast_needs_the_insert_policy(policies):
    own_topic, lobby = Inbox(), Inbox()
    async with signed_in(policies, "7") as seven, signed_in(policies, "7") as listener:
        _, _, mine = await join(seven, "user:7", private())
        await join(listener, "user:7", private(), own_topic)
        _, _, lobby_sender = await join(seven, "lobby", private())
        await join(listener, "lobby", private(), lobby)

        await mine.send_broadcast("hello", {"from": "7"})
        await lobby_sender.send_broadcast("hello", {"from": "7"})

        heard = await own_topic.get(lambda m: m["event"] == "hello")
        await lobby.nothing(lambda m: m["event"] == "hello")  # read-only: dropped
    assert heard["payload"] == {"from": "7"}


def _rest_broadcast(server: SupabaseLocal, key: str, topic: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/realtime/v1/api/broadcast",
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        json={"messages": [{"topic": topic, "event": "control", "payload": {"x": 1},
                            "private": True}]},
    )  # fmt: skip


async def test_rest_broadcast_to_a_private_topic_needs_the_insert_policy(policies):
    inbox = Inbox()
    async with signed_in(policies, "7") as seven:
        await join(seven, "user:7", private(), inbox)

        forged = await asyncio.to_thread(_rest_broadcast, policies, policies.publishable_key,
                                         "user:7")  # fmt: skip
        await inbox.nothing(lambda m: m["event"] == "control")
        sent = await asyncio.to_thread(_rest_broadcast, policies, policies.secret_key, "user:7")
        await inbox.get(lambda m: m["event"] == "control")

    assert forged.status_code == sent.status_code == 202


# -- replay -------------------------------------------------------------------------------------


async def test_replay_sends_what_was_missed_then_live_messages(policies):
    sub = str(uuid.uuid4())
    topic = f"user:{sub}"
    before = int(time.time() * 1000) - 1000
    for n in range(3):
        send_sql(policies, topic, "missed", {"n": n})
    inbox = Inbox()
    async with signed_in(policies, sub) as user:
        state, _, _ = await join(user, topic, private({"since": before, "limit": 10}), inbox)
        replayed = await inbox.collect(lambda m: m["event"] == "missed", 3)
        await asyncio.to_thread(send_sql, policies, topic, "live", {"n": 3})
        live = await inbox.get(lambda m: m["event"] == "live")
        await inbox.nothing(lambda m: m["event"] == "missed" and not m["meta"].get("replayed"))

    assert state == RealtimeSubscribeStates.SUBSCRIBED
    assert [m["payload"]["n"] for m in replayed] == [0, 1, 2]
    assert all(m["meta"]["replayed"] is True for m in replayed)
    assert "replayed" not in live["meta"]


async def test_replay_keeps_the_latest_up_to_its_limit(policies):
    sub = str(uuid.uuid4())
    topic = f"user:{sub}"
    before = int(time.time() * 1000) - 1000
    for n in range(5):
        send_sql(policies, topic, "missed", {"n": n})
    inbox = Inbox()
    async with signed_in(policies, sub) as user:
        await join(user, topic, private({"since": before, "limit": 2}), inbox)
        replayed = await inbox.collect(lambda m: m["event"] == "missed", 2)
        await inbox.nothing(lambda m: m["event"] == "missed" and m["payload"]["n"] < 3)

    assert [m["payload"]["n"] for m in replayed] == [3, 4]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (private({"since": 0}, is_private=False), "Replay is not allowed for public channels"),
        (private({"since": "yesterday"}), "Replay params are not valid"),
        (private({"since": -5}), "Replay params are not valid"),
    ],
    ids=["public", "since-not-a-number", "negative"],
)
async def test_bad_replay_requests_are_refused(policies, params, reason):
    async with signed_in(policies, "7") as seven:
        state, error, _ = await join(seven, "user:7", params)

    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert reason in str(error)


# -- a project that allows private channels only ---------------------------------------------------


@pytest.fixture(scope="module")
def private_only() -> Iterator[SupabaseLocal]:
    with running_supabase_local(faults=False, extra_args=("--private-only",)) as server:
        server.sql(POLICIES)
        yield server


async def test_private_only_refuses_public_channels(private_only):
    async with signed_in(private_only, "7") as seven:
        public, error, _ = await join(seven, "lobby", private(is_private=False))
        allowed, _, _ = await join(seven, "user:7", private())

    assert public == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "PrivateOnly: This project only allows private channels" in str(error)
    assert allowed == RealtimeSubscribeStates.SUBSCRIBED
