"""The Supabase writer as a process of its own (``manage.py supabase_writer``): the
delivery ledger's trigger notifies each commit that creates Supabase deliveries, and the
listening writer writes them with no wake from the publishing process and no Celery
worker; a lost listening connection is reopened, and what committed meanwhile written."""

import contextlib
import threading

import pytest
import redis
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from events.models import Delivery
from events.services import event_publish_batch
from events.supabase_sink import supabase_breaker
from events.supabase_writer import PENDING_CHANNEL, supabase_writer_listen
from tests.fixtures.database import other_connection
from tests.fixtures.django_processes import (
    process_environment,
    running_process,
    stop_process,
    supabase_writer_argv,
    supabase_writer_environment,
    wait_until,
)
from tests.fixtures.integrity import assert_supabase_copy_matches_log, supabase_deliveries_sent

pytestmark = pytest.mark.django_db(transaction=True)


def _publish(count: int, *, event_type: str = "tool.call") -> list[int]:
    events = [{"event_type": event_type, "source": "w", "payload": {"i": i}} for i in range(count)]
    return [result.seq for result in event_publish_batch(events=events)]


@contextlib.contextmanager
def _listening():
    with other_connection() as listener:
        listener.execute(f"LISTEN {PENDING_CHANNEL}")
        yield listener


def _listening_backends() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            # This test database only: a dev stack or a bench may listen on the same server.
            "SELECT pid FROM pg_stat_activity WHERE query = %s AND pid <> pg_backend_pid()"
            " AND datname = current_database()",
            [f"LISTEN {PENDING_CHANNEL}"],
        )
        return [pid for (pid,) in cursor.fetchall()]


@contextlib.contextmanager
def _writer_listening():
    stop = threading.Event()
    writer = threading.Thread(target=supabase_writer_listen, kwargs={"stop": stop}, daemon=True)
    writer.start()
    try:
        wait_until(lambda: _listening_backends(), timeout=10, what="the writer to listen")
        yield
    finally:
        stop.set()
        writer.join(10)
    assert not writer.is_alive(), "the writer did not stop when asked"


@pytest.fixture
def no_other_writer(settings):
    # Neither this process's writer thread nor a Celery flush: only the listener writes.
    settings.SUPABASE_SINK_IN_PROCESS = False
    settings.SUPABASE_WRITER_PROCESS = True
    supabase_breaker().close()
    redis.Redis.from_url(settings.REDIS_URL).delete(
        "celery", f"{settings.SUPABASE_BREAKER_NAMESPACE}:flush-queued"
    )


def test_a_commit_that_creates_supabase_deliveries_notifies_once():
    with _listening() as listener:
        _publish(3)
        notifications = list(listener.notifies(timeout=1))

    assert [n.channel for n in notifications] == [PENDING_CHANNEL]


def test_legacy_only_events_and_rolled_back_ones_notify_nothing():
    with _listening() as listener:
        _publish(2, event_type="debug.trace")  # routed to the legacy feed only
        with contextlib.suppress(RuntimeError), transaction.atomic():
            _publish(2)
            raise RuntimeError("the producer's transaction fails after the insert")
        notifications = list(listener.notifies(timeout=0.5))

    assert notifications == []
    # The legacy-only events' Supabase deliveries are recorded as skipped, none pending.
    assert set(Delivery.objects.filter(sink="supabase").values_list("status", flat=True)) == {
        "skipped"
    }


def test_the_listening_writer_writes_each_commit_without_a_wake_or_a_worker(
    django_supabase, no_other_writer, settings
):
    with _writer_listening():
        first = _publish(5)
        wait_until(
            lambda: supabase_deliveries_sent(first), timeout=10, what="the first commit written"
        )
        second = _publish(2)
        wait_until(
            lambda: supabase_deliveries_sent(second), timeout=10, what="the second commit written"
        )

    assert_supabase_copy_matches_log(django_supabase, seqs=first + second)
    # The safety net was queued with its countdown, not left to do the writing.
    assert redis.Redis.from_url(settings.REDIS_URL).llen("celery") == 1


def test_what_committed_before_the_writer_listened_is_written_when_it_starts(
    django_supabase, no_other_writer
):
    seqs = _publish(3)

    with _writer_listening():
        wait_until(lambda: supabase_deliveries_sent(seqs), timeout=10, what="the backlog written")

    assert_supabase_copy_matches_log(django_supabase, seqs=seqs)


def test_a_lost_listening_connection_is_reopened_and_nothing_is_missed(
    django_supabase, no_other_writer
):
    with _writer_listening():
        [listening] = _listening_backends()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [listening])
        # Committed while nobody listens (or just after): written once it listens again.
        seqs = _publish(3)
        wait_until(
            lambda: supabase_deliveries_sent(seqs), timeout=15, what="the writer to catch up"
        )
        wait_until(
            lambda: _listening_backends() not in ([], [listening]),
            timeout=10, what="a new listening connection",
        )  # fmt: skip

    assert_supabase_copy_matches_log(django_supabase, seqs=seqs)


def test_the_command_refuses_to_start_without_supabase(settings):
    settings.SUPABASE_URL = ""

    with pytest.raises(CommandError, match="Supabase is not configured"):
        call_command("supabase_writer")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_command_writes_as_events_commit_and_stops_on_sigterm(
    django_supabase, no_other_writer, tmp_path
):
    env = process_environment(**supabase_writer_environment("process"))
    log_path = tmp_path / "supabase-writer.log"
    with running_process(supabase_writer_argv(), env=env, log_path=log_path) as writer:
        wait_until(lambda: _listening_backends(), timeout=30, what="the command to listen")
        seqs = _publish(4)
        wait_until(lambda: supabase_deliveries_sent(seqs), timeout=10, what="the events written")

        stop_process(writer)  # SIGTERM, as a supervisor stops it; SIGKILL after 10 s

    assert writer.returncode == 0, log_path.read_text()
    assert "supabase writer: stopped" in log_path.read_text()
    assert_supabase_copy_matches_log(django_supabase, seqs=seqs)
