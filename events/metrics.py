"""Sink metrics: a selector for the rollout panel and the Prometheus exposition.

Counts come from the deliveries table, so every process reports the same figures;
they are cached briefly because counting a large table on every scrape is wasteful.
"""

from dataclasses import dataclass, field

from django.core.cache import cache
from django.db import connection
from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from events.models import Delivery, Sink

CACHE_KEY = "events:sink-metrics"
CACHE_SECONDS = 10
LATENCY_WINDOW = 1000  # the most recent writes that latency percentiles are taken over
BREAKER_STATES = ("closed", "half-open", "open")


@dataclass(frozen=True)
class SinkMetrics:
    sink: str
    by_status: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # p50, p95, p99

    @property
    def written(self) -> int:
        return self.by_status.get("sent", 0)


def _latency_percentiles(sink: str) -> dict[str, float | None]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms)
            FROM (
                SELECT write_latency_ms AS ms FROM {Delivery._meta.db_table}
                WHERE sink = %s AND status = 'sent' AND write_latency_ms IS NOT NULL
                ORDER BY id DESC LIMIT %s
            ) AS recent
            """,
            [sink, LATENCY_WINDOW],
        )
        values = cursor.fetchone()[0] or [None, None, None]
    return dict(zip(("p50", "p95", "p99"), values, strict=True))


def sink_metrics(*, use_cache: bool = True) -> dict[str, SinkMetrics]:
    if use_cache and (cached := cache.get(CACHE_KEY)) is not None:
        return cached
    counts: dict[str, dict[str, int]] = {sink: {} for sink in Sink.values}
    for row in Delivery.objects.values("sink", "status").annotate(n=Count("id")):
        counts.setdefault(row["sink"], {})[row["status"]] = row["n"]
    metrics = {
        sink: SinkMetrics(sink=sink, by_status=counts[sink], latency_ms=_latency_percentiles(sink))
        for sink in Sink.values
    }
    cache.set(CACHE_KEY, metrics, CACHE_SECONDS)
    return metrics


class _SinkCollector(Collector):
    def collect(self):
        from events.supabase_sink import supabase_breaker_state

        metrics = sink_metrics()
        deliveries = GaugeMetricFamily(
            "monitor_sink_deliveries", "Deliveries by sink and status", labels=["sink", "status"]
        )
        written = CounterMetricFamily(
            "monitor_sink_written", "Events written by each sink", labels=["sink"]
        )
        latency = GaugeMetricFamily(
            "monitor_sink_write_latency_ms",
            f"Write latency percentiles over the last {LATENCY_WINDOW} writes",
            labels=["sink", "quantile"],
        )
        for sink, figures in metrics.items():
            for status in ("pending", "sent", "failed", "skipped"):
                deliveries.add_metric([sink, status], figures.by_status.get(status, 0))
            written.add_metric([sink], figures.written)
            for name, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
                value = figures.latency_ms.get(name)
                if value is not None:
                    latency.add_metric([sink, quantile], value)
        breaker = GaugeMetricFamily(
            "monitor_supabase_breaker_state", "1 for the breaker's current state", labels=["state"]
        )
        current = supabase_breaker_state()
        for state in BREAKER_STATES:
            breaker.add_metric([state], 1.0 if state == current else 0.0)
        yield from (deliveries, written, latency, breaker)


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SinkCollector())
    return registry
