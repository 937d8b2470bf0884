"""Fault injection: make REST fail or slow down, Realtime drop messages or connections.

The settings live in one mutable ``FaultSettings`` owned by a ``FaultInjector``; the
REST layer asks ``rest_fault()`` before handling a request and Realtime reads
``settings.realtime_*`` itself. The HTTP endpoint ``/__faults`` changes them. It answers
only when the server was started with ``--faults`` and only to loopback clients: tests
use it, nothing else should.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


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
    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.settings = FaultSettings()
        self._close_realtime_hooks: list[Callable[[], Awaitable[None]]] = []

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

    def clear(self) -> None:
        # In place: a part that kept a reference to ``settings`` sees the change too.
        for field in dataclasses.fields(FaultSettings):
            setattr(self.settings, field.name, getattr(FaultSettings(), field.name))

    async def rest_fault(self) -> tuple[int, dict[str, Any]] | None:
        """Delay as configured; return (status, PostgREST-style error) to fail the request."""
        settings = self.settings
        if settings.rest_latency_ms:
            await asyncio.sleep(settings.rest_latency_ms / 1000)
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
        return [Route("/__faults", self._endpoint, methods=["GET", "POST", "DELETE"])]

    def _refusal(self, request: Request) -> Response | None:
        if not self.enabled:
            return JSONResponse(
                {"message": "fault injection is disabled; start with --faults"}, status_code=404
            )
        client_host = request.client.host if request.client else None
        if client_host not in LOOPBACK_HOSTS:
            return JSONResponse({"message": "fault injection is loopback-only"}, status_code=403)
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
            self.clear()
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
