"""Realtime conformance, driven by the official Python clients (``supabase``, ``realtime``).

Every wait is bounded: a test fails when the expected message does not arrive, and
"nothing arrives" is asserted over a short quiet period after a positive control has
arrived on another subscriber (so a silent server cannot pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from supabase import acreate_client

from tests.supabase_local.conftest import event_row

WAIT = 10.0  # seconds: generous for a loaded CI machine, still bounded
QUIET = 0.7  # seconds of silence that count as "nothing arrived"
TABLE = "monitoring_events"


class Inbox:
    """Collects callback payloads; ``get`` waits (bounded) for the next matching one."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._event = asyncio.Event()

    def __call__(self, *args: Any) -> None:
        self.items.append(args[0] if len(args) == 1 else args)
        self._event.set()

    async def get(
        self, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = WAIT
    ) -> Any:
        async def wait() -> Any:
            seen = 0
            while True:
                for item in self.items[seen:]:
                    if predicate(item):
                        return item
                seen = len(self.items)
                self._event.clear()
                await self._event.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def collect(
        self, predicate: Callable[[Any], bool], count: int, timeout: float = WAIT
    ) -> list[Any]:
        async def wait() -> list[Any]:
            while True:
                found = [i for i in self.items if predicate(i)]
                if len(found) >= count:
                    return found
                self._event.clear()
                await self._event.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def nothing(self, predicate: Callable[[Any], bool] = lambda _: True) -> None:
        await asyncio.sleep(QUIET)
        assert not [i for i in self.items if predicate(i)]


def seq_of(payload: Any) -> int | None:
    data = payload["data"]
    record = data.get("record") or data.get("old_record") or {}
    return record.get("seq")


@contextlib.asynccontextmanager
async def realtime_client(server: Any, key: str, **kwargs: Any) -> AsyncIterator[Any]:
    client = AsyncRealtimeClient(f"{server.url}/realtime/v1", key, **kwargs)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


async def subscribe_changes(
    client: Any,
    *,
    event: str = "*",
    filter: str | None = None,
    access_token: str | None = None,
    table: str = TABLE,
) -> tuple[Any, Inbox, Inbox, Inbox]:
    """Subscribe and wait for the "Subscribed to PostgreSQL" system message."""
    if access_token is not None:
        await client.set_auth(access_token)
    changes, system, states = Inbox(), Inbox(), Inbox()
    channel = client.channel(f"test-{uuid.uuid4().hex[:8]}")
    channel.on_postgres_changes(event, changes, table=table, schema="public", filter=filter)
    channel.on_system(system)
    await asyncio.wait_for(channel.subscribe(states), WAIT)
    return channel, changes, system, states


async def subscribed(system: Inbox) -> None:
    message = await system.get()
    assert (message.status, message.extension, message.message) == (
        "ok",
        "postgres_changes",
        "Subscribed to PostgreSQL",
    )


def insert_sql(server: Any, seq: int, **overrides: Any) -> None:
    row = event_row(seq, **overrides)
    server.sql(
        "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
        row["seq"], row["event_type"], row["source"], row["criticality"],
        row["occurred_at"], row["received_at"], _json(row["payload"]), row["checksum"],
    )  # fmt: skip


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


# -- postgres_changes -------------------------------------------------------------------


async def test_insert_through_rest_reaches_an_async_supabase_client(
    supabase_local, service_client, seq_block
):
    [seq] = seq_block(1)
    client = await acreate_client(supabase_local.url, supabase_local.service_role_key)
    changes, system, states = Inbox(), Inbox(), Inbox()
    channel = client.channel(f"rest-{seq}")
    channel.on_postgres_changes("INSERT", changes, table=TABLE, schema="public")
    channel.on_system(system)
    try:
        await asyncio.wait_for(channel.subscribe(states), WAIT)
        assert states.items[0][0] == RealtimeSubscribeStates.SUBSCRIBED
        await subscribed(system)

        await asyncio.to_thread(
            lambda: service_client.table(TABLE).insert(event_row(seq)).execute()
        )

        payload = await changes.get(lambda p: seq_of(p) == seq)
        data = payload["data"]
        assert (data["schema"], data["table"], data["type"]) == ("public", TABLE, "INSERT")
        assert data["record"]["payload"] == event_row(seq)["payload"]
        assert {"name": "seq", "type": "int8"} in data["columns"]
        assert {"name": "payload", "type": "jsonb"} in data["columns"]
        assert data["commit_timestamp"].endswith("Z")
        assert data["errors"] is None
        assert payload["ids"] == [channel.postgres_changes_callbacks[0].id]
    finally:
        await client.remove_all_channels()


