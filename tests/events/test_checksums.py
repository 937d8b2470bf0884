"""The checksum is SHA-256 over the documented canonical form."""

import hashlib
from datetime import UTC, datetime, timedelta, timezone

from events.checksums import canonical_event_bytes, event_checksum, format_timestamp

FIELDS = {
    "seq": 7,
    "event_type": "tool.call",
    "source": "café-worker",
    "criticality": "system",
    "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC),
    "received_at": datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
    "payload": {"b": [1, 2.5, None], "a": {"z": True, "y": "ü"}},
}

# Written out by hand from docs/architecture.md, not produced by the code under test.
EXPECTED_CANONICAL = (
    '{"criticality":"system","event_type":"tool.call",'
    '"occurred_at":"2026-01-02T03:04:05.000600Z",'
    '"payload":{"a":{"y":"ü","z":true},"b":[1,2.5,null]},'
    '"received_at":"2026-01-02T03:04:05.000000Z","seq":7,"source":"café-worker"}'
)


def test_canonical_form_is_sorted_compact_utf8_with_utc_timestamps():
    assert canonical_event_bytes(**FIELDS) == EXPECTED_CANONICAL.encode("utf-8")


def test_checksum_is_sha256_of_the_canonical_form():
    expected = hashlib.sha256(EXPECTED_CANONICAL.encode("utf-8")).hexdigest()
    assert event_checksum(**FIELDS) == expected


def test_any_field_change_changes_the_checksum():
    original = event_checksum(**FIELDS)
    for name, value in [("seq", 8), ("source", "other"), ("payload", {"b": [1]})]:
        assert event_checksum(**{**FIELDS, name: value}) != original


def test_timestamps_always_have_four_digit_years():
    assert format_timestamp(datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == (
        "0999-01-02T03:04:05.000006Z"
    )
