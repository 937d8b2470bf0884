"""The Realtime endpoints: ``/realtime/v1/websocket`` and ``/realtime/v1/api/broadcast``.

Thin handlers over :mod:`channels`: parse a Phoenix message, act, answer the way
Supabase Realtime answers (``phx_reply`` with ``ok``/``error``, ``system`` messages,
``phx_close``). Invariants:

* A socket is accepted only with a valid ``apikey`` (query parameter or header); a bad
  key refuses the upgrade (HTTP 403), as Realtime does.
* A channel's role and claims come from the join's ``access_token`` when given, else
  from the ``apikey``; an ``access_token`` event replaces them; a token that is invalid
  or expires closes the channel with a ``system`` error and ``phx_close``.
* The ``system`` "Subscribed to PostgreSQL" message is sent only after the channel's
  subscriptions are registered and the tables' change capture is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from supabase_local.auth import AuthError

from . import protocol
from .authorization import PolicyError, may_send, permissions_for
from .capture import ChangeCapture
from .channels import Channel, Connection, Hub, Subscription, binding_id
from .filters import Filter, FilterError, parse_filter
from .quotas import TOO_MANY_JOINS, TOO_MANY_MESSAGES, Quotas
from .rls import RlsChecker
from .wire import find_direct

log = logging.getLogger(__name__)

EVENTS = ("INSERT", "UPDATE", "DELETE", "*")
SECRET_HEADERS = frozenset({"apikey", "authorization", "cookie"})
EXPIRY_CHECK_INTERVAL_S = 0.5
MESSAGE_RETENTION_SWEEP_S = 3600


class Realtime:
    """One Realtime service: mount :attr:`routes`, await :meth:`startup`/:meth:`shutdown`."""

    def __init__(self, *, config: Any, faults: Any = None) -> None:
        self.config = config
        self.faults = faults
        self._pool: asyncpg.Pool | None = None
        self._capture: ChangeCapture | None = None
        self.hub: Hub | None = None
        self.quotas = Quotas(config.realtime_limits)
        self._tasks: list[asyncio.Task[None]] = []
        self.routes: list[BaseRoute] = [
            WebSocketRoute("/realtime/v1/websocket", self._websocket),
            Route("/realtime/v1/api/broadcast", self._rest_broadcast, methods=["POST"]),
            Route(
                "/realtime/v1/api/broadcast/{topic:path}/events/{event}",
                self._rest_broadcast_one,
                methods=["POST"],
            ),
        ]
        if faults is not None and hasattr(faults, "on_close_realtime"):
            faults.on_close_realtime(self.close_all_connections)

    # -- lifecycle -------------------------------------------------------------------

    async def startup(self) -> None:
        self._pool = await asyncpg.create_pool(self.config.database_url, min_size=1, max_size=4)
        self.hub = Hub(RlsChecker(self._pool), self.faults, self.quotas)
        self._capture = ChangeCapture(
            self.config.database_url, self._pool, self.hub.dispatch, self.hub.interest
        )
        await self._capture.start()
        self._tasks.append(asyncio.create_task(self._expiry_loop(), name="realtime-expiry"))
        self._tasks.append(asyncio.create_task(self.quotas.run(), name="realtime-quotas"))
        self._tasks.append(
            asyncio.create_task(self._retention_loop(), name="realtime-message-retention")
        )

    async def shutdown(self) -> None:
        await self.close_all_connections()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._capture is not None:
            await self._capture.stop()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
        self._pool = self._capture = None

    async def close_all_connections(self) -> None:
        """The ``close_realtime_connections`` fault: drop every socket now."""
        if self.hub is None:
            return
        conns = list(self.hub.connections)
        for conn in conns:
            self.hub.drop_connection(conn)
        await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)

    async def _expiry_loop(self) -> None:
        """Close channels whose token expired; one channel's failure never stops it (it
        serves every socket of the server)."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK_INTERVAL_S)
            if self.hub is None:
                continue
            try:
                self.hub.expire_tokens()
            except Exception:
                log.exception("realtime: checking token expiry failed; checking again shortly")

    async def _retention_loop(self) -> None:
        """Broadcast messages are kept three days, as Supabase keeps its partitions."""
        while True:
            if self._pool is not None:
                try:
                    await self._pool.execute(
                        "DELETE FROM realtime.messages"
                        " WHERE inserted_at < timezone('utc', now()) - interval '3 days'"
                    )
                except (asyncpg.PostgresError, OSError) as exc:
                    log.warning("realtime: message retention sweep failed: %s", exc)
            await asyncio.sleep(MESSAGE_RETENTION_SWEEP_S)

    def _verify(self, token: str | None, *, apikey: str | None = None) -> Any:
        """Claims of an access token (a user JWT, or an API key standing for itself)."""
        if not token:
            raise AuthError("No apikey or access token given")
        return self.config.gateway.token_claims(token, apikey=apikey)

    # -- websocket -------------------------------------------------------------------

    async def _websocket(self, ws: WebSocket) -> None:
        vsn = ws.query_params.get("vsn") or protocol.VSN_1
        token = ws.query_params.get("apikey") or ws.headers.get("apikey")
        if vsn not in protocol.SUPPORTED_VSNS or self.hub is None:
            await ws.close(code=1008)
            return
        try:
            if not token:
                raise AuthError("No apikey given")
            claims = self.config.gateway.key_claims(token, user_agent=ws.headers.get("user-agent"))
        except AuthError:
            # Closing before accept makes the server answer the upgrade with 403.
            await ws.close(code=1008)
            return
        await ws.accept()
        hub = self.hub
        conn = Connection(
            send=ws.send,
            close=lambda: ws.close(code=1001),
            vsn=vsn,
            token=token or "",
            claims=claims,
            faults=self.faults,
            direct=find_direct(ws._send),
            headers={
                name: value for name, value in ws.headers.items() if name not in SECRET_HEADERS
            },
        )
        hub.connections.add(conn)
        writer = asyncio.create_task(conn.writer(), name="realtime-writer")
        try:
            while not conn.closed:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                if data is None:
                    data = message.get("bytes")
                if data is None:
                    continue
                try:
                    msg = protocol.decode(data, vsn)
                except protocol.ProtocolError as exc:
                    # Realtime's serializer raises on such a frame and its socket process
                    # ends: the connection closes (1011), the server serves on.
                    log.info("realtime: closing a socket that sent a malformed frame: %s", exc)
                    conn.closed = True
                    with contextlib.suppress(Exception):
                        await ws.close(code=1011)
                    break
                try:
                    await self._handle(conn, msg)
                except Exception:
                    # Phoenix: a crashed channel process reaches the client as phx_error.
                    log.exception("realtime: handling %s on %s failed", msg.event, msg.topic)
                    self._crash(conn, msg)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            conn.closed = True
            hub.drop_connection(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def _handle(self, conn: Connection, msg: protocol.Message) -> None:
        assert self.hub is not None
        if msg.topic == "phoenix":
            if msg.event == "heartbeat":
                conn.send(protocol.reply(msg, "ok"))
            return
        if msg.event == "phx_join":
            await self._join(conn, msg)
            return
        channel = conn.channels.get(msg.topic)
        if channel is None:
            conn.send(protocol.reply(msg, "error", {"reason": "unmatched topic"}))
            return
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        if msg.event == "phx_leave":
            conn.send(protocol.reply(msg, "ok"))
            self.hub.close_channel(channel)
        elif msg.event == "access_token":
            self._access_token(channel, payload.get("access_token"))
        elif msg.event == "broadcast":
            if channel.private and not channel.permissions.broadcast_write:
                return  # as Realtime: a broadcast the policies do not allow is dropped
            if self.quotas.payload_too_large(_payload_size(payload.get("payload"))):
                if channel.broadcast_ack:
                    conn.send(protocol.reply(msg, "error", {"reason": "payload_size_exceeded"}))
                return
            self.hub.broadcast(
                channel.topic, _broadcast_payload(payload), channel, private=channel.private
            )
            if channel.broadcast_ack:
                conn.send(protocol.reply(msg, "ok"))
        elif msg.event == "presence":
            if channel.private and not channel.permissions.presence_write:
                return
            self._presence(channel, msg, payload)
        else:
            conn.send(protocol.reply(msg, "error", {"reason": f"unknown event {msg.event!r}"}))

    def _crash(self, conn: Connection, msg: protocol.Message) -> None:
        assert self.hub is not None
        channel = conn.channels.get(msg.topic)
        if msg.ref is not None:
            conn.send(protocol.reply(msg, "error", {"reason": "internal server error"}))
        if channel is not None:
            channel.push("phx_error", {})
            self.hub.remove_channel(channel)

    def _access_token(self, channel: Channel, token: Any) -> None:
        assert self.hub is not None
        try:
            claims = self._verify(
                token if isinstance(token, str) else None, apikey=channel.conn.token
            )
        except AuthError as exc:
            channel.system(
                "error",
                f"Received an invalid access token from client: {exc}",
                extension="system",
            )
            self.hub.close_channel(channel)
            return
        self.hub.update_claims(channel, claims)

    def _shutdown(self, channel: Channel, message: str) -> None:
        """Realtime's ``shutdown_response``: a system error, then the channel stops."""
        assert self.hub is not None
        channel.system("error", message, extension="system")
        self.hub.close_channel(channel)

    def _presence_rate_exceeded(self, channel: Channel) -> bool:
        """Realtime's client presence limit: so many events per channel per window."""
        limits = self.config.realtime_limits
        now = time.monotonic()
        if now > channel.presence_window_ends:
            channel.presence_calls = 1
            channel.presence_window_ends = now + limits.client_presence_window_ms / 1000
            return False
        if channel.presence_calls >= limits.client_presence_max_calls:
            return True
        channel.presence_calls += 1
        return False

    def _presence(self, channel: Channel, msg: protocol.Message, payload: dict) -> None:
        assert self.hub is not None
        if self._presence_rate_exceeded(channel):
            self._shutdown(channel, "Client presence rate limit exceeded")
            return
        event = payload.get("event")
        if event == "track":
            meta = payload.get("payload")
            meta = meta if isinstance(meta, dict) else {}
            # Realtime measures the Erlang term; the JSON text is the same order of size.
            size = len(json.dumps(meta, separators=(",", ":"), default=str).encode())
            if size > self.config.realtime_limits.max_presence_payload_bytes:
                self._shutdown(channel, "Track message size exceeded")
                return
            self.hub.presence_track(channel, meta)
            channel.send(protocol.reply(msg, "ok"))
        elif event == "untrack":
            self.hub.presence_untrack(channel)
            channel.send(protocol.reply(msg, "ok"))
        else:
            channel.send(protocol.reply(msg, "error", {"reason": "unknown presence event"}))

    async def _join(self, conn: Connection, msg: protocol.Message) -> None:
        assert self.hub is not None and self._capture is not None
        hub = self.hub
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        if not msg.topic.startswith("realtime:"):
            conn.send(protocol.reply(msg, "error", {"reason": "unmatched topic"}))
            return
        limit = self.config.realtime_limits.max_channels_per_client
        if msg.topic not in conn.channels and len(conn.channels) >= limit:
            # A rejoin of a joined topic replaces it and is not counted.
            reason = "ChannelRateLimitReached: Too many channels"
            conn.send(protocol.reply(msg, "error", {"reason": reason}))
            return
        refusal = self.quotas.join_refusal(conn)
        if refusal is not None:
            conn.send(protocol.reply(msg, "error", {"reason": refusal}))
            if refusal == TOO_MANY_JOINS:
                conn.disconnect()
            return
        access_token = payload.get("access_token")
        try:
            claims = self._verify(
                access_token if isinstance(access_token, str) else conn.token, apikey=conn.token
            )
        except AuthError as exc:
            # Realtime's claim validation fails a non-numeric exp/iat without a case of
            # its own, so its join answers with the generic reason.
            reason = "Unknown Error on Channel" if exc.malformed_claims else str(exc)
            conn.send(protocol.reply(msg, "error", {"reason": reason}))
            return
        config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        broadcast = config.get("broadcast") if isinstance(config.get("broadcast"), dict) else {}
        presence = config.get("presence") or {}
        private = bool(config.get("private"))
        sub_topic = msg.topic.removeprefix("realtime:")
        unauthorized = {
            "reason": "Unauthorized: You do not have permissions to read from this "
            f"Channel topic: {sub_topic}"
        }
        if not private and self.config.private_only:
            conn.send(
                protocol.reply(
                    msg,
                    "error",
                    {"reason": "PrivateOnly: This project only allows private channels"},
                )
            )
            return
        permissions = None
        if private:
            try:
                permissions = await permissions_for(
                    self._pool, topic=sub_topic, claims=claims, headers=conn.headers
                )
            except PolicyError as exc:
                log.info("realtime: RlsPolicyError on %s: %s", sub_topic, exc)
            if permissions is None or not permissions.may_join:
                conn.send(protocol.reply(msg, "error", unauthorized))
                return
        replay, replay_problem = _replay_request(broadcast.get("replay"), private=private)
        if replay_problem is not None:
            conn.send(protocol.reply(msg, "error", {"reason": replay_problem}))
            return
        if replay is not None and not permissions.broadcast_read:
            conn.send(protocol.reply(msg, "error", unauthorized))
            return
        bindings = config.get("postgres_changes") or []
        if not isinstance(bindings, list):
            conn.send(protocol.reply(msg, "error", {"reason": "postgres_changes must be a list"}))
            return
        parsed: list[tuple[dict[str, Any], str, str, str, str | None]] = []
        for raw in bindings:
            if not isinstance(raw, dict):
                conn.send(protocol.reply(msg, "error", {"reason": "invalid postgres_changes"}))
                return
            event = str(raw.get("event", "*")).upper()
            if event not in EVENTS:
                conn.send(protocol.reply(msg, "error", {"reason": f"invalid event {event!r}"}))
                return
            schema = raw.get("schema") or "public"
            table = raw.get("table") or "*"
            filt = raw.get("filter") or None
            parsed.append((raw, event, schema, table, filt))

        # Capture is installed and subscriptions are built before the reply, so that a
        # change committed after the client sees SUBSCRIBED is never missed.
        specs, problem = await self._prepare_changes(parsed) if parsed else ([], None)
        previous = conn.channels.get(msg.topic)
        if previous is not None:
            # Phoenix: a second join of a topic on one socket replaces the first.
            hub.close_channel(previous)
        channel = Channel(
            conn=conn,
            topic=msg.topic,
            join_ref=msg.join_ref or msg.ref,
            claims=claims,
            broadcast_self=bool(broadcast.get("self")),
            broadcast_ack=bool(broadcast.get("ack")),
            presence_key=str(presence.get("key") or "") or secrets.token_hex(8),
            presence_enabled=bool(presence.get("enabled")),
            private=private,
            permissions=permissions,
            replay_buffer=[] if replay is not None else None,
        )
        hub.add_channel(channel)
        self.quotas.joined(conn)
        if problem is None:
            hub.add_subscriptions(channel, [Subscription(channel, *spec) for spec in specs])
        reply_changes = []
        for raw, event, schema, table, filt in parsed:
            echo = dict(raw)
            echo["id"] = binding_id(event, schema, table, filt)
            reply_changes.append(echo)
        conn.send(protocol.reply(msg, "ok", {"postgres_changes": reply_changes}))
        if replay is not None:
            await self._replay(channel, since_ms=replay[0], limit=replay[1])
        if channel.presence_enabled:
            state = hub.presence.get(channel.topic)
            channel.push("presence_state", state.state() if state else {})
        if problem is not None:
            channel.system("error", problem)
        elif parsed:
            channel.system("ok", "Subscribed to PostgreSQL")

    async def _prepare_changes(
        self, parsed: list[tuple[dict, str, str, str, str | None]]
    ) -> tuple[list[tuple[int, str, str, str, Filter | None]], str | None]:
        """Install capture for the bindings' tables; return subscriptions or a problem."""
        assert self.hub is not None and self._capture is not None
        capture, hub = self._capture, self.hub
        published = await capture.published_tables()
        wanted = {(s, t) for _, _, s, t, _ in parsed if t != "*"}
        if any(not capture.is_captured(s, t) for s, t in wanted & published) or any(
            t == "*" for *_, t, _ in parsed
        ):
            published = await capture.sync_published_tables()
        specs: list[tuple[int, str, str, str, Filter | None]] = []
        for _, event, schema, table, filt in parsed:
            problem = None
            if table != "*" and (schema, table) not in published:
                problem = "not published"
            flt = None
            if problem is None and filt:
                if table == "*":
                    problem = "a filter needs a table"
                else:
                    info = await hub.rls.table(schema, table)
                    try:
                        if info is None:
                            raise FilterError("no such table")
                        flt = parse_filter(filt).bind_types(info.column_types)
                    except FilterError as exc:
                        problem = str(exc)
            if problem is not None:
                log.info("realtime: refusing binding %s.%s (%s)", schema, table, problem)
                return [], (
                    "Unable to subscribe to changes with given parameters. Please check "
                    "Realtime is enabled for the given connect parameters: "
                    f"[event: {event}, schema: {schema}, table: {table}, filters: "
                    f"[{filt or ''}]]"
                )
            specs.append((binding_id(event, schema, table, filt), event, schema, table, flt))
        return specs, None

    # -- REST broadcast --------------------------------------------------------------

    def _rest_auth(self, request: Request) -> Any:
        key = request.headers.get("apikey")
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        return self.config.gateway.authenticate(
            apikey=key, bearer=bearer or None, user_agent=request.headers.get("user-agent")
        )

    async def _rest_broadcast(self, request: Request) -> Response:
        try:
            claims = self._rest_auth(request)
        except AuthError as exc:
            return JSONResponse({"message": str(exc)}, status_code=401)
        try:
            body = json.loads(await request.body())
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
            items = []
            for m in messages:
                topic, event = m["topic"], m["event"]
                if not isinstance(topic, str) or not isinstance(event, str):
                    raise TypeError("topic and event must be strings")
                items.append((topic, event, m.get("payload", {}), bool(m.get("private"))))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"message": f"invalid broadcast request: {exc}"}, status_code=400)
        if self.hub is None:
            return JSONResponse({"message": "realtime is not running"}, status_code=503)
        if (refused := self._messages_quota_refusal()) is not None:
            return refused
        for topic, event, payload, private in items:
            if self.quotas.payload_too_large(_payload_size(payload)):
                continue
            if private and not await may_send(self._pool, topic=topic, claims=claims):
                continue  # Realtime skips a private message the policies do not allow
            self.hub.broadcast(
                f"realtime:{topic}",
                {"type": "broadcast", "event": event, "payload": payload},
                None,
                private=private,
            )
        return Response(status_code=202)

    async def _rest_broadcast_one(self, request: Request) -> Response:
        """``httpSend``: ``POST …/api/broadcast/<topic>/events/<event>`` with the payload."""
        try:
            claims = self._rest_auth(request)
        except AuthError as exc:
            return JSONResponse({"message": str(exc)}, status_code=401)
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/octet-stream"):
            payload: Any = raw
        else:
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                return JSONResponse({"message": "payload is not JSON"}, status_code=400)
        private = request.query_params.get("private") == "true"
        topic = request.path_params["topic"]
        if self.hub is None:
            return JSONResponse({"message": "realtime is not running"}, status_code=503)
        if private and not await may_send(self._pool, topic=topic, claims=claims):
            return JSONResponse({"message": "Unauthorized"}, status_code=403)
        if (refused := self._messages_quota_refusal()) is not None:
            return refused
        if self.quotas.payload_too_large(len(raw)):
            return JSONResponse({"message": "Payload size exceeded"}, status_code=413)
        self.hub.broadcast(
            f"realtime:{topic}",
            {"type": "broadcast", "event": request.path_params["event"], "payload": payload},
            None,
            private=private,
        )
        return Response(status_code=202)

    def _messages_quota_refusal(self) -> Response | None:
        """A REST broadcast while the messages quota is exceeded: 429, as Realtime answers."""
        if not self.quotas.messages.triggered:
            return None
        self.quotas.refusals["events_per_second"] += 1
        return JSONResponse({"message": TOO_MANY_MESSAGES}, status_code=429)

    # -- broadcast replay --------------------------------------------------------------

    async def _replay(self, channel: Channel, *, since_ms: int, limit: int) -> None:
        """Send the stored broadcasts of a private topic since ``since_ms``, oldest first,
        marked ``meta.replayed``; then the live ones that arrived meanwhile."""
        assert self._pool is not None
        try:
            rows = await self._pool.fetch(REPLAY_SQL, channel.sub_topic, since_ms, limit)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("realtime: replay of %s failed: %s", channel.sub_topic, exc)
            rows = []
        for row in reversed(rows):
            message_id = str(row["id"])
            channel.replayed_ids.add(message_id)
            channel.push(
                "broadcast",
                {
                    "type": "broadcast",
                    "event": row["event"],
                    "payload": json.loads(row["payload"]) if row["payload"] is not None else {},
                    "meta": {"replayed": True, "id": message_id},
                },
            )
        channel.finish_replay()


