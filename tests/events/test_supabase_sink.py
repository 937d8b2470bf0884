"""The Supabase half of the dual write, against a real supabase_local."""

import json

import pybreaker
import pytest
import redis
from django.conf import settings

from events.checksums import event_checksum
from events.models import BreakerStateChange, Delivery, Event, Route
from events.services import event_publish_batch
from events.supabase_sink import supabase_breaker, supabase_sink_flush
from events.tasks import supabase_sink_drain_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def sink(django_supabase):
    """A configured sink with a closed breaker and no faults."""
    breaker = supabase_breaker()
    breaker.close()
    django_supabase.clear_faults()
    yield django_supabase
    django_supabase.clear_faults()
    supabase_breaker().close()


def supabase_rows(server) -> dict[int, dict]:
    return {row["seq"]: row for row in server.sql("SELECT * FROM monitoring_events ORDER BY seq")}


def publish(count: int, **fields) -> list[int]:
    events = [
        {"event_type": "tool.call", "source": "svc", "payload": {"n": i}, **fields}
        for i in range(count)
    ]
    return [result.seq for result in event_publish_batch(events=events)]


def supabase_statuses(seqs) -> dict[str, int]:
    statuses: dict[str, int] = {}
    for status in Delivery.objects.filter(event_id__in=seqs, sink="supabase").values_list(
        "status", flat=True
    ):
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def assert_supabase_equals_local(server) -> None:
    remote = supabase_rows(server)
    routed = Event.objects.exclude(deliveries__sink="supabase", deliveries__status="skipped")
    local = {event.seq: event for event in routed}
    assert set(remote) == set(local), "Supabase must hold exactly the routed local events"
    for seq, event in local.items():
        row = remote[seq]
        assert (row["event_type"], row["source"], row["criticality"]) == (
            event.event_type,
            event.source,
            event.criticality,
        )
        assert row["payload"] == event.payload
        assert (row["occurred_at"], row["received_at"]) == (event.occurred_at, event.received_at)
        assert (
            row["checksum"]
            == event.checksum
            == event_checksum(
                seq=seq,
                event_type=row["event_type"],
                source=row["source"],
                criticality=row["criticality"],
                occurred_at=row["occurred_at"],
                received_at=row["received_at"],
                payload=row["payload"],
            )
        )


def test_events_published_through_the_api_appear_in_supabase_unchanged(
    client, producer_token, sink
):
    body = {
        "events": [
            {"event_type": "tool.error", "source": "api", "payload": {"error": "boom", "n": 1.5}},
            {"event_type": "cache.miss", "source": "api", "payload": {"key": "ü", "big": 10**20}},
        ]
    }
    response = client.post(
        "/api/events",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {producer_token}"},
    )
    assert response.status_code == 201

    result = supabase_sink_flush()

    assert (result.outcome, result.sent) == ("sent", 2)
    assert_supabase_equals_local(sink)
    written = Delivery.objects.filter(sink="supabase")
    assert {d.status for d in written} == {"sent"}
    assert all(d.write_latency_ms is not None and d.attempts == 1 for d in written)


def test_a_retried_batch_never_creates_a_second_row(sink):
    seqs = publish(3)
    supabase_sink_flush()
    Delivery.objects.filter(event_id__in=seqs, sink="supabase").update(status="pending")

    assert supabase_sink_flush().sent == 3
    assert len(sink.sql("SELECT seq FROM monitoring_events")) == 3
    assert_supabase_equals_local(sink)


def test_batches_follow_seq_order_and_the_configured_size(sink, settings):
    settings.SUPABASE_SINK_BATCH_SIZE = 4
    seqs = publish(10)
    first = supabase_sink_flush()
    assert first.sent == 4
    assert sorted(supabase_rows(sink)) == seqs[:4]


def test_a_flush_says_whether_it_took_a_full_batch(sink, settings):
    settings.SUPABASE_SINK_BATCH_SIZE = 4
    publish(10)

    results = [supabase_sink_flush() for _ in range(3)]

    assert [(r.sent, r.full) for r in results] == [(4, True), (4, True), (2, False)]
    assert supabase_sink_flush().outcome == "idle"


def test_rows_are_written_as_the_wire_format_spells_them(sink):
    # Timestamps of every width (a year below 1000, no microseconds, a non-UTC offset) and
    # payload values whose text differs between Python and jsonb: the rows built by the
    # claim's SQL must land in Supabase as the same events, under the same checksums.
    publish(1, occurred_at="0005-03-04T05:06:07Z", payload={"n": 1e-05, "text": 'ü\u2028"'})
    publish(1, occurred_at="9999-12-31T23:59:59.999999+00:00", payload={"big": 10**30})
    publish(
        1,
        occurred_at="2026-11-30T03:04:05.000001+05:30",
        payload={"nested": {"b": [1, 2.5, None, True], "a": {}}, "zero": -0.0},
    )

    assert supabase_sink_flush().sent == 3

    assert_supabase_equals_local(sink)
    remote = supabase_rows(sink)
    assert [row["occurred_at"].year for _, row in sorted(remote.items())] == [5, 9999, 2026]


