"""WebSocket load generators for the benches: many minimal clients in worker processes.

A bench describes each subscriber with a :class:`ClientSpec` (URL, extra handshake
headers such as ``Cookie`` and ``Origin``, an optional first text frame such as a
Phoenix ``phx_join``, and the markers that say "subscribed" and "this frame carries a
stamped event"). :class:`Fleet` spreads the clients over worker processes, so that on a
2-core machine the clients' own CPU does not dominate what is measured, waits until
they are subscribed, and at the end collects one record per stamped frame:
``(tag, index, stamp, received)``, where ``stamp`` is the ``"t"`` number in the frame
(the publisher's ``time.time()``), ``index`` its ``"i"`` number (-1 when absent) and
``received`` the ``time.time()`` at which the bytes reached the client. A client whose
frames may hold several events (``many_per_frame``) gives one record per ``{"i", "t"}``
pair in the frame.

The client is :class:`RawClient`: an RFC 6455 handshake and just enough frame parsing
(text frames, ping → pong, close). It is a load generator, not a conformance client:
it reads the stamp with a regular expression instead of decoding the JSON.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

CONNECT_CONCURRENCY = 50
_STAMP = re.compile(rb'"t":\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)')
_INDEX = re.compile(rb'"i":\s*([0-9]+)')
# An event's payload {"i": N, "t": T} as JSON (either key order), for frames that carry
# several events (a Supabase broadcast holds every row one insert statement wrote).
_PAIR = re.compile(
    rb'"i":\s*([0-9]+),\s*"t":\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)'
    rb'|"t":\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?),\s*"i":\s*([0-9]+)'
)

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class ClientSpec:
    """One subscriber. ``tag`` is the bench's own id for it (e.g. its index)."""

    url: str
    tag: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    join: str | None = None  # text frame sent right after the handshake
    ready_marker: bytes | None = None  # a frame holding this means subscribed; None: 101
    event_marker: bytes = b'"t":'  # only frames holding this are searched for a stamp
    many_per_frame: bool = False  # a frame may carry several stamped events: one record each


@dataclass
class _State:
    records: list[tuple[int, int, float, float]] = field(default_factory=list)
    ready: int = 0
    failed: int = 0
    dropped: list[int] = field(default_factory=list)  # tags that lost the connection
    ready_tags: set[int] = field(default_factory=set)
    stopping: bool = False
    expected: int = 0
    failures: list[str] = field(default_factory=list)
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def settle_one(self) -> None:
        if self.ready + self.failed >= self.expected:
            self.settled.set()


def _frame(opcode: int, data: bytes) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(data)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0xFE]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0xFF]) + n.to_bytes(8, "big")
    repeated = mask * (n // 4 + 1)
    key = int.from_bytes(repeated, "big") >> (8 * (len(repeated) - n))
    masked = (int.from_bytes(data, "big") ^ key).to_bytes(n, "big") if n else b""
    return header + mask + masked


class RawClient(asyncio.Protocol):
    """A minimal WebSocket client that records stamped frames into a shared state."""

    def __init__(self, spec: ClientSpec, state: _State) -> None:
        self.spec, self.state = spec, state
        parts = urlsplit(spec.url)
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.host = parts.netloc
        self.buf = bytearray()
        self.handshaken = False
        self.subscribed = False
        self.transport: asyncio.Transport | None = None

    # -- state transitions ---------------------------------------------------------------

    def _mark_ready(self) -> None:
        if not self.subscribed:
            self.subscribed = True
            self.state.ready += 1
            self.state.ready_tags.add(self.spec.tag)
            self.state.settle_one()

    def _fail(self, reason: str) -> None:
        if not self.subscribed:
            self.subscribed = True  # settled, one way or the other
            self.state.failed += 1
            if len(self.state.failures) < 5:
                self.state.failures.append(reason)
            self.state.settle_one()
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport) -> None:  # noqa: ANN001
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in self.spec.headers),
        ]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.subscribed and not self.state.stopping:
            self.state.dropped.append(self.spec.tag)
        self._fail(f"connection closed before subscribing: {exc or 'by the server'}")

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(_frame(OP_TEXT, text.encode()))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        if not self.handshaken:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[: self.buf.find(b"\r\n")])
            if not status.startswith(b"HTTP/1.1 101"):
                self._fail(f"handshake refused: {status.decode(errors='replace')}")
                return
            del self.buf[: end + 4]
            self.handshaken = True
            if self.spec.join is not None:
                self.send_text(self.spec.join)
            if self.spec.ready_marker is None:
                self._mark_ready()
        self._frames(now)

    def _frames(self, now: float) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            n, offset = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, offset = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, offset = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < offset + n:
                return
            payload = bytes(buf[offset : offset + n])
            del buf[: offset + n]
            if opcode == OP_PING:
                assert self.transport is not None
                self.transport.write(_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._fail("closed by the server before subscribing")
                assert self.transport is not None
                self.transport.close()
                return
            elif opcode != OP_PONG:
                self._payload(payload, now)

    def _payload(self, payload: bytes, now: float) -> None:
        spec = self.spec
        if spec.event_marker in payload and spec.many_per_frame:
            pairs = _PAIR.findall(payload)
            for index, stamp, stamp_first, index_second in pairs:
                self.state.records.append(
                    (spec.tag, int(index or index_second), float(stamp or stamp_first), now)
                )
            if pairs:
                return
        elif spec.event_marker in payload:
            stamp = _STAMP.search(payload)
            if stamp is not None:
                index = _INDEX.search(payload)
                self.state.records.append(
                    (spec.tag, int(index.group(1)) if index else -1, float(stamp.group(1)), now)
                )
                return
        if not self.subscribed and spec.ready_marker is not None and spec.ready_marker in payload:
            self._mark_ready()


# -- worker processes ---------------------------------------------------------------------


async def _worker_main(specs: list[ClientSpec], conn, ready_timeout: float) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    state = _State(expected=len(specs))
    if not specs:
        state.settled.set()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    transports: list[asyncio.BaseTransport] = []

    async def open_one(spec: ClientSpec) -> None:
        parts = urlsplit(spec.url)
        async with gate:
            try:
                transport, protocol = await loop.create_connection(
                    lambda: RawClient(spec, state), parts.hostname, parts.port
                )
            except OSError as exc:
                state.failed += 1
                if len(state.failures) < 5:
                    state.failures.append(f"connect: {exc}")
                state.settle_one()
                return
            transports.append(transport)
            # Hold the slot until this client is subscribed, so handshakes trickle in.
            deadline = loop.time() + ready_timeout
            while not protocol.subscribed and loop.time() < deadline:
                await asyncio.sleep(0.01)

    opening = asyncio.gather(*(open_one(spec) for spec in specs))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.settled.wait(), ready_timeout)
    # Not subscribed by now (refused, closed, or still waiting at the timeout): failed.
    failed_tags = [spec.tag for spec in specs if spec.tag not in state.ready_tags]
    ready = state.ready
    conn.send(("ready", ready, len(specs) - ready, failed_tags, state.failures))
    while True:
        try:
            command = await loop.run_in_executor(None, conn.recv)
        except (EOFError, OSError):
            command = None  # the parent is gone or has given up: stop
        if command is None:
            break
        if command == "count":
            conn.send(("count", len(state.records)))
        elif command == "reset":
            state.records.clear()
            conn.send(("reset", 0))
        else:
            break
    state.stopping = True
    with contextlib.suppress(OSError):
        conn.send(("records", (state.records, state.dropped)))
    opening.cancel()
    for transport in transports:
        transport.close()
    await asyncio.sleep(0.1)