async def test_insert_through_plain_sql_reaches_the_subscriber(supabase_local, seq_block):
    [seq] = seq_block(1)
    async with realtime_client(supabase_local, supabase_local.service_role_key) as client:
        _, changes, system, _ = await subscribe_changes(client, event="INSERT")
        await subscribed(system)
        insert_sql(supabase_local, seq)
        payload = await changes.get(lambda p: seq_of(p) == seq)
        assert payload["data"]["record"]["checksum"] == event_row(seq)["checksum"]


async def test_update_and_delete_events_carry_old_record_with_the_key(supabase_local, seq_block):
    [seq] = seq_block(1)
    async with realtime_client(supabase_local, supabase_local.service_role_key) as client:
        _, changes, system, _ = await subscribe_changes(client, event="*")
        await subscribed(system)
        insert_sql(supabase_local, seq)
        supabase_local.sql(
            "UPDATE public.monitoring_events SET source = 'updated' WHERE seq = %s", seq
        )
        supabase_local.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seq)

        got = await changes.collect(lambda p: seq_of(p) == seq, 3)
        update, delete = got[1]["data"], got[2]["data"]
        assert [g["data"]["type"] for g in got] == ["INSERT", "UPDATE", "DELETE"]
        assert update["record"]["source"] == "updated"
        assert update["old_record"] == {"seq": seq}
        assert delete["old_record"] == {"seq": seq}
        assert "record" not in delete


@pytest.mark.parametrize(
    ("make_filter", "matching"),
    [
        (lambda s: f"seq=eq.{s[1]}", [1]),
        (lambda s: f"seq=neq.{s[1]}", [0, 2]),
        (lambda s: f"seq=gt.{s[0]}", [1, 2]),
        (lambda s: f"seq=lte.{s[1]}", [0, 1]),
        (lambda s: f"seq=in.({s[0]},{s[2]})", [0, 2]),
        (lambda s: "criticality=eq.system", [1]),
    ],
    ids=["eq", "neq", "gt", "lte", "in", "text-eq"],
)
async def test_filters_deliver_only_matching_rows(supabase_local, seq_block, make_filter, matching):
    seqs = seq_block(3)
    # event_row's criticality cycles by seq % 5: pin it so the text filter is exact.
    crit = ["debug", "system", "critical"]
    async with realtime_client(supabase_local, supabase_local.service_role_key) as client:
        _, filtered, fsys, _ = await subscribe_changes(
            client, event="INSERT", filter=make_filter(seqs)
        )
        _, control, csys, _ = await subscribe_changes(client, event="INSERT")
        await subscribed(fsys)
        await subscribed(csys)
        for seq, c in zip(seqs, crit, strict=True):
            insert_sql(supabase_local, seq, criticality=c)
        for seq in seqs:  # positive control: every row reached the unfiltered channel
            await control.get(lambda p, s=seq: seq_of(p) == s)
        for i in matching:
            await filtered.get(lambda p, s=seqs[i]: seq_of(p) == s)
        await filtered.nothing(
            lambda p: seq_of(p) in {seqs[i] for i in range(3) if i not in matching}
        )


