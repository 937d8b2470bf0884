"""Fast path for fan-out: write pre-framed WebSocket frames straight to the socket.

Why: sending one message to 1,000 sockets through ASGI costs, per socket, the ASGI
wrappers, a fresh WebSocket frame and a task switch; on this 2-core machine that alone
used most of the 50 ms budget. A server-to-client frame is unmasked, so its bytes are
the same for every socket: we frame each message once (:func:`frame`) and hand the
bytes to each socket's transport.

This reaches into uvicorn's ``websockets-sansio`` protocol object (found by following
the ASGI ``send`` callable through Starlette's wrappers). If anything is not as
expected (another server or protocol implementation), :func:`find_direct` returns
``None`` and the caller keeps using plain ASGI sends. Invariants kept:

* Frames are only written while the protocol is open and has not sent a close.
* Frames are sent uncompressed (RSV1 clear), which RFC 7692 allows even when
  permessage-deflate was negotiated; the client's inflater state is untouched.
* Only whole frames are written, so they never interleave with the protocol's own
  control frames (pong, close) mid-frame.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Beyond this much unsent data the client is not reading; the caller closes it.
MAX_BUFFERED_BYTES = 8 * 1024 * 1024


def frame(data: str | bytes) -> bytes:
    """One unmasked, unfragmented, uncompressed text (str) or binary (bytes) frame."""
    if isinstance(data, str):
        payload, first = data.encode("utf-8"), 0x81
    else:
        payload, first = data, 0x82
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


class DirectSocket:
    def __init__(self, protocol: Any) -> None:
        self.owner: Any = None  # the caller's connection object, for error reporting
        self._protocol = protocol
        self._transport = protocol.transport
        sock = self._transport.get_extra_info("socket")
        self._fd: int | None = sock.fileno() if sock is not None else None

    def writable(self) -> bool:
        protocol, transport = self._protocol, self._transport
        if protocol.close_sent or protocol.disconnected or transport.is_closing():
            return False
        return transport.get_write_buffer_size() <= MAX_BUFFERED_BYTES

    def write(self, data: bytes) -> bool:
        """Write one framed message; False if the socket is closing or stopped reading."""
        if not self.writable():
            return False
        self._transport.write(data)
        return True


# Fan-out to many sockets is bound by the kernel's cost per send() on loopback TCP
# (which includes waking the receiver); on a 2-vCPU VM two threads sending at once
# roughly halve the wall time. Threads write raw bytes to the socket fds only while
# the event loop thread waits for them (so no other writer can interleave), and only to
# sockets whose transport has nothing buffered (so byte order is kept); a partial write
# hands its remainder back to the transport.
PARALLEL_MIN = 128
CHUNK = 32
FANOUT_HELPERS = 1  # measured: a second helper made 1,000-socket fan-out slower here
_pool: ThreadPoolExecutor | None = None


def _send_raw(
    items: list[tuple[DirectSocket, bytes]],
    rest: list[tuple[DirectSocket, bytes]],
    failed: list[DirectSocket],
) -> None:
    """Write frames straight to the fds; what cannot go that way lands in ``rest``.

    Runs in the loop thread or a helper while the loop thread waits, so reading the
    protocol's and transport's state here races with nothing.
    """
    for sock, data in items:
        protocol, transport = sock._protocol, sock._transport
        if protocol.close_sent or protocol.disconnected or transport.is_closing():
            failed.append(sock)
            continue
        buffered = transport.get_write_buffer_size()
        if buffered or sock._fd is None:
            if buffered > MAX_BUFFERED_BYTES:
                failed.append(sock)
            else:
                rest.append((sock, data))  # behind buffered bytes: the transport queues it
            continue
        try:
            sent = os.write(sock._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            continue  # the connection is gone; the protocol will notice and clean up
        if sent < len(data):
            rest.append((sock, data[sent:]))


def _drain(
    chunks: Iterator[list[tuple[DirectSocket, bytes]]],
    rest: list[tuple[DirectSocket, bytes]],
    failed: list[DirectSocket],
) -> None:
    for chunk in chunks:
        # Appends to the shared lists are atomic under the GIL.
        _send_raw(chunk, rest, failed)


def write_many(items: list[tuple[DirectSocket, bytes]]) -> list[DirectSocket]:
    """Write each frame to its socket; return the sockets that must be given up."""
    global _pool
    rest: list[tuple[DirectSocket, bytes]] = []
    failed: list[DirectSocket] = []
    if len(items) < PARALLEL_MIN:
        _send_raw(items, rest, failed)
    else:
        if _pool is None:
            _pool = ThreadPoolExecutor(FANOUT_HELPERS, thread_name_prefix="realtime-fanout")
        # Work sharing, not a fixed split: both threads take chunks from one iterator
        # (next() on it is atomic under the GIL). On a busy machine a helper that is not
        # scheduled in time simply gets no work, and is cancelled if it never started.
        chunks = iter([items[i : i + CHUNK] for i in range(0, len(items), CHUNK)])
        futures = [_pool.submit(_drain, chunks, rest, failed) for _ in range(FANOUT_HELPERS)]
        _drain(chunks, rest, failed)
        for future in futures:
            if not future.cancel():
                future.result()
    for sock, data in rest:
        sock._transport.write(data)
    return failed


def find_direct(send: Any, max_depth: int = 8) -> DirectSocket | None:
    """Follow ``send`` through wrapper closures to uvicorn's sansio protocol, if any."""
    stack: list[tuple[Any, int]] = [(send, 0)]
    seen: set[int] = set()
    while stack:
        fn, depth = stack.pop()
        if id(fn) in seen or depth > max_depth:
            continue
        seen.add(id(fn))
        owner = getattr(fn, "__self__", None)
        if owner is not None and type(owner).__name__ == "WebSocketsSansIOProtocol":
            if all(hasattr(owner, a) for a in ("transport", "close_sent", "disconnected")):
                return DirectSocket(owner)
            return None
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if callable(value):
                stack.append((value, depth + 1))
    return None
