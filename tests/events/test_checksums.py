"""The checksum is SHA-256 over the documented canonical form."""

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events import checksums
from events.checksums import (
    canonical_event_bytes,
    canonical_event_bytes_around_seq,
    canonical_number,
    event_checksum,
    event_checksum_of,
    format_timestamp,
)
from events.models import Event
from events.services import event_publish
from events.validation import normalise_payload

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


# --- Numbers exactly as PostgreSQL's jsonb gives them back -------------------------------
#
# The verifier below follows docs/architecture.md and nothing else: it reads an event with
# SQL, keeps every number of ``payload::text`` as the text PostgreSQL printed, sorts the
# keys and hashes. It shares no code with events/checksums.py.

REAL_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-4, max_value=1e-4, allow_nan=False),  # exponent form in Python
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.sampled_from([-0.0, 0.0, 1e-05, 1.5e-07, 5e-324, 1e16, 1.5e16, 1.7976931348623157e308]),
)
SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
PAYLOADS = st.dictionaries(
    SAFE_TEXT,
    st.recursive(
        st.none() | st.booleans() | SAFE_TEXT | REAL_NUMBERS,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(SAFE_TEXT, children, max_size=4)
        ),
        max_leaves=12,
    ),
    max_size=5,
)
PROPERTY_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class JsonbNumber(str):
    """A number's text exactly as PostgreSQL printed it."""


def verifier_canonical(value) -> str:
    if isinstance(value, JsonbNumber):
        return str(value)
    if isinstance(value, dict):
        items = sorted(value.items())
        return (
            "{"
            + ",".join(f"{verifier_canonical(k)}:{verifier_canonical(v)}" for k, v in items)
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(verifier_canonical(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def verifier_checksum(seq: int) -> tuple[str, str]:
    """(checksum as docs/architecture.md defines it, checksum stored), both read with SQL."""
    utc = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq, event_type, source, criticality, "
            f"{utc.format('occurred_at')}, {utc.format('received_at')}, payload::text, checksum "
            "FROM events_event WHERE seq = %s",
            [seq],
        )
        seq, event_type, source, criticality, occurred, received, payload, stored = (
            cursor.fetchone()
        )
    document = {
        "seq": JsonbNumber(seq),
        "event_type": event_type,
        "source": source,
        "criticality": criticality,
        "occurred_at": occurred,
        "received_at": received,
        "payload": json.loads(payload, parse_float=JsonbNumber, parse_int=JsonbNumber),
    }
    text = verifier_canonical(document)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), stored


def jsonb_text(json_text: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::jsonb::text", [json_text])
        return cursor.fetchone()[0]


@pytest.mark.django_db
@PROPERTY_SETTINGS
@given(number=REAL_NUMBERS)
@example(number=1e-05)
@example(number=-0.0)
@example(number=1e16)
@example(number=10**40)
def test_a_payload_number_is_written_as_jsonb_prints_it(number):
    stored = normalise_payload(number)
    # What Django sends for a JSONField (json.dumps), as PostgreSQL prints it back.
    assert canonical_number(stored) == jsonb_text(json.dumps(stored))


def test_the_reported_number_is_written_in_plain_decimal_notation():
    payload = normalise_payload({"x": 1e-05})
    assert b'"payload":{"x":0.00001}' in canonical_event_bytes(**{**FIELDS, "payload": payload})


@PROPERTY_SETTINGS
@given(
    payload=PAYLOADS,
    source=st.text(min_size=1, max_size=20),
    seq=st.integers(min_value=1, max_value=2**63 - 1),
)
@example(payload={"seq": 0, "source": ',"seq":0,"source":"'}, source=',"seq":0,"source":"', seq=1)
def test_the_canonical_form_around_the_seq_is_the_canonical_form_with_any_seq(payload, source, seq):
    """What PostgreSQL hashes for an event whose seq it allocates (events/services.py)."""
    fields = {**FIELDS, "payload": normalise_payload(payload), "source": source}
    head, tail = canonical_event_bytes_around_seq(Event(**{**fields, "seq": None}))
    assert head + str(seq).encode() + tail == canonical_event_bytes(**{**fields, "seq": seq})


@pytest.mark.django_db
@PROPERTY_SETTINGS
@given(payload=PAYLOADS)
@example(payload={"x": 1e-05})
@example(payload={"b": [-0.0, 1.5e-07, {"é": 5e-324}], "a": {"z": 10**40, "y": 1e16}})
def test_a_verifier_reading_jsonb_recomputes_every_stored_checksum(payload):
    result = event_publish(event_type="tool.call", source="verifier", payload=payload)
    recomputed, stored = verifier_checksum(result.seq)
    assert recomputed == stored
    # And the checksum recomputed from the payload as the ORM reads it back agrees.
    assert event_checksum_of(Event.objects.get(seq=result.seq)) == stored


@PROPERTY_SETTINGS
@given(payload=PAYLOADS)
@example(payload={"plain": [1, 2.5, "ü", None, True], "nested": {"b": 100.0, "a": -3}})
@example(payload={"x": 1e-05, "y": -0.0})
def test_the_fast_encoder_writes_the_canonical_writer_s_bytes(payload):
    """Payloads whose numbers print alike in json.dumps take json.dumps (C speed); every
    payload must come out byte for byte as the canonical writer writes it."""
    document = {**FIELDS, "payload": normalise_payload(payload)}
    parts: list[str] = []
    checksums._write_canonical(
        {
            **document,
            "occurred_at": format_timestamp(document["occurred_at"]),
            "received_at": format_timestamp(document["received_at"]),
        },
        parts,
    )
    assert canonical_event_bytes(**document) == "".join(parts).encode("utf-8")


def test_a_timestamp_written_twice_reads_the_same_and_another_one_its_own():
    instant = datetime(2026, 11, 30, 1, 2, 3, 4, tzinfo=UTC)
    same_elsewhere = instant.astimezone(timezone(timedelta(hours=5, minutes=30)))

    assert format_timestamp(instant) == "2026-11-30T01:02:03.000004Z"
    assert format_timestamp(same_elsewhere) == "2026-11-30T01:02:03.000004Z"
    assert format_timestamp(instant + timedelta(microseconds=1)) == "2026-11-30T01:02:03.000005Z"
    assert format_timestamp(datetime(5, 1, 2, tzinfo=UTC)) == "0005-01-02T00:00:00.000000Z"


def test_the_two_instants_of_a_wall_time_when_clocks_go_back_get_their_own_text():
    new_york = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=new_york)  # EDT, UTC-4
    second = first.replace(fold=1)  # an hour later, EST, UTC-5

    assert format_timestamp(first) == "2026-11-01T05:30:00.000000Z"
    assert format_timestamp(second) == "2026-11-01T06:30:00.000000Z"
