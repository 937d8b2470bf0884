"""Fault injection: make REST fail or slow down, Realtime drop messages or connections.

The settings live in one mutable ``FaultSettings`` owned by a ``FaultInjector``; the
REST layer handles every request inside ``rest_request()`` and asks ``rest_fault()``
before handling it, and Realtime reads ``settings.realtime_*`` itself. The HTTP endpoint
``/__faults`` changes them. It answers only when the server was started with
``--faults``, only to loopback clients and only with the service_role key (``apikey``
header or bearer token): tests use it, nothing else should; a web page on another
origin cannot call it (no CORS headers; see ``app.py``).

Injected REST latency holds a request before the server acts on it. Two rules keep a
held request from outliving the test that caused it:

- a client that hangs up while its request is held never reaches the database (as if
  the connection had been reset before the server read the request);
- clearing the faults releases every held request at once and answers only when each
  has been handled, so after ``DELETE /__faults`` nothing held earlier is still to come.

``GET /__faults/in-flight?wait=S`` answers how many REST requests are being handled,
after waiting up to S seconds for that to reach zero: test fixtures use it to prove that
a test left no request of its own behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

FAULTS_PATH = "/__faults"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
CLEAR_WAIT_SECONDS = 10.0  # how long DELETE /__faults waits for released requests
MAX_IN_FLIGHT_WAIT_SECONDS = 60.0


class ClientGone(Exception):
    """The client hung up while its request was held by injected latency."""


@dataclass(eq=False)
class InFlightRequest:
    """One REST request being handled; ``held`` while injected latency delays it."""

    held: bool = False
    handled: asyncio.Event = field(default_factory=asyncio.Event)


async def _client_hangs_up(request: Request) -> None:
    """Return when the client closes its connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass
class FaultSettings:
    rest_error_rate: float = 0.0
    rest_error_status: int = 503
    rest_latency_ms: int = 0
    realtime_drop_rate: float = 0.0
    realtime_latency_ms: int = 0


class FaultSettingsError(ValueError):
    pass


def _validated(field_name: str, value: Any) -> float | int:
    # bool is an int subclass; a JSON true is never a valid rate or latency.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultSettingsError(f"{field_name} must be a number")
    if field_name.endswith("_rate"):
        if not 0.0 <= value <= 1.0:
            raise FaultSettingsError(f"{field_name} must be between 0 and 1")
        return float(value)
    if value != int(value):
        raise FaultSettingsError(f"{field_name} must be an integer")
    if field_name == "rest_error_status":
        if not 400 <= value <= 599:
            raise FaultSettingsError("rest_error_status must be an HTTP error status (400-599)")
        return int(value)
    if not 0 <= value <= 60_000:
        raise FaultSettingsError(f"{field_name} must be between 0 and 60000")
    return int(value)