async def test_rls_anon_gets_no_rows_and_authenticated_does(supabase_local, seq_block):
    [seq] = seq_block(1)
    user_token = supabase_local.mint("authenticated", sub=str(uuid.uuid4()))
    async with (
        realtime_client(supabase_local, supabase_local.anon_key) as anon,
        realtime_client(supabase_local, supabase_local.anon_key) as user,
    ):
        _, anon_changes, anon_sys, _ = await subscribe_changes(anon)
        _, user_changes, user_sys, _ = await subscribe_changes(user, access_token=user_token)
        await subscribed(anon_sys)
        await subscribed(user_sys)
        insert_sql(supabase_local, seq)
        await user_changes.get(lambda p: seq_of(p) == seq)
        await anon_changes.nothing()


async def test_a_table_outside_the_publication_gives_a_system_error(supabase_local, items_table):
    async with realtime_client(
        supabase_local, supabase_local.service_role_key, auto_reconnect=False
    ) as client:
        channel, _, _, states = await subscribe_changes(client, table=items_table)
        # The Python client turns a system error into CHANNEL_ERROR carrying its payload.
        _, error = await states.get(lambda s: s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)
        assert '"status": "error"' in str(error)
        assert "Unable to subscribe to changes" in str(error)
        await channel.unsubscribe()


# -- broadcast ----------------------------------------------------------------------------


async def test_broadcast_round_trip_with_self_and_ack(supabase_local):
    topic = f"room-{uuid.uuid4().hex[:8]}"
    key = supabase_local.anon_key
    async with realtime_client(supabase_local, key) as a, realtime_client(supabase_local, key) as b:
        chan_a = a.channel(
            topic,
            {
                "config": {
                    "broadcast": {"self": True, "ack": True},
                    "presence": {"key": "", "enabled": False},
                    "private": False,
                }
            },
        )
        chan_b = b.channel(topic)  # default config: self false, ack false
        got_a, got_b = Inbox(), Inbox()
        chan_a.on_broadcast("*", got_a)
        chan_b.on_broadcast("*", got_b)
        await asyncio.wait_for(chan_a.subscribe(), WAIT)
        await asyncio.wait_for(chan_b.subscribe(), WAIT)

        acks = Inbox()
        push = await chan_a.push(
            "broadcast", {"type": "broadcast", "event": "hello", "payload": {"from": "a"}}
        )
        push.receive("ok", acks)
        await acks.get()  # ack: true -> the server replied ok to the push
        assert (await got_a.get())["payload"] == {"from": "a"}  # self: true
        assert (await got_b.get())["event"] == "hello"

        await chan_b.send_broadcast("reply", {"from": "b"})
        assert (await got_a.get(lambda m: m["event"] == "reply"))["payload"] == {"from": "b"}
        await got_b.nothing(lambda m: m["event"] == "reply")  # self: false


async def test_rest_broadcast_endpoints_reach_subscribers(supabase_local):
    topic = f"rest-{uuid.uuid4().hex[:8]}"
    async with realtime_client(supabase_local, supabase_local.anon_key) as client:
        channel = client.channel(topic)
        got = Inbox()
        channel.on_broadcast("*", got)
        await asyncio.wait_for(channel.subscribe(), WAIT)

        response = httpx.post(
            f"{supabase_local.url}/realtime/v1/api/broadcast",
            headers={"apikey": supabase_local.anon_key},
            json={"messages": [{"topic": topic, "event": "batch", "payload": {"n": 1}}]},
        )
        assert response.status_code == 202
        assert (await got.get())["payload"] == {"n": 1}

        await channel.http_send("single", {"n": 2})  # the official REST path
        assert (await got.get(lambda m: m["event"] == "single"))["payload"] == {"n": 2}

        refused = httpx.post(
            f"{supabase_local.url}/realtime/v1/api/broadcast",
            headers={"apikey": "not-a-jwt"},
            json={"messages": [{"topic": topic, "event": "x", "payload": {}}]},
        )
        assert refused.status_code == 401


# -- presence -----------------------------------------------------------------------------


