"""Reads of the event log: synthetic events and the per-minute counts of the chart."""

from datetime import UTC, datetime, timedelta

import pytest

from events import selectors
from events.models import Event
from events.services import event_publish_batch
from rollout.prober import PROBE_EVENT_TYPE
from rollout.services import prober_user_get_or_create

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 29, 12, 30, 40, tzinfo=UTC)


def publish(*event_types: str) -> list[int]:
    events = [{"event_type": kind, "source": "test"} for kind in event_types]
    return [result.seq for result in event_publish_batch(events=events)]


def received(seq: int, at: datetime) -> None:
    Event.objects.filter(seq=seq).update(received_at=at)


def test_the_probers_events_are_synthetic():
    assert selectors.event_is_synthetic(PROBE_EVENT_TYPE)
    assert not selectors.event_is_synthetic("tool.call")


def test_synthetic_events_can_be_left_out_of_reads():
    call, probe, error = publish("tool.call", PROBE_EVENT_TYPE, "tool.error")
    assert [e.seq for e in selectors.events_after(after=0, limit=10)] == [call, probe, error]
    hidden = selectors.events_after(after=0, limit=10, include_synthetic=False)
    assert [e.seq for e in hidden] == [call, error]
    latest = selectors.events_latest(limit=10, include_synthetic=False)
    assert [e.seq for e in latest] == [error, call]


def test_only_staff_who_ask_and_the_prober_see_synthetic_events(user, staff_user):
    assert not selectors.viewer_sees_synthetic(user, requested=True)
    assert not selectors.viewer_sees_synthetic(staff_user, requested=False)
    assert selectors.viewer_sees_synthetic(staff_user, requested=True)
    assert selectors.viewer_sees_synthetic(prober_user_get_or_create(), requested=False)


def test_events_per_minute_counts_the_last_30_minutes_by_criticality():
    old, first, second, third, probe, later = publish(
        "tool.call", "tool.call", "tool.error", "tool.call", PROBE_EVENT_TYPE, "tool.call"
    )
    received(old, NOW - timedelta(minutes=30))  # the minute before the window
    received(first, NOW - timedelta(minutes=29, seconds=40))  # 12:01:00, the first minute
    received(second, NOW - timedelta(minutes=29, seconds=40))
    received(third, NOW)
    received(probe, NOW)
    received(later, NOW)

    rows = selectors.events_per_minute(up_to_seq=probe, include_synthetic=False, now=NOW)

    first_minute = int(datetime(2026, 11, 29, 12, 1, tzinfo=UTC).timestamp())
    this_minute = int(datetime(2026, 11, 29, 12, 30, tzinfo=UTC).timestamp())
    criticality = {e.seq: e.criticality for e in Event.objects.all()}
    assert criticality[first] != criticality[second]
    assert rows == [
        {"minute": first_minute, "counts": {criticality[first]: 1, criticality[second]: 1}},
        # ``later`` is beyond up_to_seq (the page gets it live); the probe is left out.
        {"minute": this_minute, "counts": {criticality[third]: 1}},
    ]
    with_probes = selectors.events_per_minute(up_to_seq=probe, now=NOW)
    assert sum(with_probes[-1]["counts"].values()) == 2
