"""The sink coalesces under load: one upsert per event while far under the messages
budget, one upsert per window past it, nothing lost — against a real supabase_local whose
statement trigger turns each upsert into broadcast messages."""

import pytest
from django.core.cache import cache

from events.models import Delivery
from events.services import event_publish
from events.sink_scheduling import redis_client
from events.supabase_coalescing import (
    WINDOW_CACHE_KEY,
    _slot_key,
    coalescing_state,
    sink_window_ms,
    window_rows,
    write_slot_release,
    write_slot_wait,
)
from events.supabase_sink import supabase_breaker, supabase_sink_flush
from rollout.models import TransportChoice, TransportPreference
from rollout.open_pages import open_page_seen, open_pages_forget

pytestmark = pytest.mark.django_db


@pytest.fixture
def sink(django_supabase):
    supabase_breaker().close()
    cache.delete(WINDOW_CACHE_KEY)
    redis_client().delete(_slot_key())
    open_pages_forget()
    django_supabase.sql("DELETE FROM realtime.messages WHERE topic = 'monitor:events'")
    yield django_supabase
    open_pages_forget()
    cache.delete(WINDOW_CACHE_KEY)
    supabase_breaker().close()


def _supabase_pages(django_user_model, count: int) -> None:
    """``count`` users who chose Supabase, each with one open dashboard on it."""
    for index in range(count):
        user = django_user_model.objects.create_user(username=f"sb{index}")
        TransportPreference.objects.create(user=user, choice=TransportChoice.SUPABASE)
        open_page_seen(user_id=user.pk, transport="supabase", page_id="p")


def _statements(seqs) -> int:
    """Upserts that wrote these events (one ``sent_at`` per upsert)."""
    return (
        Delivery.objects.filter(event_id__in=seqs, sink="supabase")
        .values("sent_at")
        .distinct()
        .count()
    )


def _broadcasts(server) -> int:
    return server.sql("SELECT count(*) AS n FROM realtime.messages WHERE topic = 'monitor:events'")[
        0
    ]["n"]


def test_far_under_the_budget_each_event_is_written_alone(sink, settings, django_user_model):
    settings.SUPABASE_PLAN = "team"
    _supabase_pages(django_user_model, 3)
    assert sink_window_ms() == 0
    seqs = []
    for index in range(3):
        seqs.append(event_publish(event_type="tool.call", source="svc", payload={"n": index}).seq)
        assert supabase_sink_flush().sent == 1
    assert _statements(seqs) == 3
    assert _broadcasts(sink) == 3


def test_past_the_budget_one_window_goes_out_as_one_upsert_and_nothing_is_lost(
    sink, settings, django_user_model
):
    # given: 20 Supabase pages and 30 events in the last minute (0.5/s: 10.5 messages/s
    # one upsert each) on a plan of 10 messages/s (budget 8): the sink must space upserts
    settings.SUPABASE_PLAN = "custom:connections=100,messages=10,joins=100,payload_kb=256"
    settings.SUPABASE_COALESCE_MAX_WINDOW_MS = 1500
    _supabase_pages(django_user_model, 20)
    first = [event_publish(event_type="tool.call", source="svc").seq for _ in range(30)]
    state = coalescing_state(fresh=True)
    assert state["subscribers"] == 20
    assert state["window_ms"] == 1500  # ceil(1000 × 21 / 8) = 2625, capped
    # when: the sink writes, and 20 more events commit inside its window
    assert supabase_sink_flush().sent == 30
    assert redis_client().pttl(_slot_key()) > 0  # the slot is held for the window
    later = [
        event_publish(event_type="tool.call", source="svc", payload={"n": i}).seq for i in range(20)
    ]
    result = supabase_sink_flush()
    # then: the 20 went out in one upsert and one message; Supabase holds every event
    assert result.sent == 20
    assert (_statements(first), _statements(later)) == (1, 1)
    assert _broadcasts(sink) == 2
    rows = sink.sql("SELECT seq FROM monitoring_events ORDER BY seq")
    assert [row["seq"] for row in rows] == sorted(first + later)