async def test_presence_two_clients_see_each_other_and_a_leave(supabase_local):
    topic = f"presence-{uuid.uuid4().hex[:8]}"
    key = supabase_local.anon_key

    def config(name: str) -> dict:
        return {
            "config": {
                "broadcast": {"self": False, "ack": False},
                "presence": {"key": name, "enabled": True},
                "private": False,
            }
        }

    async with realtime_client(supabase_local, key) as a, realtime_client(supabase_local, key) as b:
        chan_a, chan_b = a.channel(topic, config("alice")), b.channel(topic, config("bob"))
        syncs_a, leaves_a = Inbox(), Inbox()
        chan_a.on_presence_sync(lambda: syncs_a(dict(chan_a.presence_state())))
        chan_a.on_presence_leave(lambda key, cur, left: leaves_a(key))
        chan_b.on_presence_sync(lambda: None)
        await asyncio.wait_for(chan_a.subscribe(), WAIT)
        await asyncio.wait_for(chan_b.subscribe(), WAIT)
        await chan_a.track({"status": "online"})
        await chan_b.track({"status": "away"})

        state = await syncs_a.get(lambda s: set(s) == {"alice", "bob"})
        assert state["bob"][0]["status"] == "away"
        assert "presence_ref" in state["alice"][0]

        await chan_b.unsubscribe()
        assert (await leaves_a.get()) == "bob"
        await syncs_a.get(lambda s: set(s) == {"alice"})


# -- connection lifecycle -------------------------------------------------------------------


async def test_client_reconnects_after_every_connection_is_closed(supabase_local, seq_block):
    seqs = seq_block(30)
    async with realtime_client(
        supabase_local, supabase_local.service_role_key, initial_backoff=0.2
    ) as client:
        _, changes, system, states = await subscribe_changes(client, event="INSERT")
        await subscribed(system)

        await asyncio.to_thread(supabase_local.close_realtime_connections)
        await states.get(lambda s: s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)
        # The client reconnects and rejoins by itself; rows inserted meanwhile may be lost
        # (Realtime is at-most-once), so keep inserting until one arrives.
        for seq in seqs:
            insert_sql(supabase_local, seq)
            with contextlib.suppress(TimeoutError):
                await changes.get(lambda p: seq_of(p) in seqs, timeout=0.5)
                break
        else:
            pytest.fail("no change arrived after the reconnect")
        assert client.is_connected


async def test_a_forged_access_token_closes_the_channel_with_a_system_error(
    supabase_local,
):
    async with realtime_client(supabase_local, supabase_local.anon_key) as client:
        channel, _, system, states = await subscribe_changes(client)
        await subscribed(system)
        # A token signed with another secret; the client sends it as an access_token event.
        forged = supabase_local.mint("authenticated")[:-4] + "AAAA"
        await client.set_auth(forged)
        await states.get(lambda s: s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)
        await states.get(lambda s: s[0] == RealtimeSubscribeStates.CLOSED)
        assert "invalid access token" in str(
            next(s[1] for s in states.items if s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)
        )
        assert channel.is_closed


async def test_token_expiry_while_joined_closes_the_channel(supabase_local):
    async with realtime_client(supabase_local, supabase_local.anon_key) as client:
        short = supabase_local.mint("authenticated", expires_in=2)
        channel, _, system, states = await subscribe_changes(client, access_token=short)
        await subscribed(system)
        failure = await states.get(lambda s: s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)
        assert "Token has expired" in str(failure[1])
        await states.get(lambda s: s[0] == RealtimeSubscribeStates.CLOSED)
        assert channel.is_closed


async def test_a_bad_apikey_is_refused(supabase_local):
    forged = supabase_local.mint("anon")[:-4] + "AAAA"
    client = AsyncRealtimeClient(
        f"{supabase_local.url}/realtime/v1", forged, auto_reconnect=False, max_retries=1
    )
    with pytest.raises(Exception, match="403"):
        await asyncio.wait_for(client.connect(), WAIT)


async def test_an_expired_access_token_on_join_is_refused(supabase_local):
    expired = supabase_local.mint("authenticated", expires_in=-10)
    async with realtime_client(
        supabase_local, supabase_local.anon_key, auto_reconnect=False
    ) as client:
        _, _, _, states = await subscribe_changes(client, access_token=expired)
        state, error = await states.get()
        assert state == RealtimeSubscribeStates.CHANNEL_ERROR
        assert "expired" in str(error)


