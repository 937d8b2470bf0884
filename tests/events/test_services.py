"""event_publish: one transaction, gapless seqs, checksums, deliveries, idempotency."""

import threading

import pytest
from django.db import connection, transaction

from events.checksums import event_checksum_of
from events.models import Delivery, Event, Route, SeqCounter
from events.services import IdempotencyConflict, event_publish, event_publish_batch
from events.validation import EventInputError
from tests.fixtures.threads import run_together

pytestmark = pytest.mark.django_db


def stored_checksum_is_valid(event: Event) -> bool:
    event.refresh_from_db()
    return event.checksum == event_checksum_of(event)


def deliveries(seq: int) -> dict[str, str]:
    return dict(Delivery.objects.filter(event_id=seq).values_list("sink", "status"))


def test_publish_stores_the_event_once_with_seq_and_checksum(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = event_publish(event_type="tool.error", source="worker-1", payload={"code": 7})
    event = Event.objects.get(seq=result.seq)
    assert (event.event_type, event.source, event.criticality) == (
        "tool.error",
        "worker-1",
        "critical",
    )
    assert event.payload == {"code": 7}
    assert event.occurred_at == event.received_at
    assert stored_checksum_is_valid(event)
    assert deliveries(result.seq) == {"websocket": "sent", "supabase": "pending"}


def test_payload_read_back_from_postgres_still_matches_its_checksum():
    result = event_publish(
        event_type="a", source="s", payload={"big": 1e16, "huge": 1.5e300, "tiny": 1e-7, "é": "ü"}
    )
    assert stored_checksum_is_valid(Event.objects.get(seq=result.seq))


def test_seqs_are_consecutive_and_start_after_the_counter():
    start = SeqCounter.objects.get().last_seq
    results = event_publish_batch(
        events=[{"event_type": "a", "source": "s"}, {"event_type": "b", "source": "s"}]
    )
    assert [r.seq for r in results] == [start + 1, start + 2]
    assert SeqCounter.objects.get().last_seq == start + 2


def test_a_bad_event_in_a_batch_stores_nothing():
    before = (Event.objects.count(), SeqCounter.objects.get().last_seq)
    with pytest.raises(EventInputError) as caught:
        event_publish_batch(
            events=[{"event_type": "a", "source": "s"}, {"event_type": "BAD", "source": "s"}]
        )
    assert caught.value.field == "events[1].event_type"
    assert (Event.objects.count(), SeqCounter.objects.get().last_seq) == before


def test_a_rolled_back_publish_gives_its_seq_back():
    start = SeqCounter.objects.get().last_seq
    with pytest.raises(RuntimeError), transaction.atomic():
        event_publish(event_type="a", source="s")
        raise RuntimeError("caller failed after publishing")
    assert event_publish(event_type="a", source="s").seq == start + 1


def test_idempotency_key_returns_the_first_event():
    first = event_publish(event_type="a", source="s", payload={"n": 1}, idempotency_key="k-1")
    again = event_publish(event_type="a", source="s", payload={"n": 1}, idempotency_key="k-1")
    assert (again.seq, again.duplicate) == (first.seq, True)
    assert Event.objects.filter(idempotency_key="k-1").count() == 1


def test_idempotency_key_is_per_producer():
    from events.services import producer_create

    one, two = producer_create(name="one").producer, producer_create(name="two").producer
    a = event_publish(event_type="a", source="s", idempotency_key="k", producer=one)
    b = event_publish(event_type="a", source="s", idempotency_key="k", producer=two)
    assert a.seq != b.seq and not b.duplicate


def test_reusing_a_key_for_other_content_is_a_conflict_and_writes_nothing():
    event_publish(event_type="a", source="s", payload={"n": 1}, idempotency_key="k-2")
    count = Event.objects.count()
    with pytest.raises(IdempotencyConflict):
        event_publish_batch(
            events=[
                {"event_type": "fresh", "source": "s"},
                {"event_type": "a", "source": "s", "payload": {"n": 2}, "idempotency_key": "k-2"},
            ]
        )
    assert Event.objects.count() == count


def test_a_key_repeated_inside_one_batch_is_stored_once():
    results = event_publish_batch(
        events=[
            {"event_type": "a", "source": "s", "idempotency_key": "same"},
            {"event_type": "a", "source": "s", "idempotency_key": "same"},
        ]
    )
    assert results[0].seq == results[1].seq
    assert [r.duplicate for r in results] == [False, True]


def test_debug_events_are_not_mirrored_to_supabase_by_default():
    result = event_publish(event_type="debug.trace", source="s")
    assert deliveries(result.seq)["supabase"] == "skipped"


def test_a_route_change_applies_without_a_restart():
    Route.objects.filter(criticality="system").update(to_websocket=False)
    Route.objects.get(criticality="system").save()  # what the admin does: save() fires signals
    result = event_publish(event_type="health.check", source="s")
    assert deliveries(result.seq) == {"websocket": "skipped", "supabase": "pending"}


def test_sampling_mirrors_the_configured_share_to_supabase():
    route = Route.objects.get(criticality="performance")
    route.supabase_sample_percent = 50
    route.save()
    results = event_publish_batch(
        events=[{"event_type": "cache.miss", "source": "s"} for _ in range(400)]
    )
    statuses = Delivery.objects.filter(
        event_id__in=[r.seq for r in results], sink="supabase"
    ).values_list("status", flat=True)
    mirrored = sum(1 for status in statuses if status == "pending")
    assert 140 <= mirrored <= 260  # 50 % of 400, by a stable hash of seq
    assert {"pending", "skipped"} == set(statuses)


@pytest.mark.django_db(transaction=True)
def test_a_publisher_waits_for_an_earlier_one_to_commit():
    """Seq order is commit order: B cannot take a seq while A's transaction is open."""
    a_published = threading.Event()
    a_may_commit = threading.Event()
    results: dict[str, int] = {}

    def publisher_a() -> None:
        with transaction.atomic():
            results["a"] = event_publish(event_type="a", source="s").seq
            a_published.set()
            a_may_commit.wait(timeout=30)
        connection.close()

    def publisher_b() -> None:
        results["b"] = event_publish(event_type="b", source="s").seq
        connection.close()

    thread_a = threading.Thread(target=publisher_a)
    thread_a.start()
    assert a_published.wait(timeout=30)
    thread_b = threading.Thread(target=publisher_b)
    thread_b.start()
    # B is blocked on A's row lock of the seq counter, as PostgreSQL reports it.
    with connection.cursor() as cursor:
        for _ in range(300):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE '%%events_seqcounter%%'"
            )
            if cursor.fetchone()[0] == 1:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("publisher B never waited for the seq counter lock")
    assert "b" not in results
    a_may_commit.set()
    thread_a.join(timeout=30)
    thread_b.join(timeout=30)
    assert results["b"] == results["a"] + 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_take_consecutive_seq_ranges_with_no_gap():
    """Batches written as one multi-row statement each, from several threads at once: every
    batch gets one unbroken run of seqs, the runs tile 1..N with no gap or overlap, a batch
    refused part-way (idempotency conflict) gives its seqs back, and every stored event has
    its checksum and one delivery per sink."""
    start = SeqCounter.objects.get_or_create(pk=1)[0].last_seq
    event_publish(event_type="seed", source="s", idempotency_key="taken")
    batches: list[list[int]] = []
    refused: list[int] = []
    lock = threading.Lock()

    def publisher(worker: int) -> None:
        for round_ in range(4):
            batch = [
                {"event_type": "load", "source": f"w{worker}", "payload": {"r": round_, "i": i}}
                for i in range(50)
            ]
            if round_ == 2:  # this batch reuses a key for other content: nothing stored
                batch[25]["idempotency_key"] = "taken"
            try:
                results = event_publish_batch(events=batch)
            except IdempotencyConflict:
                with lock:
                    refused.append(worker)
                continue
            with lock:
                batches.append([r.seq for r in results])
        connection.close()

    threads = [threading.Thread(target=publisher, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(refused) == [0, 1, 2, 3]
    assert len(batches) == 12
    for seqs in batches:
        assert seqs == list(range(seqs[0], seqs[0] + 50))
    stored = list(Event.objects.filter(seq__gt=start + 1).values_list("seq", flat=True))
    assert stored == list(range(start + 2, start + 2 + 12 * 50))
    assert sorted(seq for seqs in batches for seq in seqs) == stored
    assert SeqCounter.objects.get().last_seq == stored[-1]
    assert Delivery.objects.filter(event_id__in=stored).count() == 2 * len(stored)
    sample = Event.objects.get(seq=stored[len(stored) // 2])
    assert stored_checksum_is_valid(sample)


# --- The one-statement publish (outside a transaction: one round trip) -------------------

TRICKY_PAYLOADS = [
    {},
    {"code": 7, "nested": {"b": [1, 2.5, None, True], "a": "x"}},
    {"tiny": 1e-05, "big": 1e16, "huge": 1.5e300, "neg": -0.0, "int": 2**62},
    {"é": "ü", "emoji": "🛰", "quote": 'say "hi"', "back": "a\\b"},
    {"lookalike": ',"seq":0,"source":"', "seq": 0, "source": "payload"},
]


@pytest.mark.django_db(transaction=True)
def test_a_publish_outside_a_transaction_is_one_statement(settings):
    from django.test.utils import CaptureQueriesContext

    from monitor_project import after_response

    settings.EVENTS_RULES_CACHE_SECONDS = 60  # as in production: the routing table is cached
    SeqCounter.objects.get_or_create(pk=1)
    event_publish(event_type="warm", source="s")
    after_response.collecting_start()  # the fan-out waits, as for an HTTP answer
    try:
        with CaptureQueriesContext(connection) as queries:
            result = event_publish(event_type="tool.error", source="s", payload={"n": 1})
    finally:
        after_response.collecting_stop()
    assert len(queries.captured_queries) == 1, [q["sql"][:80] for q in queries]
    event = Event.objects.get(seq=result.seq)
    assert stored_checksum_is_valid(event)
    assert deliveries(result.seq) == {"websocket": "pending", "supabase": "pending"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("inside_a_transaction", [False, True])
def test_checksums_finished_by_postgresql_are_the_canonical_ones(inside_a_transaction):
    SeqCounter.objects.get_or_create(pk=1)
    batch = [
        {"event_type": "a.b", "source": source, "payload": payload}
        for payload in TRICKY_PAYLOADS
        for source in ("s", ',"seq":0,"source":"x', "ß")
    ]
    if inside_a_transaction:
        with transaction.atomic():
            results = event_publish_batch(events=batch)
    else:
        results = event_publish_batch(events=batch)
    returned = {r.seq: r.event.checksum for r in results}
    for event in Event.objects.filter(seq__in=returned):
        assert event.checksum == event_checksum_of(event) == returned[event.seq]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_used_key_is_a_duplicate_or_a_conflict():
    from events.services import producer_create

    SeqCounter.objects.get_or_create(pk=1)
    producer = producer_create(name="retrying").producer
    first = event_publish(event_type="a", source="s", idempotency_key="k", producer=producer)
    again = event_publish(event_type="a", source="s", idempotency_key="k", producer=producer)
    assert (again.seq, again.duplicate) == (first.seq, True)
    with pytest.raises(IdempotencyConflict):
        event_publish(
            event_type="a", source="s", payload={"n": 2}, idempotency_key="k", producer=producer
        )
    assert Event.objects.count() == 1
    assert SeqCounter.objects.get().last_seq == first.seq


@pytest.mark.django_db(transaction=True)
def test_publishers_racing_with_the_same_keys_store_each_key_once():
    from events.services import producer_create

    start = SeqCounter.objects.get_or_create(pk=1)[0].last_seq
    producer = producer_create(name="racing").producer
    answers: dict[str, set[int]] = {}
    lock = threading.Lock()

    def publisher() -> None:
        for i in range(40):
            result = event_publish(
                event_type="a", source="s", idempotency_key=f"k{i}", producer=producer
            )
            with lock:
                answers.setdefault(f"k{i}", set()).add(result.seq)

    errors = run_together(publisher, threads=4)

    assert errors == []
    assert all(len(seqs) == 1 for seqs in answers.values()), answers
    stored = list(Event.objects.order_by("seq").values_list("seq", flat=True))
    assert stored == list(range(start + 1, start + 41))
    assert SeqCounter.objects.get().last_seq == start + 40


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_missing_counter_row_starts_after_the_highest_seq():
    SeqCounter.objects.get_or_create(pk=1)
    first = event_publish(event_type="a", source="s")
    SeqCounter.objects.all().delete()
    assert event_publish(event_type="a", source="s").seq == first.seq + 1
    assert SeqCounter.objects.get().last_seq == first.seq + 1
