"""supabase_local driven by the official JavaScript client, ``@supabase/supabase-js``.

Node scripts under ``js/`` print JSON lines; these tests start them, feed them commands,
and assert on what the client surfaced. Node 20 has no native WebSocket, so the scripts
pass the ``ws`` package as the realtime transport, as supabase-js documents. The
packages come from ``package.json`` (``npm ci``, run by ``make``); without
``node_modules`` the tests fail and say so.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).resolve().parent / "js"
WAIT = 15.0


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed; supabase-js conformance needs Node 20+")
    if not (REPO_ROOT / "node_modules" / "@supabase" / "supabase-js").is_dir():
        pytest.fail("node_modules is missing: run `npm ci` in the repository root first")
    return path


@pytest.fixture
def js_seqs(supabase_local: Any) -> Iterator[Callable[[int], list[int]]]:
    """Like ``seq_block``, but below 2**53: JavaScript numbers hold int8 exactly only there
    (supabase-js turns int8 columns into numbers, as it does against real Supabase)."""
    taken: list[tuple[int, int]] = []

    def allocate(count: int) -> list[int]:
        start = secrets.randbelow(2**52) + 2**50
        taken.append((start, start + count))
        return list(range(start, start + count))

    yield allocate
    for start, end in taken:
        supabase_local.sql(
            "DELETE FROM public.monitoring_events WHERE seq >= %s AND seq < %s", start, end
        )


def insert_row(server: Any, seq: int) -> None:
    server.sql(
        "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum)"
        " VALUES (%s, 'js.realtime', 'tests', 'system', now(), now(), %s::jsonb, %s)",
        seq,
        json.dumps({"n": seq}),
        f"{seq:064x}",
    )


# -- REST ---------------------------------------------------------------------------------


def _keys(server: Any, kind: str) -> tuple[str, str, str, str]:
    """(browser key, server key, a user's token, a forged server key) of one generation."""
    sub = str(uuid.uuid4())
    if kind == "legacy JWT keys, HS256 user token":
        forged = server.mint("service_role")[:-4] + "AAAA"
        return server.anon_key, server.service_role_key, server.mint("authenticated", sub), forged
    forged = "sb_secret_" + secrets.token_urlsafe(24).replace("-", "x")
    user = server.mint_signed("authenticated", sub, alg="ES256")
    return server.publishable_key, server.secret_key, user, forged


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["legacy JWT keys, HS256 user token", "publishable/secret keys, ES256 user token"]
)
def test_rest_through_supabase_js(node, supabase_local, js_seqs, kind):
    seq = js_seqs(4)[0]
    browser_key, server_key, user, forged = _keys(supabase_local, kind)
    result = subprocess.run(
        [node, str(JS_DIR / "rest.mjs"), supabase_local.url, browser_key, server_key, user,
         forged, str(seq)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    steps = {s["step"]: s for s in map(json.loads, result.stdout.splitlines())}

    insert = steps["service insert"]
    assert (insert["status"], insert["error"]) == (201, None)
    assert sorted(r["seq"] for r in insert["data"]) == [seq, seq + 1]

    select = steps["service select"]
    assert select["status"] == 200 and select["count"] == 2
    assert [r["seq"] for r in select["data"]] == [seq + 1, seq]
    assert select["data"][1]["payload"] == {"from": "supabase-js", "n": seq}

    duplicate = steps["duplicate insert"]
    assert duplicate["status"] == 409 and duplicate["error"]["code"] == "23505"

    # anon holds no grant on the table: PostgREST answers 401 with 42501 for anon.
    anon_select = steps["anon select"]
    assert (anon_select["status"], anon_select["error"]["code"]) == (401, "42501")
    assert steps["anon insert"]["error"]["code"] == "42501"
    assert steps["user select"]["data"] == {"seq": seq}  # .single() -> one object
    assert steps["user insert"]["error"]["code"] == "42501"  # authenticated cannot write

    unknown_table = steps["unknown table"]
    assert unknown_table["status"] == 404 and unknown_table["error"]["code"] == "PGRST205"
    unknown_column = steps["unknown column"]
    assert unknown_column["status"] == 400 and unknown_column["error"]["code"] == "42703"

    forged_step = steps["forged key"]
    assert forged_step["status"] == 401 and forged_step["data"] is None
    assert steps["service delete"]["status"] == 204


# -- Realtime -----------------------------------------------------------------------------


class NodeScript:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    async def expect(self, **fields: Any) -> dict[str, Any]:
        """The next line (already read or coming) whose fields include ``fields``."""

        def matches(line: dict[str, Any]) -> bool:
            return all(line.get(k) == v for k, v in fields.items())

        for line in self.lines:
            if matches(line):
                self.lines.remove(line)
                return line
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
            if not raw:
                err = (await self.proc.stderr.read()).decode()
                pytest.fail(f"node exited before {fields}: {self.lines}\n{err}")
            line = json.loads(raw)
            if matches(line):
                return line
            self.lines.append(line)

    async def send(self, command: str) -> None:
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()


@pytest.mark.slow
@pytest.mark.parametrize("vsn", ["1.0.0", "default"])
async def test_realtime_through_supabase_js(node, supabase_local, js_seqs, vsn):
    seq = js_seqs(20)[0]
    topic = f"js-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "realtime.mjs"), supabase_local.url,
        supabase_local.service_role_key, vsn, topic,
        cwd=REPO_ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    script = NodeScript(proc)
    try:
        chosen = await script.expect(type="vsn")
        assert chosen["vsn"] == ("2.0.0" if vsn == "default" else vsn)
        await script.expect(type="status", status="SUBSCRIBED")
        await script.expect(type="system", status="ok", message="Subscribed to PostgreSQL")

        insert_row(supabase_local, seq)
        change = await script.expect(type="change")
        assert change["eventType"] == "INSERT" and change["table"] == "monitoring_events"
        assert change["new"]["seq"] == seq and change["new"]["payload"] == {"n": seq}
        assert change["errors"] is None and change["old"] == {}

        # A WebSocket broadcast: with vsn 2.0.0 supabase-js pushes a binary frame and the
        # server answers with one; self: true echoes it, ack: true confirms it.
        await script.send('broadcast ping {"hello": "ws"}')
        assert (await script.expect(type="broadcast", event="ping"))["payload"] == {"hello": "ws"}
        assert (await script.expect(type="ack"))["result"] == "ok"

        await script.send('http pong {"hello": "rest"}')
        assert (await script.expect(type="broadcast", event="pong"))["payload"] == {"hello": "rest"}
        assert (await script.expect(type="ack"))["result"] == {"success": True}

        await script.send('track {"status": "online"}')
        assert (await script.expect(type="ack"))["result"] == "ok"
        presence = await script.expect(type="presence")
        while "js" not in presence["state"]:
            presence = await script.expect(type="presence")
        [meta] = presence["state"]["js"]
        assert meta["status"] == "online" and meta["presence_ref"]

        await script.expect(type="heartbeat", status="ok")

        # Every socket closed by the server: supabase-js reconnects and rejoins by itself.
        await asyncio.to_thread(supabase_local.close_realtime_connections)
        await script.expect(type="status", status="SUBSCRIBED")
        for later in range(seq + 1, seq + 20):  # at-most-once: keep writing until one arrives
            insert_row(supabase_local, later)
            try:
                change = await asyncio.wait_for(script.expect(type="change"), 1.0)
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("no change after the reconnect")
        assert change["new"]["seq"] > seq

        await script.send("quit")
        await script.expect(type="status", status="CLOSED")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("vsn", ["1.0.0", "default"])
async def test_a_private_channel_with_replay_through_supabase_js(node, supabase_local, vsn):
    """Per-user topics, as docs/supabase.md sets them up: the user's own topic is joined
    with the messages missed since a time replayed first, another user's is refused."""
    sub = str(uuid.uuid4())
    own, other = f"user:{sub}", f"user:{uuid.uuid4()}"
    policy = f"js_own_topic_{uuid.uuid4().hex[:6]}"
    supabase_local.sql(
        f'CREATE POLICY "{policy}" ON realtime.messages FOR SELECT TO authenticated'
        " USING (realtime.topic() = 'user:' || (auth.jwt() ->> 'sub'))"
    )
    since = int(time.time() * 1000) - 1000
    for n in range(2):
        send_broadcast_sql(supabase_local, own, "missed", {"n": n})
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "private.mjs"), supabase_local.url, supabase_local.publishable_key,
        supabase_local.mint_signed("authenticated", sub), vsn, own, other, str(since),
        cwd=REPO_ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    script = NodeScript(proc)
    try:
        await script.expect(type="status", topic=own, status="SUBSCRIBED")
        refused = await script.expect(type="status", topic=other, status="CHANNEL_ERROR")
        assert "You do not have permissions to read from this Channel topic" in refused["error"]
        replayed = [await script.expect(type="broadcast", event="missed") for _ in range(2)]
        assert [m["payload"]["n"] for m in replayed] == [0, 1]
        assert all(m["meta"]["replayed"] is True for m in replayed)

        send_broadcast_sql(supabase_local, own, "live", {"n": 2})
        live = await script.expect(type="broadcast", event="live")
        assert live["payload"]["n"] == 2 and not live["meta"].get("replayed")
        await script.send("quit")
    finally:
        supabase_local.sql(f'DROP POLICY "{policy}" ON realtime.messages')
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def send_broadcast_sql(server: Any, topic: str, event: str, payload: dict) -> None:
    server.sql("SELECT realtime.send(%s::jsonb, %s, %s, true)", json.dumps(payload), event, topic)


@pytest.mark.slow
@pytest.mark.parametrize("vsn", ["1.0.0", "default"])
async def test_a_quota_refusal_as_supabase_js_surfaces_it(node, vsn):
    """Over the plan's concurrent connections, supabase-js reports CHANNEL_ERROR with
    Realtime's reason."""
    from realtime import AsyncRealtimeClient

    from tests.fixtures.supabase_local import running_supabase_local

    with running_supabase_local(faults=False, extra_args=("--max-concurrent-users", "1")) as server:
        holder = AsyncRealtimeClient(f"{server.url}/realtime/v1", server.secret_key)
        await asyncio.wait_for(holder.channel("taken").subscribe(), WAIT)
        proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "realtime.mjs"), server.url, server.secret_key, vsn,
            "refused-room", cwd=REPO_ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        script = NodeScript(proc)
        try:
            refused = await script.expect(type="status", status="CHANNEL_ERROR")
            assert "ConnectionRateLimitReached: Too many connected users" in refused["error"]
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            await holder.close()