REPLAY_SQL = """
SELECT id, event, payload::text AS payload FROM realtime.messages
WHERE topic = $1 AND private AND extension = 'broadcast'
  AND inserted_at >= to_timestamp($2::bigint / 1000.0) AT TIME ZONE 'utc'
  AND inserted_at < timezone('utc', now()) + interval '1 minute'
ORDER BY inserted_at DESC LIMIT $3
"""
REPLAY_HARD_LIMIT = 25


def _replay_request(raw: Any, *, private: bool) -> tuple[tuple[int, int] | None, str | None]:
    """``config.broadcast.replay`` as (since in ms, limit), or the reason it is refused."""
    if raw is None:
        return None, None
    if not private:
        return None, "UnableToReplayMessages: Replay is not allowed for public channels"
    invalid = "UnableToReplayMessages: Replay params are not valid"
    if not isinstance(raw, dict):
        return None, invalid
    since, limit = raw.get("since", 0), raw.get("limit", REPLAY_HARD_LIMIT)
    for value in (since, limit):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None, invalid
    if since > 253_402_300_799_000:  # after the year 9999: not a time
        return None, invalid
    return (since, max(1, min(limit, REPLAY_HARD_LIMIT))), None


def _payload_size(payload: Any) -> int:
    return len(json.dumps(payload, separators=(",", ":"), default=str).encode())


def _broadcast_payload(payload: dict[str, Any]) -> dict[str, Any]:
    out = {"type": "broadcast", "event": payload.get("event"), "payload": payload.get("payload")}
    if out["payload"] is None:
        out["payload"] = {}
    if "meta" in payload:
        out["meta"] = payload["meta"]
    return out
