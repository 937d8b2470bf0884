"""The prober: one process that watches both transports the way a browser does.

It subscribes to the legacy feed (a real WebSocket to daphne, signed in with a session
made on the server for a service user) and to Supabase Realtime (the private broadcast
topic ``monitor:events`` that the database sends every ``monitoring_events`` insert on,
joined with the official async client and a user token, as a dashboard joins it), then
publishes a ``monitor.probe`` event every ``interval`` seconds through ``event_publish``.

Every measurement is taken with ``time.time()`` of this one process, so sending and
receiving are on the same clock: latency is receipt time minus the time just before the
publish call. Per transport it records (as ``HealthSample`` rows, origin ``prober``):
``delivery`` 1 or 0 (lost: not seen within ``loss_timeout``), ``latency`` in ms,
``connect`` and ``connect_failure`` for every connection attempt, and ``error`` when an
established connection drops or the server reports an error. A Realtime quota refusal
(a join refused for the project's connections or joins per second, or a channel shut down
for its messages per second) is a ``connect_failure`` whenever it comes: the rollback rules
count it as the page's telemetry does. It reconnects with exponential backoff and jitter.

The first probe a transport is expected to deliver after the prober starts is a warm-up:
delivered or not, it records nothing on that transport. It measures this process's own
first time through everything (its database connection, its Supabase writer's first
request, the first message on a fresh subscription), not the product: on a fresh dev
stack that one Supabase sample came out at 2-4x the next ones and held the window's p95
at the rollback limit for minutes (docs/latency.md, "The dev stack over 15 minutes").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import websockets
from asgiref.sync import sync_to_async
from django.conf import settings

from rollout import services
from rollout.models import SampleKind, SampleOrigin, Transport
from rollout.services import SampleInput

logger = logging.getLogger(__name__)

PROBE_EVENT_TYPE = "monitor.probe"
PROBE_SOURCE = "prober"
CONNECT_TIMEOUT_SECONDS = 10.0
# Tokens are minted for an hour and the subscription is renewed before they expire.
TOKEN_SECONDS = 3600
TOKEN_RENEW_SECONDS = 3000
# How Realtime words its quota refusals (supabase_local/realtime/quotas.py mirrors them).
QUOTA_REFUSALS = (
    "ConnectionRateLimitReached",
    "ClientJoinRateLimitReached",
    "Too many connected users",
    "Too many joins per second",
    "Too many messages per second",
)


def quota_refusal(text: str) -> bool:
    """Whether an error from Realtime is one of its quota refusals."""
    return any(marker in text for marker in QUOTA_REFUSALS)


class Backoff:
    """Exponential backoff with full jitter, reset after a connection that worked."""

    def __init__(self, *, first: float = 0.5, cap: float = 10.0) -> None:
        self.first, self.cap, self.failures = first, cap, 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.first * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class Probe:
    probe_id: str
    sent_at: float
    # The transports subscribed when it was sent: a transport that is down is measured by
    # its connection failures, not by a stream of "lost" probes nobody could receive.
    expected: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    # Transports for which this is the warm-up probe: nothing is recorded for them.
    warmup: set[str] = field(default_factory=set)


class Prober:
    def __init__(
        self,
        *,
        base_url: str,
        user_id: int,
        interval: float = 5.0,
        loss_timeout: float = 10.0,
        supabase: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.feed_url = f"{scheme}://{parts.netloc}/ws/events/"
        self.user_id = user_id
        self.interval = interval
        self.loss_timeout = loss_timeout
        self.transports = [Transport.WEBSOCKET.value] + (
            [Transport.SUPABASE.value] if supabase else []
        )
        self.pending: dict[str, Probe] = {}
        self.samples: list[SampleInput] = []
        self.stopping = asyncio.Event()
        self.legacy_after: int | None = None
        self.session_key: str | None = None
        self.counts: dict[str, int] = {}
        self.connected: dict[str, bool] = dict.fromkeys(self.transports, False)
        self.warmed: set[str] = set()  # transports whose warm-up probe has been sent

    # --- bookkeeping ------------------------------------------------------------------

    def record(self, transport: str, kind: str, value: float = 1.0, at: float | None = None):
        at = time.time() if at is None else at
        self.samples.append(
            SampleInput(transport, kind, value, at=datetime.fromtimestamp(at, tz=UTC))
        )
        key = f"{transport}.{kind}" + (".lost" if kind == SampleKind.DELIVERY and not value else "")
        self.counts[key] = self.counts.get(key, 0) + 1

    def probe_new(self, *, expected: set[str], sent_at: float) -> Probe:
        """The next probe, a warm-up for the transports that have not had one yet."""
        probe = Probe(
            probe_id=uuid.uuid4().hex,
            sent_at=sent_at,
            expected=expected,
            warmup=expected - self.warmed,
        )
        self.warmed |= expected
        return probe

    def delivered(self, transport: str, payload: dict, received_at: float) -> None:
        probe = self.pending.get(str(payload.get("probe_id")))
        if probe is None or transport not in probe.expected:
            return  # not ours, or sent while this transport was not subscribed
        if transport in probe.delivered or transport in probe.lost:
            return  # a duplicate, or already counted as lost
        probe.delivered.add(transport)
        if transport in probe.warmup:
            self._forget_if_done(probe)
            return
        self.record(transport, SampleKind.DELIVERY, 1.0, at=received_at)
        self.record(
            transport, SampleKind.LATENCY, (received_at - probe.sent_at) * 1000, received_at
        )
        self._forget_if_done(probe)

    def _forget_if_done(self, probe: Probe) -> None:
        if len(probe.delivered) + len(probe.lost) >= len(probe.expected):
            self.pending.pop(probe.probe_id, None)

    def reap(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for probe in list(self.pending.values()):
            if now - probe.sent_at < self.loss_timeout:
                continue
            for transport in probe.expected:
                if transport not in probe.delivered and transport not in probe.lost:
                    probe.lost.add(transport)
                    if transport not in probe.warmup:
                        self.record(transport, SampleKind.DELIVERY, 0.0, at=now)
            self._forget_if_done(probe)

    async def flush(self) -> None:
        samples, self.samples = self.samples, []
        if not samples:
            return
        try:
            await sync_to_async(services.health_samples_record)(
                origin=SampleOrigin.PROBER, samples=samples
            )
        except Exception:
            logger.exception("prober: could not store %s samples; keeping them", len(samples))
            self.samples = samples + self.samples

    # --- loops ----------------------------------------------------------------------------

    async def run(self, *, duration: float | None = None) -> None:
        tasks = [
            asyncio.create_task(self._publish_loop(), name="publish"),
            asyncio.create_task(self._legacy_loop(), name="legacy"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
        ]
        if Transport.SUPABASE in self.transports:
            tasks.append(asyncio.create_task(self._supabase_loop(), name="supabase"))
        try:
            if duration is None:
                await self.stopping.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), duration)
        finally:
            self.stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.flush()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _publish_loop(self) -> None:
        from events.services import event_publish

        while not self.stopping.is_set():
            expected = {t for t, up in self.connected.items() if up}
            if not expected:
                await self._sleep(min(self.interval, 0.5))
                continue
            probe = self.probe_new(expected=expected, sent_at=time.time())
            self.pending[probe.probe_id] = probe
            try:
                await sync_to_async(event_publish)(
                    event_type=PROBE_EVENT_TYPE,
                    source=PROBE_SOURCE,
                    payload={"probe_id": probe.probe_id, "sent_at": probe.sent_at},
                )
            except Exception:
                # Not a transport's fault: the probe never left, so nobody can lose it.
                logger.exception("prober: publishing a probe failed")
                self.pending.pop(probe.probe_id, None)
            await self._sleep(self.interval)

    async def _housekeeping_loop(self) -> None:
        while not self.stopping.is_set():
            self.reap()
            await self.flush()
            await self._sleep(0.5)

    # --- legacy feed ------------------------------------------------------------------------

    async def _session_cookie(self) -> str:
        if self.session_key is None:
            self.session_key = await sync_to_async(services.prober_session_create)(
                user_id=self.user_id
            )
        return f"{settings.SESSION_COOKIE_NAME}={self.session_key}"

    async def _legacy_loop(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            connected = False
            try:
                cookie = await self._session_cookie()
                async with websockets.connect(
                    self.feed_url,
                    origin=self.base_url,
                    additional_headers={"Cookie": cookie},
                    open_timeout=CONNECT_TIMEOUT_SECONDS,
                    max_size=None,
                ) as socket:
                    welcome = json.loads(
                        await asyncio.wait_for(socket.recv(), CONNECT_TIMEOUT_SECONDS)
                    )
                    if welcome.get("type") != "welcome":
                        raise ConnectionError(f"expected welcome, got {welcome.get('type')}")
                    connected = self.connected[Transport.WEBSOCKET] = True
                    self.record(Transport.WEBSOCKET, SampleKind.CONNECT)
                    backoff.reset()
                    if self.legacy_after is not None:
                        # Like a page: ask for what we missed while away.
                        await socket.send(
                            json.dumps({"type": "resume", "after": self.legacy_after})
                        )
                    else:
                        self.legacy_after = welcome.get("latest_seq")
                    async for raw in socket:
                        self._legacy_message(json.loads(raw), time.time())
                if not self.stopping.is_set():
                    raise ConnectionError("the legacy feed closed the connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected[Transport.WEBSOCKET] = False
                if self.stopping.is_set():
                    return
                if connected:
                    logger.warning("prober: legacy feed dropped: %s", exc)
                    self.record(Transport.WEBSOCKET, SampleKind.ERROR)
                else:
                    logger.warning("prober: legacy feed connect failed: %s", exc)
                    self.record(Transport.WEBSOCKET, SampleKind.CONNECT_FAILURE)
                    if "HTTP 403" in str(exc) or "4401" in str(exc):
                        self.session_key = None  # the session may be gone: make a new one
            await self._sleep(0 if connected else backoff.next_delay())

    def _legacy_message(self, message: dict, received_at: float) -> None:
        kind = message.get("type")
        if kind == "event":
            event = message.get("event") or {}
            seq = event.get("seq")
            if isinstance(seq, int) and (self.legacy_after is None or seq > self.legacy_after):
                self.legacy_after = seq
            if event.get("event_type") == PROBE_EVENT_TYPE:
                self.delivered(Transport.WEBSOCKET, event.get("payload") or {}, received_at)
        elif kind == "error":
            logger.warning("prober: legacy feed error: %s", message)
            self.record(Transport.WEBSOCKET, SampleKind.ERROR)
        elif kind == "control":
            logger.info("prober: control message: %s", message)

    # --- Supabase Realtime --------------------------------------------------------------------

    async def _supabase_loop(self) -> None:
        from realtime import RealtimeSubscribeStates

        from events import supabase_client

        backoff = Backoff()
        while not self.stopping.is_set():
            connected = False
            client = None
            try:
                token = await sync_to_async(supabase_client.user_access_token_mint)(
                    user_id=self.user_id, expires_in=TOKEN_SECONDS
                )
                client = await supabase_client.async_client(access_token=token)
                # Our own reconnect loop counts attempts and failures; the client's would
                # hide them.
                client.realtime.auto_reconnect = False
                subscribed, ended = asyncio.Event(), asyncio.Event()
                errors: list[str] = []

                def on_state(state, error=None, subscribed=subscribed, ended=ended, errors=errors):
                    if state == RealtimeSubscribeStates.SUBSCRIBED:
                        subscribed.set()
                    else:
                        if error is not None:
                            errors.append(str(error))
                        ended.set()

                # The private topic a dashboard joins; probe rows are a few hundred bytes,
                # so they always travel in the message (never only announced by seq).
                channel = client.channel(
                    supabase_client.EVENTS_TOPIC, {"config": {"private": True}}
                )
                channel.on_broadcast(supabase_client.EVENTS_EVENT, self._supabase_broadcast)
                await asyncio.wait_for(channel.subscribe(on_state), CONNECT_TIMEOUT_SECONDS)
                if not subscribed.is_set():
                    raise ConnectionError(f"the Realtime join did not succeed: {errors}")
                connected = self.connected[Transport.SUPABASE] = True
                self.record(Transport.SUPABASE, SampleKind.CONNECT)
                backoff.reset()
                renew_at = time.monotonic() + TOKEN_RENEW_SECONDS
                while not self.stopping.is_set():
                    if ended.is_set() or not client.realtime.is_connected:
                        raise ConnectionError(f"the Realtime connection dropped: {errors}")
                    if time.monotonic() >= renew_at:
                        token = await sync_to_async(supabase_client.user_access_token_mint)(
                            user_id=self.user_id, expires_in=TOKEN_SECONDS
                        )
                        await client.realtime.set_auth(token)
                        renew_at = time.monotonic() + TOKEN_RENEW_SECONDS
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ended.wait(), 0.5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected[Transport.SUPABASE] = False
                if self.stopping.is_set():
                    return
                if quota_refusal(str(exc)):
                    logger.warning("prober: Realtime refused for a quota: %s", exc)
                    self.record(Transport.SUPABASE, SampleKind.CONNECT_FAILURE)
                elif connected:
                    logger.warning("prober: Realtime dropped: %s", exc)
                    self.record(Transport.SUPABASE, SampleKind.ERROR)
                else:
                    logger.warning("prober: Realtime connect failed: %r", exc)
                    self.record(Transport.SUPABASE, SampleKind.CONNECT_FAILURE)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.realtime.close(), 5)
            await self._sleep(0 if connected else backoff.next_delay())

    def _supabase_broadcast(self, message: dict) -> None:
        """A broadcast of ``monitor:events``: the rows one insert statement wrote."""
        received_at = time.time()
        for row in (message.get("payload") or {}).get("events") or []:
            if not isinstance(row, dict) or row.get("event_type") != PROBE_EVENT_TYPE:
                continue
            body = row.get("payload")
            if isinstance(body, str):  # a jsonb column may arrive as text from some servers
                with contextlib.suppress(ValueError):
                    body = json.loads(body)
            if isinstance(body, dict):
                self.delivered(Transport.SUPABASE, body, received_at)
