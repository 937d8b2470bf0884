"""Producer input is checked field by field, and payloads are normalised like jsonb."""

import pytest

from events.validation import EventInputError, normalise_payload, parse_event_input


def test_a_minimal_event_is_accepted():
    parsed = parse_event_input({"event_type": "tool.call", "source": "svc"})
    assert parsed.payload == {}
    assert parsed.occurred_at is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"event_type": "Tool.Call", "source": "s"}, "event_type"),
        ({"event_type": "x" * 65, "source": "s"}, "event_type"),
        ({"event_type": "a b", "source": "s"}, "event_type"),
        ({"event_type": "a", "source": ""}, "source"),
        ({"event_type": "a", "source": "s" * 101}, "source"),
        ({"event_type": "a", "source": "s\x00"}, "source"),
        ({"event_type": "a", "source": "s", "payload": []}, "payload"),
        ({"event_type": "a", "source": "s", "payload": {"k": "\x00"}}, "payload.k"),
        ({"event_type": "a", "source": "s", "payload": {"k": "\ud800"}}, "payload.k"),
        ({"event_type": "a", "source": "s", "payload": {"k": float("nan")}}, "payload.k"),
        ({"event_type": "a", "source": "s", "occurred_at": "yesterday"}, "occurred_at"),
        ({"event_type": "a", "source": "s", "occurred_at": "2026-01-01T00:00:00"}, "occurred_at"),
        ({"event_type": "a", "source": "s", "occurred_at": 1700000000}, "occurred_at"),
        ({"event_type": "a", "source": "s", "idempotency_key": ""}, "idempotency_key"),
        ({"event_type": "a", "source": "s", "colour": "red"}, "colour"),
    ],
)
def test_bad_fields_are_named(data, field):
    with pytest.raises(EventInputError) as caught:
        parse_event_input(data)
    assert caught.value.field == field
    assert caught.value.status == 400


def test_deep_payloads_are_refused():
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(EventInputError, match="nested deeper"):
        parse_event_input({"event_type": "a", "source": "s", "payload": deep})


def test_payload_over_64_kib_is_413():
    with pytest.raises(EventInputError) as caught:
        parse_event_input({"event_type": "a", "source": "s", "payload": {"k": "x" * 65_536}})
    assert caught.value.status == 413


def test_numbers_are_normalised_to_what_jsonb_returns():
    assert normalise_payload({"a": 1e16, "b": 1.5e300, "c": 2.5, "d": 1e-7, "e": 10**30}) == {
        "a": 10**16,
        "b": 15 * 10**299,
        "c": 2.5,
        "d": 1e-7,
        "e": 10**30,
    }
