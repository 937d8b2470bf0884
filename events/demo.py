"""Realistic monitoring events for demos, load and the dev stack's producer."""

import random
from typing import Any

TOOLS = ["search", "read_file", "write_file", "run_tests", "http_get", "sql_query", "summarise"]
SERVICES = ["api-gateway", "billing", "search-indexer", "auth", "ingest-worker", "web-frontend"]
ENDPOINTS = ["/v1/orders", "/v1/users/me", "/v1/search", "/healthz", "/v1/invoices"]


def demo_event(
    rng: random.Random, *, event_type: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """One plausible event: mostly tool calls and latencies, some sessions and health
    checks, a few errors and timeouts."""
    service = source or rng.choice(SERVICES)
    roll = rng.random()
    if event_type is not None:
        kind, payload = event_type, {"value": round(rng.uniform(0, 100), 3)}
    elif roll < 0.30:
        tool = rng.choice(TOOLS)
        kind = "tool.call"
        payload = {
            "tool": tool,
            "duration_ms": round(rng.lognormvariate(3.5, 0.8), 1),
            "ok": True,
            "request_id": f"req-{rng.getrandbits(40):010x}",
        }
    elif roll < 0.55:
        kind = "http.latency"
        payload = {
            "endpoint": rng.choice(ENDPOINTS),
            "p95_ms": round(rng.lognormvariate(4, 0.5), 1),
            "status": rng.choice([200, 200, 200, 201, 204, 304]),
        }
    elif roll < 0.68:
        kind = "cache.hit_ratio"
        payload = {
            "cache": rng.choice(["redis", "cdn", "query"]),
            "ratio": round(rng.uniform(0.6, 0.99), 3),
        }
    elif roll < 0.80:
        kind = rng.choice(["session.started", "session.ended", "user.login"])
        payload = {"user_id": rng.randint(1, 5000), "client": rng.choice(["web", "ios", "android"])}
    elif roll < 0.90:
        kind = "health.check"
        payload = {"component": rng.choice(["db", "redis", "queue", "disk"]), "healthy": True}
    elif roll < 0.97:
        kind = rng.choice(["tool.error", "http.timeout", "job.failed"])
        payload = {
            "error": rng.choice(["ECONNRESET", "deadline exceeded", "HTTP 502", "OOMKilled"]),
            "attempt": rng.randint(1, 3),
        }
    else:
        kind = "debug.trace"
        payload = {"span": f"{rng.getrandbits(32):08x}", "note": "sampled trace"}
    return {"event_type": kind, "source": service, "payload": payload}