class FaultInjector:
    def __init__(self, *, enabled: bool, authorize: Callable[[str], bool] | None = None) -> None:
        """``authorize(token)`` says whether a token may use the endpoint (the app
        passes a check for the service_role key); without it every request is refused."""
        self.enabled = enabled
        self._authorize = authorize
        self.settings = FaultSettings()
        self._close_realtime_hooks: list[Callable[[], Awaitable[None]]] = []
        self._in_flight: set[InFlightRequest] = set()
        self._release_held = asyncio.Event()

    def on_close_realtime(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._close_realtime_hooks.append(callback)

    async def close_realtime_connections(self) -> None:
        for hook in list(self._close_realtime_hooks):
            await hook()

    def update(self, changes: dict[str, Any]) -> None:
        """Validate every field first, then apply them all (all or nothing)."""
        known = {f.name for f in dataclasses.fields(FaultSettings)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise FaultSettingsError(f"unknown fault setting(s): {', '.join(unknown)}")
        validated = {name: _validated(name, value) for name, value in changes.items()}
        for name, value in validated.items():
            setattr(self.settings, name, value)

    def clear(self) -> list[InFlightRequest]:
        """Back to no faults; release the held requests and return them."""
        # In place: a part that kept a reference to ``settings`` sees the change too.
        for setting in dataclasses.fields(FaultSettings):
            setattr(self.settings, setting.name, getattr(FaultSettings(), setting.name))
        released = [request for request in self._in_flight if request.held]
        self._release_held.set()
        self._release_held = asyncio.Event()
        return released

    async def clear_and_wait(self) -> None:
        """``clear()``, then wait (bounded) until every released request has been handled."""
        released = self.clear()
        if not released:
            return
        waits = [asyncio.ensure_future(request.handled.wait()) for request in released]
        _, pending = await asyncio.wait(waits, timeout=CLEAR_WAIT_SECONDS)
        for wait in pending:
            wait.cancel()
        if pending:
            log.warning("faults cleared; %d released request(s) still being handled", len(pending))

    # --- REST requests ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def rest_request(self) -> AsyncIterator[InFlightRequest]:
        """Count a REST request as in flight for as long as it is being handled."""
        request = InFlightRequest()
        self._in_flight.add(request)
        try:
            yield request
        finally:
            self._in_flight.discard(request)
            request.handled.set()

    @property
    def rest_in_flight(self) -> int:
        return len(self._in_flight)

    async def rest_in_flight_after(self, seconds: float) -> int:
        """The number of REST requests in flight, once it is zero or ``seconds`` have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.rest_in_flight

    async def _hold(self, request: Request, in_flight: InFlightRequest, seconds: float) -> None:
        # Read the body first: uvicorn stops reading a socket once 64 KiB of body wait
        # unread, and would then notice a hang-up only after the delay, when it is too late.
        await request.body()
        in_flight.held = True
        delay = asyncio.ensure_future(asyncio.sleep(seconds))
        released = asyncio.ensure_future(self._release_held.wait())
        hang_up = asyncio.ensure_future(_client_hangs_up(request))
        try:
            await asyncio.wait({delay, released, hang_up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            in_flight.held = False
            for waiting in (delay, released, hang_up):
                waiting.cancel()
        if hang_up.done() and not hang_up.cancelled():
            raise ClientGone

    async def rest_fault(
        self, request: Request, in_flight: InFlightRequest
    ) -> tuple[int, dict[str, Any]] | None:
        """Delay as configured; return (status, PostgREST-style error) to fail the request.

        Raises ``ClientGone`` when the client hung up while the request was held.
        """
        settings = self.settings
        if settings.rest_latency_ms:
            await self._hold(request, in_flight, settings.rest_latency_ms / 1000)
        if settings.rest_error_rate and random.random() < settings.rest_error_rate:
            return settings.rest_error_status, {
                "code": "PGRST000",
                "message": "Injected fault: supabase_local was told to fail this request",
                "details": f"rest_error_rate={settings.rest_error_rate}",
                "hint": "DELETE /__faults clears injected faults",
            }
        return None

    # --- HTTP endpoint -------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route(FAULTS_PATH, self._endpoint, methods=["GET", "POST", "DELETE"]),
            Route(f"{FAULTS_PATH}/in-flight", self._in_flight_endpoint, methods=["GET"]),
        ]

    def _refusal(self, request: Request) -> Response | None:
        if not self.enabled:
            return JSONResponse(
                {"message": "fault injection is disabled; start with --faults"}, status_code=404
            )
        client_host = request.client.host if request.client else None
        if client_host not in LOOPBACK_HOSTS:
            return JSONResponse({"message": "fault injection is loopback-only"}, status_code=403)
        token = request.headers.get("apikey")
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if token is None and scheme.lower() == "bearer":
            token = bearer.strip()
        if not token or self._authorize is None or not self._authorize(token):
            return JSONResponse(
                {"message": "fault injection needs the service_role key (apikey header)"},
                status_code=401,
            )
        return None

    def _shown(self) -> JSONResponse:
        return JSONResponse(dataclasses.asdict(self.settings))

    async def _endpoint(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if request.method == "GET":
            return self._shown()
        if request.method == "DELETE":
            await self.clear_and_wait()
            log.info("faults cleared")
            return self._shown()
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"message": "body must be a JSON object"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"message": "body must be a JSON object"}, status_code=400)
        close_now = body.pop("close_realtime_connections", False)
        if not isinstance(close_now, bool):
            return JSONResponse(
                {"message": "close_realtime_connections must be a boolean"}, status_code=400
            )
        try:
            self.update(body)
        except FaultSettingsError as error:
            return JSONResponse({"message": str(error)}, status_code=400)
        log.info("faults set: %s", self.settings)
        if close_now:
            await self.close_realtime_connections()
        return self._shown()

    async def _in_flight_endpoint(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        raw = request.query_params.get("wait", "0")
        try:
            wait = float(raw)
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= MAX_IN_FLIGHT_WAIT_SECONDS:
            return JSONResponse(
                {"message": f"wait must be a number of seconds from 0 to "
                 f"{MAX_IN_FLIGHT_WAIT_SECONDS:.0f}"},
                status_code=400,
            )  # fmt: skip
        return JSONResponse({"rest_in_flight": await self.rest_in_flight_after(wait)})