def test_a_writer_that_finds_the_slot_taken_waits_for_it(sink):
    assert write_slot_wait(window_ms=0) is None
    first = write_slot_wait(window_ms=1000)  # free: taken at once
    second = write_slot_wait(window_ms=1000)  # taken: returns once it holds the next one
    assert first != second
    assert redis_client().get(_slot_key()).decode() == second


def test_a_slot_that_carried_no_upsert_is_given_back(sink, settings, django_user_model):
    settings.SUPABASE_PLAN = "custom:connections=100,messages=10,joins=100,payload_kb=256"
    _supabase_pages(django_user_model, 20)
    for _ in range(30):
        event_publish(event_type="tool.call", source="svc")
    assert coalescing_state(fresh=True)["window_ms"] > 0
    assert supabase_sink_flush().sent == 30  # the slot is spent on this upsert
    assert redis_client().pttl(_slot_key()) > 0
    redis_client().delete(_slot_key())
    assert supabase_sink_flush().outcome == "idle"  # nothing pending: no message went out
    assert redis_client().exists(_slot_key()) == 0  # so the next writer need not wait
    token = write_slot_wait(window_ms=1000)
    write_slot_release("someone-else")  # only the holder's token frees it
    assert redis_client().get(_slot_key()).decode() == token


def _a_minute_of_events(rate: int) -> None:
    """``rate`` events a second over the last minute, as the local log would hold them."""
    from datetime import timedelta

    from django.utils import timezone

    from events.models import Event

    now = timezone.now()
    for index in range(rate * 60):
        seq = event_publish(event_type="tool.call", source="svc").seq
        received = now - timedelta(seconds=60) + timedelta(seconds=(index + 1) / rate)
        Event.objects.filter(seq=seq).update(received_at=received)


def test_the_window_grows_with_the_event_rate_and_the_subscribers(
    sink, settings, django_user_model
):
    settings.SUPABASE_PLAN = "custom:connections=1000,messages=100,joins=100,payload_kb=256"
    _supabase_pages(django_user_model, 50)  # 51 messages per upsert; the budget is 80/s
    _a_minute_of_events(1)  # 51 messages/s one upsert per event: under the budget
    quiet = coalescing_state(fresh=True)["window_ms"]
    _a_minute_of_events(1)  # now 2 events/s: 102 messages/s, over it
    busy = coalescing_state(fresh=True)["window_ms"]
    for user in django_user_model.objects.filter(username__startswith="sb"):
        open_page_seen(user_id=user.pk, transport="supabase", page_id="second-tab")
    crowded = coalescing_state(fresh=True)["window_ms"]
    # ceil(1000 × 51 / 80) and ceil(1000 × 101 / 80)
    assert (quiet, busy, crowded) == (0, 638, 1263)


def test_a_sudden_burst_widens_the_window_without_waiting_for_the_minute(
    sink, settings, django_user_model
):
    settings.SUPABASE_PLAN = "custom:connections=1000,messages=100,joins=100,payload_kb=256"
    _supabase_pages(django_user_model, 50)
    for _ in range(20):  # 20 events in a moment: 10/s over the last 2 s, 0.33/s a minute
        event_publish(event_type="tool.call", source="svc")
    assert coalescing_state(fresh=True)["window_ms"] == 638


def test_one_windows_upsert_takes_twice_the_rows_a_window_brings(sink, settings):
    # 2,000 events/s with a 500 ms window: 1,000 rows a window, more than a batch of 500;
    # the upsert must take them all (and a backlog's worth more) or the backlog grows.
    cache.set(WINDOW_CACHE_KEY, {"window_ms": 500, "events_per_second": 2000.0}, 60)
    assert window_rows(window_ms=500) == 2000
    assert window_rows(window_ms=0) == 0