async def test_change_capture_survives_its_database_connections_being_killed(
    supabase_local, seq_block
):
    seqs = seq_block(40)
    async with realtime_client(supabase_local, supabase_local.service_role_key) as client:
        _, changes, system, _ = await subscribe_changes(client, event="INSERT")
        await subscribed(system)
        # Kill the server's LISTEN and outbox-reader backends behind its back.
        killed = supabase_local.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND (query ILIKE 'LISTEN%%' OR query ILIKE '%%supabase_local_realtime.outbox%%')"
        )
        assert killed, "no capture connection found to kill"
        for seq in seqs:  # at-most-once: rows committed while nobody listened may be lost
            insert_sql(supabase_local, seq)
            with contextlib.suppress(TimeoutError):
                await changes.get(lambda p: seq_of(p) in seqs, timeout=0.5)
                break
        else:
            pytest.fail("no change arrived after the capture connections were killed")


@pytest.fixture
def owned_table(supabase_local) -> Any:
    """A published table whose SELECT policy reads the subscriber's claims (auth.uid())."""
    name = f"owned_{uuid.uuid4().hex[:8]}"
    for statement in (
        f"CREATE TABLE public.{name} (id bigint PRIMARY KEY, owner uuid NOT NULL, note text)",
        f"ALTER TABLE public.{name} ENABLE ROW LEVEL SECURITY",
        f"GRANT SELECT ON public.{name} TO authenticated",
        f"CREATE POLICY owner_reads ON public.{name} FOR SELECT TO authenticated"
        " USING (owner = auth.uid())",
        f"ALTER PUBLICATION supabase_realtime ADD TABLE public.{name}",
    ):
        supabase_local.sql(statement)
    yield name
    supabase_local.sql(f"ALTER PUBLICATION supabase_realtime DROP TABLE public.{name}")
    supabase_local.sql(f"DROP TABLE public.{name}")


async def test_rls_policies_on_claims_are_checked_per_user(supabase_local, owned_table):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    key = supabase_local.anon_key
    async with realtime_client(supabase_local, key) as a, realtime_client(supabase_local, key) as b:
        # The table was published after startup: joining installs its change capture.
        _, alice_changes, alice_sys, _ = await subscribe_changes(
            a, table=owned_table, access_token=supabase_local.mint("authenticated", sub=alice)
        )
        _, bob_changes, bob_sys, _ = await subscribe_changes(
            b, table=owned_table, access_token=supabase_local.mint("authenticated", sub=bob)
        )
        await subscribed(alice_sys)
        await subscribed(bob_sys)
        # One transaction, two rows: each user must get exactly their own.
        supabase_local.sql(
            f"INSERT INTO public.{owned_table} (id, owner, note)"
            " VALUES (1, %s, 'for alice'), (2, %s, 'for bob')",
            alice,
            bob,
        )
        mine = await alice_changes.get()
        assert mine["data"]["record"] == {"id": 1, "owner": alice, "note": "for alice"}
        theirs = await bob_changes.get()
        assert theirs["data"]["record"]["id"] == 2
        await alice_changes.nothing(lambda p: p["data"]["record"]["id"] == 2)
        await bob_changes.nothing(lambda p: p["data"]["record"]["id"] == 1)


async def test_heartbeats_are_answered(supabase_local):
    from realtime.message import Message

    async with realtime_client(supabase_local, supabase_local.anon_key, hb_interval=1) as client:
        await client.connect()
        replies = Inbox()

        class PhoenixTopic:  # the client routes parsed messages to channels by topic
            def _handle_message(self, message: Any) -> None:
                replies(message)

        client.channels["phoenix"] = PhoenixTopic()  # type: ignore[assignment]
        await client.send(Message(topic="phoenix", event="heartbeat", payload={}, ref="hb-1"))
        reply = await replies.get(lambda m: m.ref == "hb-1")
        assert (reply.event, reply.payload.status) == ("phx_reply", "ok")
        # The client's own heartbeat task (every second here) is answered too.
        await replies.get(lambda m: m.ref != "hb-1")
        assert client.is_connected
        del client.channels["phoenix"]