def test_a_failed_write_backs_off_exponentially_per_delivery(sink):
    seqs = publish(2)
    sink.set_faults(rest_error_rate=1.0, rest_error_status=503)

    def backoffs() -> list[tuple[int, float]]:
        deliveries = Delivery.objects.filter(event_id__in=seqs, sink="supabase")
        assert all(d.status == "failed" and "Injected fault" in d.last_error for d in deliveries)
        return sorted(
            (d.attempts, (d.next_attempt_at - d.updated_at).total_seconds()) for d in deliveries
        )

    assert supabase_sink_flush().failed == 2
    assert backoffs() == [(1, 2.0), (1, 2.0)]
    assert supabase_sink_flush(include_failed=True).outcome == "idle"  # neither is due yet

    Delivery.objects.filter(event_id=seqs[0], sink="supabase").update(next_attempt_at=None)
    assert supabase_sink_flush(include_failed=True).failed == 1
    assert backoffs() == [(1, 2.0), (2, 4.0)]


def test_debug_and_unsampled_events_are_recorded_as_skipped_and_not_written(sink):
    route = Route.objects.get(criticality="performance")
    route.supabase_sample_percent = 0
    route.save()
    debug = publish(2, event_type="debug.trace")
    unsampled = publish(2, event_type="cache.miss")
    mirrored = publish(2)

    while supabase_sink_flush(include_failed=True).outcome == "sent":
        pass

    assert supabase_statuses(debug + unsampled) == {"skipped": 4}
    assert sorted(supabase_rows(sink)) == mirrored
    assert_supabase_equals_local(sink)


def test_an_outage_opens_the_breaker_after_three_failures_and_nothing_is_lost(
    client, producer_token, sink, settings, django_capture_on_commit_callbacks
):
    # given Supabase's REST API failing every request, while events keep coming
    sink.set_faults(rest_error_rate=1.0, rest_error_status=503)
    before_outage: list[int] = []
    outcomes = []
    for _ in range(3):
        before_outage += publish(2)
        # State changes are recorded once the flush's transaction commits.
        with django_capture_on_commit_callbacks(execute=True):
            outcomes.append(supabase_sink_flush(include_failed=True).outcome)

    # when three flushes have failed
    assert outcomes == ["failed", "failed", "failed"]

    # then the breaker is open, recorded, and no further write is attempted
    assert supabase_breaker().current_state == pybreaker.STATE_OPEN
    change = BreakerStateChange.objects.get(new_state="open")
    assert change.old_state == "closed" and "Injected fault" in change.last_error
    attempts = list(Delivery.objects.filter(sink="supabase").values_list("attempts", flat=True))
    assert supabase_sink_flush(include_failed=True).outcome == "breaker_open"
    assert (
        list(Delivery.objects.filter(sink="supabase").values_list("attempts", flat=True))
        == attempts
    )

    # and publishing still works: the event is stored, its delivery waits
    response = client.post(
        "/api/events",
        data=json.dumps({"event_type": "a", "source": "s"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {producer_token}"},
    )
    assert response.status_code == 201
    during_outage = response.json()["seq"]
    assert supabase_statuses([during_outage]) == {"pending": 1}

    # when the faults clear and the breaker's open time has passed
    sink.clear_faults()
    settings.SUPABASE_BREAKER_RESET_SECONDS = 0
    Delivery.objects.filter(status="failed").update(next_attempt_at=None)
    with django_capture_on_commit_callbacks(execute=True):
        result = supabase_sink_drain_task()

    # then the drain brings Supabase to exactly the local log
    assert result["sent"] == len(before_outage) + 1
    assert supabase_breaker().current_state == pybreaker.STATE_CLOSED
    assert BreakerStateChange.objects.filter(new_state="closed").exists()
    assert_supabase_equals_local(sink)


def test_a_row_supabase_refuses_does_not_block_the_others(sink):
    seqs = publish(3)
    # A criticality the Supabase table's CHECK constraint refuses (23514, a client error).
    Event.objects.filter(seq=seqs[1]).update(criticality="bogus")

    result = supabase_sink_flush()

    assert (result.sent, result.failed) == (2, 1)
    assert sorted(supabase_rows(sink)) == [seqs[0], seqs[2]]
    bad = Delivery.objects.get(event_id=seqs[1], sink="supabase")
    assert bad.status == "failed" and "23514" in bad.last_error
    assert supabase_breaker().current_state == pybreaker.STATE_CLOSED


def test_without_supabase_settings_nothing_is_attempted(settings):
    settings.SUPABASE_URL = ""
    publish(1)
    assert supabase_sink_flush().outcome == "not_configured"
    assert supabase_statuses(Event.objects.values_list("seq", flat=True)) == {"pending": 1}


def test_a_burst_of_publishes_queues_one_flush_task(django_capture_on_commit_callbacks):
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete("celery", f"{settings.SUPABASE_BREAKER_NAMESPACE}:flush-queued")
    with django_capture_on_commit_callbacks(execute=True):
        publish(1)
    for _ in range(9):
        with django_capture_on_commit_callbacks(execute=True):
            publish(1)
    assert client.llen("celery") == 1
