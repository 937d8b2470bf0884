"""A project's Realtime quotas, refused the way real Realtime refuses them, as the official
client surfaces it; and ``GET /metrics``, which counts messages as the quota does.

Each test starts a server of its own with small limits (and a short averaging tick, so
that a per-second rate is judged within a second rather than Realtime's five)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from tests.fixtures.supabase_local import SupabaseLocal, running_supabase_local
from tests.supabase_local.test_realtime import WAIT, Inbox

TICK_MS = "200"


@contextlib.contextmanager
def server(*flags: str):
    with running_supabase_local(faults=False, extra_args=flags) as started:
        yield started


@contextlib.asynccontextmanager
async def client(server: SupabaseLocal) -> AsyncIterator[Any]:
    realtime = AsyncRealtimeClient(
        f"{server.url}/realtime/v1", server.secret_key, auto_reconnect=False
    )
    try:
        yield realtime
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(realtime.close(), 5)


async def join(realtime: Any, topic: str, *, states: Inbox | None = None,
               broadcasts: Inbox | None = None) -> tuple[Any, Any]:  # fmt: skip
    """Join; (first state, its error). ``states`` keeps collecting the channel's states:
    the Python client turns a system error into CHANNEL_ERROR carrying its payload."""
    states = states if states is not None else Inbox()
    channel = realtime.channel(topic, {"config": {"broadcast": {"self": False}}})
    if broadcasts is not None:
        channel.on_broadcast("*", broadcasts)
    await asyncio.wait_for(channel.subscribe(states), WAIT)
    state, *rest = await states.get()
    return state, (rest[0] if rest else None)


def send(server: SupabaseLocal, topic: str, count: int, *, size: int = 0) -> None:
    server.sql(
        "SELECT realtime.send(jsonb_build_object('n', n, 'pad', repeat('x', %s)), 'tick', %s,"
        " false) FROM generate_series(1, %s) n",
        size,
        topic,
        count,
    )


async def test_concurrent_connections_over_the_quota_are_refused_at_join():
    with server("--max-concurrent-users", "2") as tight:
        async with client(tight) as a, client(tight) as b, client(tight) as c:
            assert (await join(a, "room"))[0] == RealtimeSubscribeStates.SUBSCRIBED
            assert (await join(b, "room"))[0] == RealtimeSubscribeStates.SUBSCRIBED
            # A second channel on a counted socket is not another connection.
            assert (await join(a, "other"))[0] == RealtimeSubscribeStates.SUBSCRIBED

            state, error = await join(c, "room")

            assert state == RealtimeSubscribeStates.CHANNEL_ERROR
            assert "ConnectionRateLimitReached: Too many connected users" in str(error)
            assert (
                tight.metrics()['supabase_local_realtime_refusals_total{reason="concurrent_users"}']
                == 1
            )


async def test_joins_over_the_rate_are_refused_and_the_socket_disconnected():
    with server("--max-joins-per-second", "2", "--rate-tick-ms", TICK_MS) as tight:
        async with client(tight) as busy:
            for n in range(4):  # 4 joins in one 0.2 s tick: 20 joins/s on average
                assert (await join(busy, f"room-{n}"))[0] == RealtimeSubscribeStates.SUBSCRIBED
            await asyncio.sleep(0.5)

            state, error = await join(busy, "one-too-many")

            assert state == RealtimeSubscribeStates.CHANNEL_ERROR
            assert "ClientJoinRateLimitReached: Too many joins per second" in str(error)
            for _ in range(50):
                if not busy.is_connected:
                    break
                await asyncio.sleep(0.05)
            assert not busy.is_connected


async def test_messages_over_the_rate_shut_channels_down_and_stop_database_broadcasts():
    with server("--max-events-per-second", "20", "--rate-tick-ms", TICK_MS) as tight:
        async with client(tight) as listener:
            heard = Inbox()
            await join(listener, "feed", broadcasts=heard)
            # 10 broadcasts heard by one channel: 20 messages in 0.2 s, 100 per second.
            await asyncio.to_thread(send, tight, "feed", 10)
            await heard.collect(lambda m: m["event"] == "tick", 10)
            await asyncio.sleep(0.5)
            rate = tight.metrics()["supabase_local_realtime_messages_per_second"]

            await asyncio.to_thread(send, tight, "feed", 1)  # dropped: the quota is exceeded
            answer = await asyncio.to_thread(
                httpx.post,
                f"{tight.url}/realtime/v1/api/broadcast",
                headers={"apikey": tight.secret_key},
                json={"messages": [{"topic": "feed", "event": "rest", "payload": {}}]},
            )
            await asyncio.sleep(0.7)  # room for what must not come
            heard_in_all = len(heard.items)

        assert rate >= 20
        assert heard_in_all == 10  # neither the database broadcast nor the REST one
        assert (
            answer.status_code == 429 and answer.json()["message"] == "Too many messages per second"
        )
        counted = tight.metrics()
        assert counted["supabase_local_realtime_messages_total"] == 20
        assert counted['supabase_local_realtime_refusals_total{reason="events_per_second"}'] >= 2


async def test_a_channel_hearing_a_message_over_the_rate_is_shut_down():
    with server("--max-events-per-second", "20", "--rate-tick-ms", TICK_MS) as tight:
        async with client(tight) as listener, client(tight) as talker:
            states, heard = Inbox(), Inbox()
            await join(listener, "chat", states=states, broadcasts=heard)
            talking_state, _ = await join(talker, "chat")
            channel = talker.get_channels()[0]
            for n in range(10):
                await channel.send_broadcast("hello", {"n": n})
            await heard.collect(lambda m: m["event"] == "hello", 10)
            await asyncio.sleep(0.5)

            await channel.send_broadcast("hello", {"n": 10})

            _, shutdown = await states.get(lambda s: s[0] == RealtimeSubscribeStates.CHANNEL_ERROR)
        assert talking_state == RealtimeSubscribeStates.SUBSCRIBED
        assert "Too many messages per second" in str(shutdown)


async def test_a_payload_over_the_plans_limit_is_not_broadcast():
    with server("--plan", "free") as free:  # 256 kB
        big = {"pad": "x" * 300_000}
        async with client(free) as listener:
            heard = Inbox()
            await join(listener, "feed", broadcasts=heard)
            await asyncio.to_thread(send, free, "feed", 1, size=300_000)
            rest = await asyncio.to_thread(
                httpx.post,
                f"{free.url}/realtime/v1/api/broadcast/feed/events/big",
                headers={"apikey": free.secret_key, "Content-Type": "application/json"},
                content=json.dumps(big),
            )
            await asyncio.to_thread(send, free, "feed", 1, size=10)
            small = await heard.get()

        assert rest.status_code == 413
        assert len(small["payload"]["pad"]) == 10  # the large one never came
        assert free.metrics()['supabase_local_realtime_refusals_total{reason="payload_size"}'] == 2


def test_metrics_need_the_service_role_and_name_the_plan():
    with server("--plan", "team") as team:
        refused = httpx.get(f"{team.url}/metrics", headers={"apikey": team.publishable_key})
        figures = team.metrics()
        started = team.log_tail(50)

    assert refused.status_code == 401
    assert figures['supabase_local_realtime_limit{name="max_concurrent_users"}'] == 10_000
    assert figures['supabase_local_realtime_limit{name="max_events_per_second"}'] == 2500
    assert "realtime plan: team (connections 10000, messages/s 2500, joins/s 2500" in started


def test_an_explicit_limit_overrides_the_plan():
    with server("--plan", "pro", "--max-events-per-second", "50") as pro:
        figures = pro.metrics()

    assert figures['supabase_local_realtime_limit{name="max_events_per_second"}'] == 50
    assert figures['supabase_local_realtime_limit{name="max_concurrent_users"}'] == 500


async def test_the_unlimited_default_counts_but_refuses_nothing(supabase_local):
    async with client(supabase_local) as listener:
        heard = Inbox()
        topic = f"count-{uuid.uuid4().hex[:6]}"
        before = supabase_local.metrics()["supabase_local_realtime_messages_total"]
        await join(listener, topic, broadcasts=heard)
        await asyncio.to_thread(send, supabase_local, topic, 3)
        await heard.collect(lambda m: m["event"] == "tick", 3)

    after = supabase_local.metrics()
    assert after["supabase_local_realtime_messages_total"] - before >= 6  # 3 sent, 3 heard
    assert 'supabase_local_realtime_limit{name="max_events_per_second"}' not in after
