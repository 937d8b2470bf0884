"""The prober's Supabase loop against a real supabase_local: it joins the private topic
``monitor:events`` with a user token and takes its probes from broadcast messages, and a
quota refusal of Realtime is a ``connect_failure`` whenever it comes (at the join, or when
the project's messages per second shut its channel down), so the rollback rules count it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest
from realtime import AsyncRealtimeClient

from rollout.prober import Probe, Prober
from tests.fixtures.supabase_local import SupabaseLocal, running_supabase_local
from tests.fixtures.supabase_settings import supabase_product_settings, supabase_settings_apply
from tests.supabase_local.test_realtime_authorization import join, private

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CHECKSUM = "cd" * 32


def counts(prober: Prober) -> dict[str, int]:
    return {key: n for key, n in prober.counts.items() if key.startswith("supabase.")}


async def until(predicate, timeout: float = 20.0) -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.1)

    await asyncio.wait_for(wait(), timeout)


@contextlib.asynccontextmanager
async def supabase_loop(prober: Prober):
    task = asyncio.create_task(prober._supabase_loop())
    try:
        yield
    finally:
        prober.stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def insert_probe_row(server: SupabaseLocal, seq: int, probe_id: str) -> None:
    server.sql(
        "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum)"
        " VALUES (%s, 'monitor.probe', 'prober', 'system', now(), now(), %s::jsonb, %s)",
        seq,
        json.dumps({"probe_id": probe_id}),
        CHECKSUM,
    )


@pytest.fixture
def product_on(settings):
    def apply(server: SupabaseLocal) -> SupabaseLocal:
        supabase_settings_apply(settings, supabase_product_settings(server))
        return server

    return apply


async def test_the_prober_takes_its_probes_from_the_private_broadcast(supabase_local, product_on):
    server = product_on(supabase_local)
    await asyncio.to_thread(server.truncate)
    prober = Prober(base_url="http://127.0.0.1:9", user_id=41)
    async with supabase_loop(prober):
        await until(lambda: prober.connected["supabase"])
        prober.pending["p1"] = Probe("p1", sent_at=0.0, expected={"supabase"})
        await asyncio.to_thread(insert_probe_row, server, 1, "p1")
        await until(lambda: "supabase.delivery" in prober.counts)

    assert counts(prober) == {"supabase.connect": 1, "supabase.delivery": 1, "supabase.latency": 1}
    await asyncio.to_thread(server.truncate)


@pytest.fixture
def one_connection() -> Iterator[SupabaseLocal]:
    with running_supabase_local(extra_args=("--max-concurrent-users", "1")) as server:
        yield server


async def test_a_join_refused_for_the_connections_quota_is_a_connect_failure(
    one_connection, product_on
):
    server = product_on(one_connection)
    # Another dashboard holds the project's only connection.
    other = AsyncRealtimeClient(
        f"{server.url}/realtime/v1", server.publishable_key, auto_reconnect=False
    )
    await other.set_auth(server.mint_signed("authenticated", str(uuid.uuid4())))
    try:
        await join(other, "monitor:events", private())
        prober = Prober(base_url="http://127.0.0.1:9", user_id=42)
        async with supabase_loop(prober):
            await until(lambda: prober.counts.get("supabase.connect_failure", 0) >= 1)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(other.close(), 5)

    assert "supabase.connect" not in prober.counts
    refused = 'supabase_local_realtime_refusals_total{reason="concurrent_users"}'
    assert server.metrics()[refused] >= 1


@pytest.fixture
def few_messages() -> Iterator[SupabaseLocal]:
    args = ("--max-events-per-second", "5", "--rate-tick-ms", "100")
    with running_supabase_local(extra_args=args) as server:
        yield server


async def test_a_channel_shut_down_for_the_messages_quota_is_a_connect_failure(
    few_messages, product_on
):
    server = product_on(few_messages)
    prober = Prober(base_url="http://127.0.0.1:9", user_id=43)
    # The server's own client on the topic (the secret key: service_role may send there).
    server_side = AsyncRealtimeClient(
        f"{server.url}/realtime/v1", server.secret_key, auto_reconnect=False
    )
    try:
        _, _, channel = await join(server_side, "monitor:events", private())
        async with supabase_loop(prober):
            await until(lambda: prober.connected["supabase"])
            # Well over 5 messages a second on the topic: the quota triggers (database
            # broadcasts are then dropped) and the next message a channel receives shuts
            # that channel down.
            for seq in range(1, 41):
                await asyncio.to_thread(insert_probe_row, server, seq, f"p{seq}")
            for _ in range(100):
                if prober.counts.get("supabase.connect_failure"):
                    break
                await channel.send_broadcast("events", {"events": [], "announced": []})
                await asyncio.sleep(0.1)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server_side.close(), 5)

    # Connected once, then refused: a connection failure, not an ordinary drop.
    assert prober.counts["supabase.connect"] >= 1
    assert prober.counts.get("supabase.connect_failure", 0) >= 1
    assert "supabase.error" not in prober.counts
