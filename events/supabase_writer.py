"""The Supabase hop without the queue wait: a writer thread in the publishing process.

After an event commits, the process that published it wakes its writer, which writes the
pending Supabase deliveries at once with the sink's own batch write
(``supabase_sink_flush``: claim with ``SKIP LOCKED``, upsert on seq ignoring rows already
there, mark sent, all in one transaction) instead of waiting for a Celery worker to take a
queued task. The Celery flush, queued with a short countdown as a safety net, and the
beat drain write whatever the writer misses (its process dies, the breaker is open, an
error): the delivery ledger stays the truth, so nothing is lost and nothing duplicated.

One writer thread per process, started on first use; ``SUPABASE_SINK_IN_PROCESS`` turns it
off (the test settings do, except in the real processes the slow suites start).
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


class SupabaseWriter:
    def __init__(self) -> None:
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start the thread now (it builds the Supabase client before it waits)."""
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="supabase-writer", daemon=True
                    )
                    self._thread.start()

    def wake(self) -> None:
        """Write what is pending, soon, in this process (never blocks the caller)."""
        self.start()
        self._wake.set()

    def _run(self) -> None:
        from events.supabase_client import service_client, supabase_configured
        from events.supabase_sink import supabase_sink_flush

        # Building the official client takes tens of milliseconds: done here, before the
        # first event, it is not added to that event's way to Supabase.
        try:
            if supabase_configured():
                service_client()
        except Exception:
            logger.warning("could not build the Supabase client ahead of the first write")
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                # Until a flush takes less than a full batch: it then saw everything
                # committed before it began, and what commits meanwhile wakes us again
                # (the wake is cleared before the flush), so one more look, which would
                # find nothing, is not needed.
                while (result := supabase_sink_flush()).outcome == "sent" and result.full:
                    pass
            except Exception:
                logger.exception("in-process Supabase write failed (the Celery flush will)")
                connection.close()  # a broken connection is not reused


_writer = SupabaseWriter()


def supabase_writer_enabled() -> bool:
    return bool(getattr(settings, "SUPABASE_SINK_IN_PROCESS", False))


def supabase_writer_wake() -> None:
    _writer.wake()


def supabase_writer_start() -> None:
    """In a server process, at start: the writer thread and its client, ready before the
    first event (``monitor_project/asgi.py``)."""
    if supabase_writer_enabled():
        _writer.start()
