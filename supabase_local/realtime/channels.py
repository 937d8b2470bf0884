"""Sockets, joined channels, subscriptions, and the fan-out of changes and broadcasts.

Invariants:

* A :class:`Connection` sends frames strictly in the order they were given. With
  uvicorn's sansio protocol it writes pre-built frame bytes straight to the socket
  (:mod:`wire`); otherwise, and whenever frames are delayed, one writer task per socket
  drains its queue, so a slow socket never delays the others.
* Fault injection applies here, on the way out: ``realtime_drop_rate`` loses droppable
  messages (``postgres_changes``, ``broadcast``; never replies, system messages,
  presence or heartbeats, which would only make the client rejoin), and
  ``realtime_latency_ms`` delays every outgoing frame (order is kept).
* :meth:`Hub.dispatch` handles one committed transaction: it finds the matching
  subscriptions, asks :mod:`rls` once per (table, subscriber group), and encodes each
  distinct message once; no query runs per subscriber.
* Binding ids are a stable hash of the binding, as in Realtime, so subscribers with the
  same topic and bindings receive byte-identical frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from supabase_local.config import RealtimeLimits

from . import protocol
from .capture import Change
from .filters import Filter
from .presence import TopicPresence
from .quotas import TOO_MANY_MESSAGES, Quotas
from .rls import RlsChecker, TableInfo
from .wire import DirectSocket, write_many

log = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 50_000  # a socket this far behind is closed rather than buffered
WsSend = Callable[[dict[str, Any]], Awaitable[None]]


class Connection:
    def __init__(
        self,
        *,
        send: WsSend,
        close: Callable[[], Awaitable[None]],
        vsn: str,
        token: str,
        claims: Any,
        faults: Any,
        direct: DirectSocket | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.vsn = vsn
        # The upgrade request's headers, for policies reading request.headers.
        self.headers = headers or {}
        self.direct = direct
        if direct is not None:
            direct.owner = self
        self.token = token
        self.claims = claims
        self.channels: dict[str, Channel] = {}
        self._send = send
        self._close = close
        self._faults = faults
        self._queue: deque[tuple[float, protocol.Outgoing]] = deque()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.closed = False
        self._closing: asyncio.Task[None] | None = None

    def send(self, out: protocol.Outgoing) -> None:
        if self.closed:
            return
        due = 0.0
        settings = getattr(self._faults, "settings", None)
        if settings is not None:
            drop = getattr(settings, "realtime_drop_rate", 0.0) or 0.0
            if out.droppable and drop > 0 and random.random() < drop:
                return
            latency = getattr(settings, "realtime_latency_ms", 0) or 0
            if latency > 0:
                due = self._loop.time() + latency / 1000.0
        if self.direct is not None and not due and not self._queue:
            # Fast path: no task switch, the frame bytes are shared by all receivers.
            if not self.direct.write(out.wire(self.vsn)):
                self._give_up()
            return
        if len(self._queue) >= MAX_QUEUED_FRAMES:
            self._give_up()
            return
        self._queue.append((due, out))
        self._wake.set()

    def _give_up(self) -> None:
        if not self.closed:
            # Usually a client that went away mid fan-out; else one that stopped reading.
            log.info("realtime: closing a socket that is closing or stopped reading")
            # Keep a reference: the loop holds tasks only weakly.
            self._closing = self._loop.create_task(self.close())

    async def writer(self) -> None:
        """Drains the queue: used for delayed (fault latency) frames and the ASGI path."""
        queue, send = self._queue, self._send
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                due, out = queue.popleft()
                if due:
                    delay = due - self._loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if self.direct is not None:
                    if not self.direct.write(out.wire(self.vsn)):
                        self._give_up()
                        return
                    continue
                frame = out.frame(self.vsn)
                if isinstance(frame, str):
                    await send({"type": "websocket.send", "text": frame})
                else:
                    await send({"type": "websocket.send", "bytes": frame})

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self._close()

    def disconnect(self) -> None:
        """Close soon, after what was sent (Realtime's ``disconnect`` to the transport)."""
        if self._closing is None:
            self._closing = self._loop.create_task(self.close())


@dataclass(eq=False, slots=True)
class Subscription:
    channel: Channel
    id: int
    event: str  # INSERT | UPDATE | DELETE | *
    schema: str
    table: str  # a table name, or "*" for every published table of the schema
    filter: Filter | None
    bucket: tuple | None = None


@dataclass(eq=False, slots=True)
class _Bucket:
    """Subscriptions that receive exactly the same changes (same event, filter, claims)."""

    event: str
    filter: Filter | None
    role: str
    claims: dict[str, Any]
    subs: dict[Subscription, None] = field(default_factory=dict)  # an ordered set


@dataclass(eq=False)
class Channel:
    conn: Connection
    topic: str
    join_ref: str | None
    claims: Any  # supabase_local.auth.Claims: role, sub, exp, raw
    broadcast_self: bool = False
    broadcast_ack: bool = False
    presence_key: str = ""
    presence_enabled: bool = False
    private: bool = False
    # A private channel's permissions (realtime/authorization.py); None on a public one.
    permissions: Any = None
    # Broadcast replay: ids already replayed are not delivered again; while the replay is
    # being sent, live database broadcasts wait here so that they follow it in order.
    replayed_ids: set[str] = field(default_factory=set)
    replay_buffer: list[tuple[str, protocol.Outgoing]] | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    # Realtime's per-channel presence rate limit: events counted in the current window.
    presence_calls: int = 0
    presence_window_ends: float = 0.0

    def receives_broadcast(self, *, private: bool) -> bool:
        if self.private != private:
            return False  # a private and a public channel of one name are two topics
        return not private or bool(self.permissions and self.permissions.broadcast_read)

    def finish_replay(self) -> None:
        buffered, self.replay_buffer = self.replay_buffer or [], None
        for message_id, out in buffered:
            if message_id not in self.replayed_ids:
                self.send(out)

    @property
    def sub_topic(self) -> str:
        return self.topic.removeprefix("realtime:")

    @property
    def role(self) -> str:
        return self.claims.role

    def send(self, out: protocol.Outgoing) -> None:
        self.conn.send(out)

    def push(self, event: str, payload: Any, *, droppable: bool = False) -> None:
        self.conn.send(
            protocol.push(self.topic, event, payload, join_ref=self.join_ref, droppable=droppable)
        )

    def system(self, status: str, message: str, extension: str = "postgres_changes") -> None:
        self.push(
            "system",
            {
                "status": status,
                "message": message,
                "extension": extension,
                "channel": self.sub_topic,
            },
        )


def fanout(out: protocol.Outgoing, conns: list[Connection], faults: Any) -> None:
    """Send one message to many sockets; the fault settings are read once."""
    settings = getattr(faults, "settings", None)
    if settings is not None and (
        getattr(settings, "realtime_drop_rate", 0) or getattr(settings, "realtime_latency_ms", 0)
    ):
        for conn in conns:
            conn.send(out)
        return
    items: list[tuple[DirectSocket, bytes]] = []
    frames: dict[str, bytes] = {}
    for conn in conns:
        direct = conn.direct
        if direct is not None and not conn._queue and not conn.closed:
            data = frames.get(conn.vsn)
            if data is None:
                data = frames[conn.vsn] = out.wire(conn.vsn)
            items.append((direct, data))
        else:
            conn.send(out)
    if items:
        for direct in write_many(items):
            direct.owner._give_up()


def binding_id(event: str, schema: str, table: str, filter_text: str | None) -> int:
    """A stable positive 31-bit id for a binding (Realtime hashes the binding too)."""
    key = json.dumps([event, schema, table, filter_text], separators=(",", ":"))
    return zlib.crc32(key.encode()) & 0x7FFFFFFF or 1


@dataclass(slots=True)
class _Need:
    info: TableInfo
    role: str
    claims: dict[str, Any]
    indices: list[int] = field(default_factory=list)


class Hub:
    """All live sockets and channels of one server."""

    def __init__(self, rls: RlsChecker, faults: Any = None, quotas: Quotas | None = None) -> None:
        self.rls = rls
        self.faults = faults
        self.quotas = quotas if quotas is not None else Quotas(RealtimeLimits())
        self.connections: set[Connection] = set()
        self.topics: dict[str, set[Channel]] = {}
        self.presence: dict[str, TopicPresence] = {}
        # (schema, table) -> bucket signature -> bucket of identical subscriptions
        self.subs: dict[tuple[str, str], dict[tuple, _Bucket]] = {}
        # set of matched buckets -> fan-out plan; cleared whenever a subscription changes
        self._plans: dict[tuple[int, ...], list[tuple[str, tuple[int, ...], list]]] = {}

    def interest(self) -> tuple[list[str], list[str]]:
        """(schemas with a "*" table binding, "schema.table" names with a binding)."""
        schemas = [schema for schema, table in self.subs if table == "*"]
        tables = [f"{schema}.{table}" for schema, table in self.subs if table != "*"]
        return schemas, tables

    # -- membership ------------------------------------------------------------------

    def add_channel(self, channel: Channel) -> None:
        channel.conn.channels[channel.topic] = channel
        self.topics.setdefault(channel.topic, set()).add(channel)

    def add_subscriptions(self, channel: Channel, subs: list[Subscription]) -> None:
        channel.subscriptions.extend(subs)
        for sub in subs:
            self._index(sub)

    def _index(self, sub: Subscription) -> None:
        claims = sub.channel.claims
        significant = {k: v for k, v in claims.raw.items() if k not in ("exp", "iat", "nbf")}
        claims_key = json.dumps(significant, sort_keys=True, default=str)
        filter_key = sub.filter.text if sub.filter is not None else None
        signature = (sub.event, filter_key, claims.role, claims_key)
        buckets = self.subs.setdefault((sub.schema, sub.table), {})
        bucket = buckets.get(signature)
        if bucket is None:
            bucket = buckets[signature] = _Bucket(sub.event, sub.filter, claims.role, claims.raw)
        bucket.subs[sub] = None
        sub.bucket = signature
        self._plans.clear()

    def _unindex(self, sub: Subscription) -> None:
        self._plans.clear()
        buckets = self.subs.get((sub.schema, sub.table))
        if buckets is None or sub.bucket is None:
            return
        bucket = buckets.get(sub.bucket)
        if bucket is not None:
            bucket.subs.pop(sub, None)
            if not bucket.subs:
                del buckets[sub.bucket]
        if not buckets:
            del self.subs[(sub.schema, sub.table)]
        sub.bucket = None

    def update_claims(self, channel: Channel, claims: Any) -> None:
        """A new access token: the channel's subscriptions move to their new group."""
        for sub in channel.subscriptions:
            self._unindex(sub)
        channel.claims = claims
        for sub in channel.subscriptions:
            self._index(sub)

    def remove_channel(self, channel: Channel) -> None:
        if channel.conn.channels.get(channel.topic) is channel:
            del channel.conn.channels[channel.topic]
        members = self.topics.get(channel.topic)
        if members is not None:
            members.discard(channel)
            if not members:
                del self.topics[channel.topic]
        for sub in channel.subscriptions:
            self._unindex(sub)
        channel.subscriptions.clear()
        self.presence_untrack(channel)

    def close_channel(self, channel: Channel, *, reason: dict[str, Any] | None = None) -> None:
        """Server-side close: ``phx_close`` to the client, then forget the channel."""
        channel.push("phx_close", reason or {})
        self.remove_channel(channel)

    def drop_connection(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.quotas.left(conn)
        for channel in list(conn.channels.values()):
            self.remove_channel(channel)

    # -- presence --------------------------------------------------------------------

    def presence_of(self, topic: str) -> TopicPresence:
        state = self.presence.get(topic)
        if state is None:
            state = self.presence[topic] = TopicPresence()
        return state

    def presence_track(self, channel: Channel, payload: dict[str, Any]) -> None:
        diff = self.presence_of(channel.topic).track(channel, channel.presence_key, payload)
        self._presence_diff(channel.topic, diff)

    def presence_untrack(self, channel: Channel) -> None:
        state = self.presence.get(channel.topic)
        if state is None:
            return
        diff = state.untrack(channel)
        if state.is_empty():
            del self.presence[channel.topic]
        if diff is not None:
            self._presence_diff(channel.topic, diff)

    def _presence_diff(self, topic: str, diff: dict[str, Any]) -> None:
        out = protocol.push(topic, "presence_diff", diff)
        for member in self.topics.get(topic, ()):
            member.send(out)

    # -- broadcast -------------------------------------------------------------------

    def broadcast(
        self, topic: str, payload: dict[str, Any], sender: Channel | None, *, private: bool = False
    ) -> int:
        """Relay a user broadcast to the topic's channels of the same privacy; returns the
        receiver count."""
        out = protocol.push(topic, "broadcast", payload, droppable=True)
        conns = [
            m.conn
            for m in self.topics.get(topic, ())
            if (m is not sender or m.broadcast_self) and m.receives_broadcast(private=private)
        ]
        fanout(out, conns, self.faults)
        self._count_deliveries(topic, conns, broadcasts=1)
        return len(conns)

    def _count_deliveries(self, topic: str, conns: list[Connection], *, broadcasts: int = 0):
        """Count messages as Realtime does; over the quota, the receiving channels stop."""
        self.quotas.delivered(len(conns) + broadcasts)
        if not self.quotas.messages.triggered:
            return
        for conn in conns:
            channel = conn.channels.get(topic)
            if channel is not None:
                channel.system("error", TOO_MANY_MESSAGES, extension="system")
                self.close_channel(channel)

    def database_broadcast(self, message: dict[str, Any]) -> int:
        """A committed ``realtime.messages`` row, to the channels joined to its topic
        (not sent while the messages quota is exceeded, nor over the payload limit)."""
        topic = f"realtime:{message.get('topic')}"
        size = len(json.dumps(message.get("payload"), separators=(",", ":")).encode())
        if self.quotas.database_broadcast_refused() or self.quotas.payload_too_large(size):
            return 0
        payload = {
            "type": "broadcast",
            "event": message.get("event"),
            "payload": message.get("payload") if message.get("payload") is not None else {},
            "meta": {"id": message.get("id")},
        }
        out = protocol.push(topic, "broadcast", payload, droppable=True)
        private = bool(message.get("private"))
        conns = []
        for member in self.topics.get(topic, ()):
            if not member.receives_broadcast(private=private):
                continue
            if member.replay_buffer is not None:
                member.replay_buffer.append((str(message.get("id")), out))
            elif str(message.get("id")) not in member.replayed_ids:
                conns.append(member.conn)
        fanout(out, conns, self.faults)
        self._count_deliveries(topic, conns, broadcasts=1)
        return len(conns)

    # -- postgres_changes ------------------------------------------------------------

    async def dispatch(self, changes: list[Change]) -> None:
        """Fan one committed transaction out to the subscribers allowed to see it."""
        broadcasts = [c for c in changes if c.op == "BROADCAST"]
        if broadcasts:
            for change in broadcasts:
                self.database_broadcast(change.record or {})
            changes = [c for c in changes if c.op != "BROADCAST"]
        plan: list[tuple[int, dict[str, Any], list[tuple[_Bucket, tuple | None]]]] = []
        needs: dict[tuple, _Need] = {}
        for idx, change in enumerate(changes):
            buckets = list(self.subs.get((change.schema, change.table), {}).values())
            wildcard = self.subs.get((change.schema, "*"))
            if wildcard:
                buckets.extend(wildcard.values())
            if not buckets:
                continue
            info = await self.rls.table(change.schema, change.table)
            if info is None:
                continue
            data = _change_data(change, info)
            subject = data.get("record") if change.op != "DELETE" else data["old_record"]
            matched: list[tuple[_Bucket, tuple | None]] = []
            # One decision per bucket (same event, filter, role and claims), not per socket.
            for bucket in buckets:
                if bucket.event != "*" and bucket.event != change.op:
                    continue
                if bucket.filter is not None and not bucket.filter.matches(subject):
                    continue
                if change.op == "DELETE":
                    if self.rls.can_receive_deletes(info, bucket.role):
                        matched.append((bucket, None))
                    continue
                group = self.rls.group_key(info, bucket.role, bucket.claims)
                key = (change.schema, change.table, group)
                need = needs.get(key)
                if need is None:
                    need = needs[key] = _Need(info, bucket.role, bucket.claims)
                if not need.indices or need.indices[-1] != idx:
                    need.indices.append(idx)
                matched.append((bucket, key))
            if matched:
                plan.append((idx, data, matched))
        if not plan:
            return
        verdicts: dict[tuple, set[int]] = {}
        for key, need in needs.items():
            records = [changes[i].record or {} for i in need.indices]
            allowed = await self.rls.visible(need.info, need.role, need.claims, records)
            verdicts[key] = {i for i, ok in zip(need.indices, allowed, strict=True) if ok}
        for idx, data, matched in plan:
            passing = [b for b, key in matched if key is None or idx in verdicts[key]]
            if not passing:
                continue
            for topic, ids, conns in self._fanout_plan(passing):
                out = protocol.push(
                    topic, "postgres_changes", {"ids": list(ids), "data": data}, droppable=True
                )
                fanout(out, conns, self.faults)
                self._count_deliveries(topic, conns)

    def _fanout_plan(self, buckets: list[_Bucket]) -> list[tuple[str, tuple[int, ...], list]]:
        """Who gets which message when these buckets match: [(topic, ids, sockets)].

        Cached per set of buckets (every change of a busy table matches the same ones)
        until any subscription changes.
        """
        key = tuple(id(b) for b in buckets)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        per_channel: dict[Channel, list[int]] = {}
        for bucket in buckets:
            for sub in bucket.subs:
                ids = per_channel.get(sub.channel)
                if ids is None:
                    per_channel[sub.channel] = [sub.id]
                elif sub.id not in ids:
                    ids.append(sub.id)
        groups: dict[tuple[str, tuple[int, ...]], list[Connection]] = {}
        for channel, ids in per_channel.items():
            groups.setdefault((channel.topic, tuple(ids)), []).append(channel.conn)
        result = [(topic, ids, conns) for (topic, ids), conns in groups.items()]
        if len(self._plans) >= 256:
            self._plans.clear()
        self._plans[key] = result
        return result

    # -- token expiry ----------------------------------------------------------------

    def expire_tokens(self) -> None:
        now = time.time()
        for conn in list(self.connections):
            for channel in list(conn.channels.values()):
                exp = getattr(channel.claims, "exp", None)
                try:
                    expired = exp is not None and exp <= now
                except TypeError:  # verify_token admits numbers only; never stop the sweep
                    log.warning("realtime: closing %s: its token's exp is %r", channel.topic, exp)
                    expired = True
                if expired:
                    ago = int(now - exp) if isinstance(exp, int | float) else 0
                    channel.system(
                        "error", f"Token has expired {ago} seconds ago", extension="system"
                    )
                    self.close_channel(channel)


def _change_data(change: Change, info: TableInfo) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": change.schema,
        "table": change.table,
        "commit_timestamp": change.commit_timestamp,
        "type": change.op,
        "columns": info.columns,
        "errors": None,
    }
    if change.op == "INSERT":
        data["record"] = change.record
    elif change.op == "UPDATE":
        data["record"] = change.record
        data["old_record"] = info.update_old_record(change.old_record)
    else:
        data["old_record"] = info.delete_old_record(change.old_record)
    return data
