"""POST /api/telemetry with any body: 202, or a JSON 400/409/413/415/429; never a 5xx, and a
rejected report stores no health sample."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollout.models import HealthSample
from tests.fuzz.conftest import (
    any_text,
    assert_json_error,
    encode,
    fuzz_settings,
    hostile_json_text,
    huge_int,
    invalid_utf8,
    json_value,
)

pytestmark = pytest.mark.django_db

FIELDS = ["transport", "connects", "connect_failures", "errors", "latencies_ms", "clock_offset_ms"]
number = st.one_of(
    st.integers(min_value=-2000, max_value=2000),
    st.floats(),
    huge_int,
    st.floats(min_value=-700_000, max_value=700_000),
)
field_value = {
    "transport": st.sampled_from(["websocket", "supabase", "WEBSOCKET", "", "sse"]) | json_value,
    "connects": number | json_value,
    "connect_failures": number | json_value,
    "errors": number | json_value,
    "latencies_ms": st.lists(number, max_size=210) | json_value,
    "clock_offset_ms": number | json_value,
}


@st.composite
def report(draw) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(FIELDS), unique=True))
    data = {name: draw(field_value[name]) for name in chosen}
    if draw(st.integers(0, 9)) == 0:
        data[draw(any_text)] = draw(json_value)
    return data


valid_report = st.fixed_dictionaries(
    {"transport": st.sampled_from(["websocket", "supabase"])},
    optional={
        "connects": st.integers(0, 1000),
        "connect_failures": st.integers(0, 1000),
        "errors": st.integers(0, 1000),
        "latencies_ms": st.lists(
            st.integers(-600_000, 600_000) | st.floats(-600_000, 600_000), max_size=200
        ),
        "clock_offset_ms": st.floats(-86_400_000, 86_400_000),
    },
)


@st.composite
def body(draw) -> tuple[bytes, str]:
    kind = draw(
        st.sampled_from(["report"] * 4 + ["valid"] * 2 + ["value", "hostile", "bytes", "spliced"])
    )
    if kind == "bytes":
        raw = draw(invalid_utf8)
    else:
        if kind == "report":
            text = json.dumps(draw(report()), ensure_ascii=draw(st.booleans()))
        elif kind == "valid":
            text = json.dumps(draw(valid_report))
        elif kind == "value":
            text = json.dumps(draw(json_value))
        elif kind == "hostile":
            text = draw(hostile_json_text)
        else:
            name = draw(st.sampled_from(FIELDS))
            text = f'{{"transport":"websocket","{name}":' + draw(hostile_json_text) + "}"
        raw = encode(text, draw(st.sampled_from(["utf-8"] * 8 + ["latin-1", "utf-16"])))
    content_type = draw(
        st.sampled_from(["application/json"] * 10 + ["text/plain", "", "application/json; x=1"])
    )
    return raw, content_type


@pytest.fixture
def no_rate_limit(settings):
    settings.ROLLOUT_TELEMETRY_RATE_PER_MINUTE = 10**9


def post_and_check(client, raw: bytes, content_type: str, tally):
    before = HealthSample.objects.count()
    response = client.generic("POST", "/api/telemetry", raw, content_type=content_type)
    tally.add(response.status_code)
    assert response.status_code in (202, 400, 409, 413, 415, 429), response.content[:300]
    if response.status_code == 202:
        assert response.json()["recorded"] == HealthSample.objects.count() - before
    else:
        assert_json_error(response)
        assert HealthSample.objects.count() == before
    return response


@pytest.mark.slow  # about 40 s: thousands of generated bodies
@fuzz_settings(max_examples=2000)
@given(case=body())
def test_any_report_gets_a_clean_answer(signed_in_client, no_rate_limit, tally, case):
    raw, content_type = case
    post_and_check(signed_in_client, raw, content_type, tally)


@fuzz_settings(max_examples=100)
@given(size=st.integers(min_value=1, max_value=6000))
def test_an_oversized_report_is_a_json_413(signed_in_client, no_rate_limit, settings, tally, size):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    raw = json.dumps({"transport": "websocket", "latencies_ms": [1.5] * size}).encode()
    response = post_and_check(signed_in_client, raw, "application/json", tally)
    if len(raw) > 2048:
        assert response.status_code == 413


@pytest.mark.parametrize("name", ["clock_offset_ms", "latencies_ms", "connects"])
def test_an_integer_too_large_for_a_float_is_a_400(signed_in_client, no_rate_limit, tally, name):
    value = 10**400 if name != "latencies_ms" else [10**400]
    raw = json.dumps({"transport": "websocket", name: value}).encode()
    response = post_and_check(signed_in_client, raw, "application/json", tally)
    assert response.status_code == 400
    assert response.json()["error"]["field"].startswith(name)


def test_over_the_rate_limit_the_answer_is_a_json_429(signed_in_client, settings, tally):
    settings.ROLLOUT_TELEMETRY_RATE_PER_MINUTE = 3
    raw = json.dumps({"transport": "websocket", "connects": 1}).encode()
    statuses = [
        post_and_check(signed_in_client, raw, "application/json", tally).status_code
        for _ in range(5)
    ]
    assert statuses[-1] == 429, statuses
