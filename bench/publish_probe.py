"""Run the product's ASGI server with timers around the publish path (for bench/publish.py).

    python bench/publish_probe.py daphne|uvicorn PORT

The application is the product's own (``monitor_project.asgi``); this module only wraps
functions on the path of ``POST /api/events`` with wall-clock timers, in this process,
and writes per-request spans to ``$PUBLISH_PROBE_OUT`` (JSON) when the server stops. It
is a measuring instrument for the bench: nothing in the product imports it.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "monitor_project.settings.base")

import django  # noqa: E402

django.setup()

# One dict per request: span name -> seconds spent in it during that request.
_requests: list[dict[str, float]] = []
_current: dict[str, float] = {}
_lock = threading.Lock()


def _add(name: str, seconds: float) -> None:
    # Only the request's own work: the in-process Supabase writer's thread commits and
    # updates concurrently, and its time is not the request's.
    if threading.current_thread().name == "supabase-writer":
        return
    with _lock:
        _current[name] = _current.get(name, 0.0) + seconds


def timed(name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _add(name, time.perf_counter() - started)

    return wrapper


def timed_async(name: str, function):
    @functools.wraps(function)
    async def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            _add(name, time.perf_counter() - started)

    return wrapper


def patch(module, attribute: str, name: str) -> None:
    setattr(module, attribute, timed(name, getattr(module, attribute)))


def _install() -> None:
    from asgiref.sync import async_to_sync
    from django.core.handlers import base
    from django.db.backends.base import base as db_base

    from events import api, services, sink_scheduling, sinks

    patch(api, "_bearer_producer", "auth (producer token)")
    patch(api, "rate_limit_wait", "rate limit (Redis)")
    patch(api, "_parse_json_body", "body parsing (JSON)")
    patch(services, "_coerce_inputs", "validation")
    patch(services, "routing_table", "routing table")
    patch(services, "event_publish_batch", "publish (transaction + after-commit)")
    patch(services, "_seq_counter_lock", "  seq counter lock")
    for name, label in (
        ("_insert_events", "  insert events"),  # before: one statement per table
        ("_insert_deliveries", "  insert deliveries"),
        ("_insert_rows", "  insert events + deliveries + counter"),  # after: one statement
        ("_insert_counted", "  one statement: counter, events, deliveries (autocommit)"),
    ):
        if hasattr(services, name):
            patch(services, name, label)
    patch(sinks, "websocket_sink_send", "  after commit: websocket sink")
    sinks.async_to_sync = lambda function: timed(
        "    channel-layer send (hop to the event loop + Redis)", async_to_sync(function)
    )
    from django.db.models.query import QuerySet

    patch(QuerySet, "update", "    ORM update")
    patch(sink_scheduling, "flush_schedule", "  after commit: Supabase hand-off")
    patch(db_base.BaseDatabaseWrapper, "connect", "database connect")
    patch(db_base.BaseDatabaseWrapper, "close_if_unusable_or_obsolete", "connection check")
    patch(db_base.BaseDatabaseWrapper, "commit", "  commit")
    # Django's own ASGI handler (before monitor_project/asgi_http.py) took the async path.
    base.BaseHandler.get_response_async = timed_async(
        "Django middleware + view (async chain)", base.BaseHandler.get_response_async
    )
    patch(base.BaseHandler, "get_response", "Django middleware + view (in a worker thread)")
    patch(api, "events_collection", "  view function")


_install()
if os.environ.get("PROBE_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["PROBE_SWITCH_INTERVAL"]))

from monitor_project.asgi import application as _product  # noqa: E402


async def application(scope, receive, send):
    if scope["type"] != "http" or scope.get("path") != "/api/events":
        return await _product(scope, receive, send)
    started = time.perf_counter()

    async def timed_send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"):
            _add("ASGI application (request in to response out)", time.perf_counter() - started)
            with _lock:
                _requests.append(dict(_current))
                _current.clear()
        await send(message)

    return await _product(scope, receive, timed_send)


def _dump() -> None:
    out = os.environ.get("PUBLISH_PROBE_OUT")
    if out:
        Path(out).write_text(json.dumps(_requests))


atexit.register(_dump)


def main() -> None:
    server, port = sys.argv[1], sys.argv[2]
    # The servers import the application by name: let them find this very module, not a
    # second copy with timers of its own.
    sys.modules["publish_probe"] = sys.modules[__name__]
    if server == "daphne":
        from daphne.cli import CommandLineInterface

        CommandLineInterface().run(["-b", "127.0.0.1", "-p", port, "publish_probe:application"])
    elif server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "publish_probe:application", host="127.0.0.1", port=int(port), log_level="warning",
            lifespan="off",
        )  # fmt: skip
    else:
        raise SystemExit(f"unknown server {server!r}")


if __name__ == "__main__":
    main()