async def test_changes_arrive_in_commit_order_not_statement_order(supabase_local, seq_block):
    import psycopg

    first, second = seq_block(2)
    row = (
        "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum)"
        " VALUES (%s, 'order', 'tests', 'debug', now(), now(), '{}', %s)"
    )
    async with realtime_client(supabase_local, supabase_local.service_role_key) as client:
        _, changes, system, _ = await subscribe_changes(client, event="INSERT")
        await subscribed(system)
        with (
            psycopg.connect(supabase_local.database_url) as early,
            psycopg.connect(supabase_local.database_url) as late,
        ):
            early.execute(row, (first, f"{first:064x}"))  # inserted first, committed last
            late.execute(row, (second, f"{second:064x}"))
            late.commit()
            early.commit()
        got = await changes.collect(lambda p: seq_of(p) in (first, second), 2)
        assert [seq_of(p) for p in got] == [second, first]


async def test_an_upsert_reports_insert_for_new_rows_and_update_for_existing_ones(
    supabase_local, service_client, seq_block
):
    old, new = seq_block(2)
    insert_sql(supabase_local, old)
    async with realtime_client(supabase_local, supabase_local.service_role_key) as client:
        _, changes, system, _ = await subscribe_changes(client)
        await subscribed(system)
        # What the Supabase sink does: upsert on seq (merge-duplicates) through REST.
        rows = [event_row(old, source="again"), event_row(new)]
        await asyncio.to_thread(
            lambda: service_client.table(TABLE).upsert(rows, on_conflict="seq").execute()
        )
        got = await changes.collect(lambda p: seq_of(p) in (old, new), 2)
        kinds = {seq_of(p): p["data"]["type"] for p in got}
        assert kinds == {old: "UPDATE", new: "INSERT"}
        # ignore-duplicates on an existing row changes nothing, so nothing is sent.
        await asyncio.to_thread(
            lambda: (
                service_client.table(TABLE)
                .upsert([event_row(old)], on_conflict="seq", ignore_duplicates=True)
                .execute()
            )
        )
        await changes.nothing(lambda p: seq_of(p) == old and p not in got)


async def test_a_token_whose_exp_is_a_string_is_refused_and_expiry_keeps_working(supabase_local):
    import time

    malformed = supabase_local.mint("authenticated", exp=str(int(time.time()) + 1))
    async with realtime_client(
        supabase_local, supabase_local.anon_key, auto_reconnect=False
    ) as client:
        _, _, _, states = await subscribe_changes(client, access_token=malformed)
        state, error = await states.get()
        assert state == RealtimeSubscribeStates.CHANNEL_ERROR
        assert "Unknown Error on Channel" in str(error)  # Realtime's generic join reason

    # The server-wide expiry check still runs: a short token still closes its channel.
    await test_token_expiry_while_joined_closes_the_channel(supabase_local)


def _socket_url(server: Any, key: str, vsn: str = "2.0.0") -> str:
    return f"{server.url.replace('http', 'ws', 1)}/realtime/v1/websocket?apikey={key}&vsn={vsn}"


async def _heartbeat_answers(server: Any) -> bool:
    import json

    import websockets

    async with websockets.connect(_socket_url(server, server.anon_key)) as socket:
        await socket.send(json.dumps([None, "1", "phoenix", "heartbeat", {}]))
        reply = json.loads(await asyncio.wait_for(socket.recv(), WAIT))
    return reply[3:] == ["phx_reply", {"status": "ok", "response": {}}]


async def test_a_binary_frame_with_a_non_utf8_topic_closes_that_socket_only(supabase_local):
    import struct

    import websockets

    topic = b"realtime:\xff\xfe"
    frame = struct.pack("7B", 3, 1, 1, len(topic), 4, 0, 1) + b"12" + topic + b"ping{}"
    logged_before = len(supabase_local.log_path.read_bytes())
    async with websockets.connect(_socket_url(supabase_local, supabase_local.anon_key)) as socket:
        await socket.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), WAIT)

    # Realtime's serializer raises on such a frame and its socket process ends (1011).
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert await _heartbeat_answers(supabase_local)
    assert b"Traceback" not in supabase_local.log_path.read_bytes()[logged_before:]


