"""``GET /metrics``: what supabase_local's Realtime counted, in Prometheus' text format.

For benches and the product's own checks: messages per second as the server counts them
for its quota (every delivery to a channel, and every broadcast sent), connections,
joins, refusals by reason, and the configured limits. Like the fault endpoint it answers
only the service role (a secret key, or the legacy service_role key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

PREFIX = "supabase_local_realtime"


class RealtimeCollector:
    def __init__(self, realtime: Any) -> None:
        self.realtime = realtime

    def collect(self) -> Iterator[Any]:
        quotas, hub = self.realtime.quotas, self.realtime.hub
        sockets = len(hub.connections) if hub is not None else 0
        channels = sum(len(conn.channels) for conn in hub.connections) if hub is not None else 0
        yield GaugeMetricFamily(f"{PREFIX}_sockets", "Open Realtime sockets.", value=sockets)
        yield GaugeMetricFamily(
            f"{PREFIX}_connections",
            "Sockets with a joined channel (what the concurrent connections quota counts).",
            value=len(quotas.counted_connections),
        )
        yield GaugeMetricFamily(f"{PREFIX}_channels", "Joined channels.", value=channels)
        yield CounterMetricFamily(
            f"{PREFIX}_messages",
            "Messages counted for the quota: deliveries to channels and broadcasts sent.",
            value=quotas.messages_total,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_messages_per_second",
            "Messages per second as the quota averages them (last 12 ticks).",
            value=quotas.messages.average,
        )
        yield CounterMetricFamily(f"{PREFIX}_joins", "Channel joins let through.",
                                  value=quotas.joins_total)  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_joins_per_second", "Joins per second, averaged.", value=quotas.joins.average
        )
        refusals = CounterMetricFamily(
            f"{PREFIX}_refusals", "Requests refused by a quota.", labels=["reason"]
        )
        for reason in ("concurrent_users", "joins_per_second", "events_per_second",
                       "payload_size"):  # fmt: skip
            refusals.add_metric([reason], quotas.refusals[reason])
        yield refusals
        limits = GaugeMetricFamily(
            f"{PREFIX}_limit", "Configured limits (absent: no quota).", labels=["name"]
        )
        configured = quotas.limits
        for name in ("max_concurrent_users", "max_events_per_second", "max_joins_per_second",
                     "max_channels_per_client", "max_payload_size_in_kb"):  # fmt: skip
            value = getattr(configured, name)
            if value is not None:
                limits.add_metric([name], value)
        yield limits


def metrics_endpoint(realtime: Any, authorize: Callable[[str], bool]) -> Any:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RealtimeCollector(realtime))

    async def endpoint(request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        token = request.headers.get("apikey") or authorization.removeprefix("Bearer ").strip()
        if not token or not authorize(token):
            return JSONResponse({"message": "metrics need the service role key"}, 401)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint
