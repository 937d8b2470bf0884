"""Realtime under injected faults (``POST /__faults``), seen through the official client.

Drop rate applies to data messages (``postgres_changes``, ``broadcast``), never to join
replies or system messages; latency delays every outgoing frame.
"""

from __future__ import annotations

import asyncio
import time

from realtime import RealtimeSubscribeStates

from tests.supabase_local.test_realtime import (
    Inbox,
    insert_sql,
    realtime_client,
    seq_of,
    subscribe_changes,
    subscribed,
)


async def test_drop_rate_one_loses_changes_but_not_joins(supabase_faults_cleared, seq_block):
    server = supabase_faults_cleared
    dropped, kept = seq_block(2)
    async with realtime_client(server, server.service_role_key) as client:
        await asyncio.to_thread(server.set_faults, realtime_drop_rate=1.0)
        # Joining still works: replies and system messages are never dropped.
        _, changes, system, states = await subscribe_changes(client, event="INSERT")
        assert states.items[0][0] == RealtimeSubscribeStates.SUBSCRIBED
        await subscribed(system)
        insert_sql(server, dropped)
        await changes.nothing()

        await asyncio.to_thread(server.clear_faults)
        insert_sql(server, kept)
        await changes.get(lambda p: seq_of(p) == kept)
        assert all(seq_of(p) != dropped for p in changes.items)


async def test_latency_delays_delivery(supabase_faults_cleared, seq_block):
    server = supabase_faults_cleared
    [seq] = seq_block(1)
    async with realtime_client(server, server.service_role_key) as client:
        _, changes, system, _ = await subscribe_changes(client, event="INSERT")
        await subscribed(system)
        await asyncio.to_thread(server.set_faults, realtime_latency_ms=400)
        started = time.monotonic()
        insert_sql(server, seq)
        await changes.get(lambda p: seq_of(p) == seq)
        assert time.monotonic() - started >= 0.4


async def test_broadcasts_are_dropped_too(supabase_faults_cleared):
    server = supabase_faults_cleared
    async with realtime_client(server, server.anon_key) as client:
        channel = client.channel(
            "faults-broadcast",
            {
                "config": {
                    "broadcast": {"self": True, "ack": False},
                    "presence": {"key": "", "enabled": False},
                    "private": False,
                }
            },
        )
        got = Inbox()
        channel.on_broadcast("*", got)
        await asyncio.wait_for(channel.subscribe(), 10)
        await asyncio.to_thread(server.set_faults, realtime_drop_rate=1.0)
        await channel.send_broadcast("lost", {"n": 1})
        await got.nothing()
        await asyncio.to_thread(server.clear_faults)
        await channel.send_broadcast("kept", {"n": 2})
        assert (await got.get())["event"] == "kept"