# -- Realtime's limits ------------------------------------------------------------------


async def test_the_101st_channel_on_one_socket_is_refused_as_realtime_refuses_it(
    supabase_local,
):
    async with realtime_client(
        supabase_local, supabase_local.anon_key, auto_reconnect=False
    ) as client:
        prefix = uuid.uuid4().hex[:8]
        for index in range(100):  # Realtime's default max_channels_per_client
            states = Inbox()
            await asyncio.wait_for(client.channel(f"{prefix}-{index}").subscribe(states), WAIT)
            assert (await states.get())[0] == RealtimeSubscribeStates.SUBSCRIBED
        refused = Inbox()
        await asyncio.wait_for(client.channel(f"{prefix}-100").subscribe(refused), WAIT)
        state, error = await refused.get()

    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "ChannelRateLimitReached: Too many channels" in str(error)


async def _presence_channel(client: Any) -> tuple[Any, Inbox]:
    states = Inbox()
    channel = client.channel(
        f"presence-{uuid.uuid4().hex[:8]}", {"config": {"presence": {"key": "me"}}}
    )
    channel.on_presence_sync(lambda: None)
    await asyncio.wait_for(channel.subscribe(states), WAIT)
    assert (await states.get())[0] == RealtimeSubscribeStates.SUBSCRIBED
    return channel, states


async def test_a_presence_payload_over_3000_kb_closes_the_channel(supabase_local):
    async with realtime_client(
        supabase_local, supabase_local.anon_key, auto_reconnect=False
    ) as client:
        channel, states = await _presence_channel(client)
        await channel.track({"blob": "x" * 3_001_000})  # Realtime's 3000 kB (+500 B)
        state, error = await states.get(lambda s: s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)
        await states.get(lambda s: s[0] == RealtimeSubscribeStates.CLOSED)

    assert "Track message size exceeded" in str(error)


async def test_a_sixth_presence_event_within_30_s_closes_the_channel(supabase_local):
    async with realtime_client(
        supabase_local, supabase_local.anon_key, auto_reconnect=False
    ) as client:
        channel, states = await _presence_channel(client)
        for n in range(5):  # Realtime: 5 presence calls per channel per 30 s
            await channel.track({"n": n})
        await states.nothing(lambda s: s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)
        await channel.track({"n": 5})
        state, error = await states.get(lambda s: s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)

    assert "Client presence rate limit exceeded" in str(error)


def test_realtime_limits_are_flags(tmp_path):
    from supabase_local.__main__ import _parse_args

    args = _parse_args(["--database-url", "postgresql://x/y", "--max-channels-per-client", "3",
                        "--max-payload-size-kb", "64", "--client-presence-max-calls", "20",
                        "--client-presence-window-ms", "1000"])  # fmt: skip

    assert (args.max_channels_per_client, args.max_payload_size_kb) == (3, 64)
    assert (args.client_presence_max_calls, args.client_presence_window_ms) == (20, 1000)


async def test_the_access_log_does_not_print_keys_or_tokens(supabase_local):
    import websockets

    token = supabase_local.mint("authenticated")
    logged_before = len(supabase_local.log_path.read_bytes())
    url = _socket_url(supabase_local, supabase_local.anon_key) + f"&access_token={token}"
    async with websockets.connect(url):
        pass
    async with realtime_client(supabase_local, supabase_local.service_role_key) as client:
        await asyncio.wait_for(client.connect(), WAIT)

    logged = supabase_local.log_path.read_bytes()[logged_before:].decode(errors="replace")
    assert "apikey=[redacted]" in logged and "access_token=[redacted]" in logged  # --log-level info
    for secret in (supabase_local.anon_key, supabase_local.service_role_key, token):
        assert secret not in logged
