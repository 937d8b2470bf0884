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

The same writer can instead run as a process of its own, ``manage.py supabase_writer``
(``supabase_writer_listen``): it listens for the notification the delivery ledger's
trigger sends at each commit that creates Supabase deliveries
(events/migrations/0007_supabase_pending_notify.py), so it starts as soon as the event
commits, from whichever process, and its work no longer shares the web process's
interpreter (its GIL) with the requests and the legacy fan-out (docs/latency.md, "The
Supabase writer in a process of its own").
"""

from __future__ import annotations

import logging
import threading

import psycopg
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

# The channel the ledger's trigger notifies (events/migrations/0007_supabase_pending_notify).
PENDING_CHANNEL = "monitor_supabase_pending"
# How often a waiting listener looks at its stop flag, and waits before reconnecting.
LISTEN_CHECK_SECONDS = 1.0
LISTEN_RECONNECT_SECONDS = 1.0
# What every process of a deployment that runs ``manage.py supabase_writer`` is given: the
# web processes leave the writing to it, and the Celery flush waits for it.
WRITER_PROCESS_ENVIRONMENT = {
    "SUPABASE_SINK_IN_PROCESS": "false",
    "SUPABASE_WRITER_PROCESS": "true",
}


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
        _client_build()
        while True:
            self._wake.wait()
            self._wake.clear()
            # The wake is cleared before the write: what commits meanwhile wakes us again.
            _pending_write()


def _client_build() -> None:
    """Building the official client takes tens of milliseconds: done before the first
    event, it is not added to that event's way to Supabase."""
    from events.supabase_client import service_client, supabase_configured

    try:
        if supabase_configured():
            service_client()
    except Exception:
        logger.warning("could not build the Supabase client ahead of the first write")


def _pending_write() -> None:
    """Write what is pending, never raising: what fails stays pending for the Celery
    flush and the drain."""
    from events.supabase_sink import supabase_sink_flush

    try:
        # Until a flush takes less than a full batch: it then saw everything committed
        # before it began, and what commits later notifies (or wakes) the writer again,
        # so one more look, which would find nothing, is not needed.
        while (result := supabase_sink_flush()).outcome == "sent" and result.full:
            pass
    except Exception:
        logger.exception("Supabase write failed (the Celery flush will)")
        connection.close()  # a broken connection is not reused


def supabase_writer_listen(*, stop: threading.Event) -> None:
    """The writer as a process of its own, until ``stop`` is set: write what is pending
    at each commit the ledger's trigger notifies, and once on every (re)connection for
    what committed while nobody listened."""
    _client_build()
    try:
        _listen(stop)
    finally:
        connection.close()  # this thread's own, for the writes


def _listen(stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            listener = psycopg.connect(**connection.get_connection_params(), autocommit=True)
        except psycopg.Error as exc:
            logger.warning("supabase writer: cannot connect to listen (%s); retrying", exc)
            stop.wait(LISTEN_RECONNECT_SECONDS)
            continue
        try:
            with listener:
                listener.execute(f"LISTEN {PENDING_CHANNEL}")
                _pending_write()
                while not stop.is_set():
                    if _notified(listener, timeout=LISTEN_CHECK_SECONDS):
                        # Commits notified meanwhile are covered by the write below.
                        while _notified(listener, timeout=0):
                            pass
                        _pending_write()
        except psycopg.Error as exc:
            logger.warning("supabase writer: the listening connection failed (%s)", exc)
            stop.wait(LISTEN_RECONNECT_SECONDS)


def _notified(listener: psycopg.Connection, *, timeout: float) -> bool:
    return any(True for _ in listener.notifies(timeout=timeout, stop_after=1))


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
