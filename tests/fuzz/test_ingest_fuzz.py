"""POST /api/events under hostile input: never a 5xx, every 4xx a JSON error, a rejected
request stores nothing, and a 201's events are stored with a checksum that recomputes."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.checksums import event_checksum_of
from events.models import Event, SeqCounter
from tests.fuzz.conftest import (
    any_char,
    any_text,
    assert_json_error,
    encode,
    event_type_ok,
    fuzz_settings,
    hostile_json_text,
    huge_int,
    invalid_utf8,
    json_value,
    source_ok,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_ingest_rate_limit(settings):
    settings.INGEST_RATE_PER_MINUTE = 10**9


FIELDS = ["event_type", "source", "payload", "occurred_at", "idempotency_key"]

timestamp_text = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # no offset
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-01:00",
            "9999-12-31T23:59:59.999999-23:59",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00+05:30:15.5",
            "",
        ]
    ),
    any_char,
    any_text,
)
safe_key = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
payload_ok = st.dictionaries(safe_key, json_value, max_size=6)

valid_event = st.fixed_dictionaries(
    {"event_type": event_type_ok, "source": source_ok},
    optional={
        "payload": payload_ok,
        "occurred_at": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        "idempotency_key": st.text(st.characters(codec="utf-8"), min_size=1, max_size=200),
    },
)
wrong_value = st.one_of(json_value, huge_int, timestamp_text, st.text(min_size=65, max_size=300))


@st.composite
def bad_event(draw) -> dict[str, Any]:
    """A valid event with one thing wrong (or maybe right): a field replaced, dropped, or an
    unknown field added."""
    event = dict(draw(valid_event))
    how = draw(st.sampled_from(["replace", "drop", "unknown", "deep_payload"]))
    if how == "replace":
        event[draw(st.sampled_from(FIELDS))] = draw(wrong_value)
    elif how == "drop":
        event.pop(draw(st.sampled_from(FIELDS)), None)
    elif how == "unknown":
        event[draw(any_text)] = draw(json_value)
    else:
        depth = draw(st.integers(min_value=20, max_value=60))
        value: Any = draw(json_value)
        for _ in range(depth):
            value = {"k": value} if draw(st.booleans()) else [value]
        event["payload"] = {"deep": value}
    return event


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def body(draw) -> tuple[bytes, str]:
    kind = draw(
        st.sampled_from(
            ["value", "event", "object", "batch", "hostile", "spliced", "bytes", "valid"]
        )
    )
    ascii_only = draw(st.booleans())
    if kind == "value":
        text = dumps(draw(json_value), ascii_only)
    elif kind == "event":
        text = dumps(draw(bad_event()), ascii_only)
    elif kind == "object":
        text = dumps(draw(st.dictionaries(any_text, json_value, max_size=8)), ascii_only)
    elif kind == "batch":
        items = draw(st.lists(valid_event, max_size=6))
        if draw(st.booleans()):
            items.insert(draw(st.integers(0, len(items))), draw(bad_event() | json_value))
        document: Any = {"events": items}
        if draw(st.integers(0, 9)) == 0:
            document = {"events": draw(json_value)}
        elif draw(st.integers(0, 9)) == 0:
            document[draw(any_text)] = draw(json_value)
        text = dumps(document, ascii_only)
    elif kind == "hostile":
        text = draw(hostile_json_text)
    elif kind == "spliced":
        # A hostile JSON fragment where a field's value goes.
        fragment = draw(hostile_json_text)
        where = draw(st.sampled_from(["payload.x", "event_type", "source", "occurred_at", "item"]))
        templates = {
            "payload.x": '{"event_type":"a.b","source":"s","payload":{"x":%s}}',
            "event_type": '{"event_type":%s,"source":"s"}',
            "source": '{"event_type":"a.b","source":%s}',
            "occurred_at": '{"event_type":"a.b","source":"s","occurred_at":%s}',
            "item": '{"events":[{"event_type":"a.b","source":"s"},%s]}',
        }
        text = templates[where] % fragment
    elif kind == "bytes":
        return draw(invalid_utf8), "application/json"
    else:
        text = dumps(draw(valid_event), ascii_only)
    encoding = draw(st.sampled_from(["utf-8"] * 8 + ["latin-1", "utf-16"]))
    content_type = draw(
        st.sampled_from(
            ["application/json"] * 12
            + [
                "application/json; charset=utf-8",
                "application/problem+json",
                "text/plain",
                "",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/jsonx",
            ]
        )
    )
    return encode(text, encoding), content_type


def _stored_state() -> tuple[int, int | None]:
    last_seq = SeqCounter.objects.filter(pk=1).values_list("last_seq", flat=True).first()
    return Event.objects.count(), last_seq


def post_and_check(client, token: str, raw: bytes, content_type: str, tally) -> Any:
    before = _stored_state()
    response = client.generic(
        "POST", "/api/events", raw, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    tally.add(response.status_code)
    assert response.status_code < 500, response.content[:500]
    if response.status_code == 201:
        answer = response.json()
        items = answer.get("events", [answer])
        fresh = 0
        for item in items:
            event = Event.objects.get(seq=item["seq"])  # read back from PostgreSQL
            assert event.checksum == event_checksum_of(event), (raw[:300], event.payload)
            fresh += not item["duplicate"]
        count, last_seq = _stored_state()
        assert count == before[0] + fresh
        return answer
    assert 400 <= response.status_code < 500, response.status_code
    assert_json_error(response)
    assert _stored_state() == before, raw[:300]
    return None


@pytest.mark.slow  # about 40 s: thousands of generated bodies
@fuzz_settings(max_examples=1800)
@given(case=body())
def test_any_body_gets_a_clean_answer_and_a_rejected_one_stores_nothing(
    client, producer_token, tally, case
):
    raw, content_type = case
    post_and_check(client, producer_token, raw, content_type, tally)


@fuzz_settings(max_examples=300)
@given(
    items=st.lists(valid_event, min_size=1, max_size=20),
    bad=bad_event() | json_value,
    index=st.integers(min_value=0, max_value=20),
)
def test_a_batch_with_one_bad_item_stores_none_of_it(
    client, producer_token, tally, items, bad, index
):
    items = list(items)
    items.insert(min(index, len(items)), bad)
    raw = json.dumps({"events": items}).encode()
    post_and_check(client, producer_token, raw, "application/json", tally)


@fuzz_settings(max_examples=300)
@given(size=st.integers(min_value=1, max_value=8192), fill=st.sampled_from(["payload", "junk"]))
def test_an_oversized_body_is_413_json(client, producer_token, settings, tally, size, fill):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    if fill == "payload":
        raw = json.dumps(
            {"event_type": "a.b", "source": "s", "payload": {"x": "y" * size}}
        ).encode()
    else:
        raw = b"[" * size
    response = post_and_check(client, producer_token, raw, "application/json", tally)
    if len(raw) > 2048:
        assert response is None
        assert tally.by_status.get(413)


def test_the_edges_of_the_timestamp_range(client, producer_token, tally):
    """Offsets that carry a timestamp outside the years 1-9999 once in UTC."""
    for text in [
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59.999999-23:59",
    ]:
        raw = json.dumps({"event_type": "a.b", "source": "s", "occurred_at": text}).encode()
        assert post_and_check(client, producer_token, raw, "application/json", tally) is None


def test_a_negative_zero_in_the_payload_keeps_its_checksum(client, producer_token, tally):
    for text in ["-0.0", "-0", "-0.0e0", "-0E-10", "0.0", "-1e-400"]:
        raw = b'{"event_type":"a.b","source":"s","payload":{"x":%s}}' % text.encode()
        post_and_check(client, producer_token, raw, "application/json", tally)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T00:00:00+05:30:15",
        "2026-01-01T00:00:00+05:30:15.123456",
        "2026-01-01T00:00:00.1234567Z",
        "2026-01-01T00:00:00,5Z",
        "0999-01-01T00:00:00Z",
        "2026-W01-1T00:00:00Z",
        "20260101T000000Z",
    ],
)
def test_odd_timestamps_python_accepts_are_stored_with_a_checksum_that_recomputes(
    client, producer_token, tally, text
):
    raw = json.dumps({"event_type": "a.b", "source": "s", "occurred_at": text}).encode()
    post_and_check(client, producer_token, raw, "application/json", tally)


@fuzz_settings(max_examples=300)
@given(
    header=st.one_of(
        st.text(any_char, max_size=80),
        st.text(any_char, max_size=80).map(lambda t: "Bearer " + t),
        st.text(any_char, max_size=60).map(lambda t: "Bearer mon_" + t),
        st.text(any_char, max_size=40).map(lambda t: "Bearer mon_0123456789ab_" + t),
    ),
    method=st.sampled_from(["POST", "GET", "PUT", "PATCH", "DELETE"]),
)
def test_any_authorization_header_gets_a_json_answer(client, db, tally, header, method):
    before = _stored_state()
    response = client.generic(
        method,
        "/api/events",
        b'{"event_type":"a.b","source":"s"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=header,
    )
    tally.add(response.status_code)
    assert response.status_code in (401, 405), response.content[:300]
    assert_json_error(response)
    assert _stored_state() == before
