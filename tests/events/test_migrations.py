"""Data migrations of the events app."""

import hashlib
import importlib
import json

import pytest
from django.apps import apps

from events.checksums import event_checksum_of, format_timestamp
from events.models import Event
from events.services import event_publish

pytestmark = pytest.mark.django_db

recompute = importlib.import_module(
    "events.migrations.0006_checksums_numbers_as_jsonb_prints_them"
).checksums_recompute


def checksum_before_0006(event: Event) -> str:
    """The checksum as it was computed before numbers were written as jsonb prints them."""
    document = {
        "seq": event.seq,
        "event_type": event.event_type,
        "source": event.source,
        "criticality": event.criticality,
        "occurred_at": format_timestamp(event.occurred_at),
        "received_at": format_timestamp(event.received_at),
        "payload": event.payload,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stored_with_the_old_checksum(payload) -> Event:
    seq = event_publish(event_type="tool.call", source="old", payload=payload).seq
    event = Event.objects.get(seq=seq)
    Event.objects.filter(seq=seq).update(checksum=checksum_before_0006(event))
    return Event.objects.get(seq=seq)


def test_0006_recomputes_the_checksums_of_events_with_exponent_form_numbers_only():
    nested = stored_with_the_old_checksum({"x": [1, {"y": 1e-05}]})
    in_a_list = stored_with_the_old_checksum({"a": [-2.5e-07]})
    unaffected = [
        stored_with_the_old_checksum(payload)
        for payload in (
            {"x": 2.5, "big": 1e16, "n": 10**40},
            {"zero": 0.0, "negative_zero": -0.0, "edge": 0.0001, "text": "1e-05"},
            {},
        )
    ]
    assert nested.checksum != event_checksum_of(nested)
    assert in_a_list.checksum != event_checksum_of(in_a_list)
    # Every other number was already written the same way: these checksums stay valid.
    assert all(event.checksum == event_checksum_of(event) for event in unaffected)

    assert recompute(apps, None) == 2

    for event in [nested, in_a_list, *unaffected]:
        stored = Event.objects.get(seq=event.seq)
        assert stored.checksum == event_checksum_of(stored)
    assert recompute(apps, None) == 0  # running it again changes nothing
