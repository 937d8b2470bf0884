"""Parsing of browser telemetry (``POST /api/telemetry``): strict, field by field.

A page reports, for the transport it is on: ``connects``, ``connect_failures``, ``errors``
(counts since its last report) and ``latencies_ms`` (delivery latencies measured on the
page's clock: receipt time minus the event's server ``received_at``). It also sends
``clock_offset_ms``, the server clock minus the page clock as the page measured it with
``GET /api/time`` (offset = server_now - (sent + received) / 2). The server adds the
offset to each latency, so every latency is on the server's clock.

``page`` (optional) is an id the page drew when it loaded (letters, digits, ``-``, ``_``;
at most 64): a report, even an empty one, marks that page open on its transport, which is
how the quota projections count open dashboards (``rollout/open_pages.py``).
"""

import math
import re
from dataclasses import dataclass, field
from typing import Any

from rollout.models import Transport

MAX_COUNT = 1000
MAX_LATENCIES = 200
MAX_RAW_LATENCY_MS = 600_000.0  # ten minutes: anything later is not "live"
MAX_OFFSET_MS = 86_400_000.0  # a day: beyond that the page clock is simply wrong
FIELDS = {
    "transport", "connects", "connect_failures", "errors", "latencies_ms", "clock_offset_ms",
    "page",
}  # fmt: skip
PAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_PAGE_ID = "page"  # a page that sends no id: one open page for its user


class TelemetryInputError(ValueError):
    def __init__(self, *, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class TelemetryReport:
    transport: str
    connects: int = 0
    connect_failures: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # corrected, server clock
    clock_offset_ms: float = 0.0
    page: str = DEFAULT_PAGE_ID


def _number(value: Any) -> bool:
    # An int is compared as it is (math.isfinite would overflow on 10**400).
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _count(data: dict[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise TelemetryInputError(field=name, message=f"must be an integer from 0 to {MAX_COUNT}")
    return value


def telemetry_parse(data: Any) -> TelemetryReport:
    if not isinstance(data, dict):
        raise TelemetryInputError(field="body", message="must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise TelemetryInputError(field=unknown[0], message="unknown field")
    transport = data.get("transport")
    if transport not in Transport.values:
        raise TelemetryInputError(
            field="transport", message=f"must be one of {', '.join(Transport.values)}"
        )
    offset = data.get("clock_offset_ms", 0)
    if not _number(offset) or abs(offset) > MAX_OFFSET_MS:
        raise TelemetryInputError(
            field="clock_offset_ms", message=f"must be a number within ±{MAX_OFFSET_MS:.0f}"
        )
    raw = data.get("latencies_ms", [])
    if not isinstance(raw, list) or len(raw) > MAX_LATENCIES:
        raise TelemetryInputError(
            field="latencies_ms", message=f"must be a list of at most {MAX_LATENCIES} numbers"
        )
    latencies = []
    for index, value in enumerate(raw):
        if not _number(value) or abs(value) > MAX_RAW_LATENCY_MS:
            raise TelemetryInputError(
                field=f"latencies_ms[{index}]",
                message=f"must be a number within ±{MAX_RAW_LATENCY_MS:.0f} ms",
            )
        # A corrected latency below zero is clock-measurement noise (the offset is only as
        # good as half a round trip): it counts as "instant", not as an error.
        latencies.append(max(0.0, float(value) + float(offset)))
    page = data.get("page", DEFAULT_PAGE_ID)
    if not isinstance(page, str) or not PAGE_ID.match(page):
        raise TelemetryInputError(
            field="page", message="must be 1 to 64 letters, digits, '-' or '_'"
        )
    return TelemetryReport(
        transport=transport,
        page=page,
        connects=_count(data, "connects"),
        connect_failures=_count(data, "connect_failures"),
        errors=_count(data, "errors"),
        latencies_ms=latencies,
        clock_offset_ms=float(offset),
    )
