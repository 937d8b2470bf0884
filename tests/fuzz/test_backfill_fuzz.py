"""GET /api/events (backfill) with any parameters: 200 with events in seq order, or 400 with
a JSON error naming the parameter; never a 5xx."""

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.services import event_publish_batch
from tests.fuzz.conftest import any_char, assert_json_error, fuzz_settings

pytestmark = pytest.mark.django_db

number_text = st.one_of(
    st.integers().map(str),
    st.integers(min_value=2**63 - 3, max_value=2**64 + 3).map(str),
    st.integers(min_value=4301, max_value=5000).map(lambda n: "9" * n),
    st.floats().map(str),
    st.sampled_from(["", " ", "1_000", " 5 ", "+3", "-0", "0x10", "1e3", "٣", "NaN", "∞", "%00"]),
)
param_value = st.one_of(
    number_text,
    st.text(any_char, max_size=30),
    st.sampled_from(["websocket", "supabase", "WEBSOCKET", "websocket\x00", "sms"]),
)
param_name = st.sampled_from(["after", "limit", "sink", "after[]", "unknown", ""])


def encode_query(pairs: list[tuple[str, str]]) -> str:
    # surrogatepass: a lone surrogate becomes bytes that are not UTF-8, as a client could send.
    return "&".join(
        f"{quote(name.encode('utf-8', 'surrogatepass'))}="
        f"{quote(value.encode('utf-8', 'surrogatepass'))}"
        for name, value in pairs
    )


@pytest.fixture
def some_events(db):
    event_publish_batch(
        events=[
            {"event_type": t, "source": "fuzz"} for t in ["tool.call", "debug.trace", "tool.error"]
        ]
        * 5
    )


@pytest.mark.slow  # about 20 s
@fuzz_settings(max_examples=1800)
@given(pairs=st.lists(st.tuples(param_name, param_value), max_size=5), raw=st.booleans())
def test_any_query_gets_200_or_a_json_400(signed_in_client, some_events, tally, pairs, raw):
    if raw:
        response = signed_in_client.get("/api/events?" + encode_query(pairs))
    else:
        data: dict[str, list[str]] = {}
        for name, value in pairs:
            data.setdefault(name, []).append(value.encode("utf-8", "replace").decode())
        response = signed_in_client.get("/api/events", data)
    tally.add(response.status_code)
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        body = assert_json_error(response)
        assert body["error"]["field"] in {"after", "limit", "sink"}
    else:
        body = response.json()
        seqs = [event["seq"] for event in body["events"]]
        assert seqs == sorted(seqs)
        assert isinstance(body["next_after"], int)
        if seqs:
            assert body["next_after"] == seqs[-1]


@fuzz_settings(max_examples=300)
@given(after=number_text, limit=number_text)
def test_a_producer_token_gets_the_same_clean_answers(client, producer_token, tally, after, limit):
    response = client.get(
        "/api/events",
        {"after": after, "limit": limit},
        HTTP_AUTHORIZATION=f"Bearer {producer_token}",
    )
    tally.add(response.status_code)
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        assert_json_error(response)
