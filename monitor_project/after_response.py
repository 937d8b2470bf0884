"""Work a request has made certain of, done after its answer has left.

Once a publish has committed, the event is durable: the producer's answer (201 and the
seq) need not wait for the fan-out, i.e. the channel-layer send with its ledger mark and
waking the Supabase writer (~2-3 ms of a publish request, docs/latency.md). The HTTP
handler (monitor_project/asgi_http.py) collects such work while a request runs and does
it right after the response is sent, in the same worker thread hop as the request's own
clean-up. Anywhere else (Celery tasks, commands, the test client, a WebSocket consumer)
there is no collector and the work runs at once, as before.

Nothing depends on this work happening for correctness: a process that dies between the
answer and the fan-out leaves the websocket deliveries pending and the Supabase ones
pending in the ledger; the feed hub's check against the log and the Supabase drain
deliver them (docs/architecture.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

_local = threading.local()


def after_response(work: Callable[[], None]) -> None:
    """Run ``work`` once the current HTTP answer has been sent, or now if there is none."""
    collected: list[Callable[[], None]] | None = getattr(_local, "collected", None)
    if collected is None:
        work()
    else:
        collected.append(work)


def collecting_start() -> None:
    """From here on, in this thread, ``after_response`` collects instead of running."""
    _local.collected = []


def collecting_stop() -> list[Callable[[], None]]:
    """Stop collecting in this thread and return what was collected, in order."""
    collected = getattr(_local, "collected", None) or []
    _local.collected = None
    return collected


def collected_run(collected: list[Callable[[], None]]) -> None:
    """Run collected work in order; one failing piece does not stop the others."""
    for work in collected:
        try:
            work()
        except Exception:
            logger.exception("work after the response failed")