def _worker(specs: list[ClientSpec], conn, ready_timeout: float) -> None:  # noqa: ANN001
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_worker_main(specs, conn, ready_timeout))


@dataclass
class FleetReady:
    subscribed: int
    failed: int
    failed_tags: list[int]  # meaningful when every client has its own tag
    failures: list[str]  # a few sample reasons


class Fleet:
    """Clients spread over ``workers`` processes; use as a context manager.

    ``start()`` blocks until every client is subscribed or has failed (or the timeout),
    ``count()`` is the number of stamped frames received so far, ``collect()`` stops the
    workers and returns every record.
    """

    def __init__(self, specs: list[ClientSpec], *, workers: int = 2, ready_timeout: float = 90):
        self.shares = [specs[i::workers] for i in range(workers)]
        self.ready_timeout = ready_timeout
        self.pipes: list = []
        self.processes: list = []
        self.dropped: list[int] = []  # tags of clients that lost their connection

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> FleetReady:
        ctx = mp.get_context("spawn")
        for share in self.shares:
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=_worker, args=(share, child, self.ready_timeout), daemon=True
            )
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        ready = FleetReady(0, 0, [], [])
        for pipe in self.pipes:
            _, ok, bad, tags, reasons = pipe.recv()
            ready.subscribed += ok
            ready.failed += bad
            ready.failed_tags.extend(tags)
            ready.failures.extend(reasons)
        return ready

    def _ask(self, command: str) -> list:
        for pipe in self.pipes:
            pipe.send(command)
        return [pipe.recv()[1] for pipe in self.pipes]

    def count(self) -> int:
        return sum(self._ask("count"))

    def reset(self) -> None:
        """Forget what was received so far (e.g. warm-up events)."""
        self._ask("reset")

    def collect(self) -> list[tuple[int, int, float, float]]:
        records: list[tuple[int, int, float, float]] = []
        for share, dropped in self._ask("stop"):
            records.extend(share)
            self.dropped.extend(dropped)
        self.close()
        return records

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.close()  # a worker still waiting for a command sees EOF and stops
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        self.pipes, self.processes = [], []

    def wait_for(self, expected: int, *, quiet_seconds: float = 3, limit: float = 60) -> int:
        """Poll until ``expected`` records are in, or none came for ``quiet_seconds``."""
        last, last_change = -1, time.monotonic()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            received = self.count()
            if received >= expected:
                return received
            if received != last:
                last, last_change = received, time.monotonic()
            elif time.monotonic() - last_change > quiet_seconds:
                return received
            time.sleep(0.1)
        return self.count()
