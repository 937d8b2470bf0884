"""Shared strategies and checks of the bad-input suite (property-based, hypothesis).

Every test counts the inputs it tried and prints the count (visible with ``pytest -s``).
"""

import json
import logging
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "database": None,  # no example database left behind in the work tree
}


def fuzz_settings(max_examples: int):
    return settings(max_examples=max_examples, **FUZZ_SETTINGS)


class Tally:
    """How many inputs a test tried, and how the answers were spread over statuses."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.by_status: dict[Any, int] = {}

    def add(self, status: Any) -> None:
        self.total += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def report(self) -> str:
        spread = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_status.items(), key=str))
        return f"[fuzz] {self.name}: {self.total} inputs ({spread})"


@pytest.fixture
def tally(request) -> Iterator[Tally]:
    counter = Tally(request.node.name)
    yield counter
    print("\n" + counter.report())


@pytest.fixture(autouse=True)
def _quiet_request_log() -> Iterator[None]:
    """Thousands of 4xx answers would each log a warning."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def assert_json_error(response) -> dict[str, Any]:
    """A 4xx answer is ``{"error": {"code", "message", ...}}`` in JSON."""
    assert response["Content-Type"].startswith("application/json"), (
        response.status_code,
        response["Content-Type"],
        response.content[:300],
    )
    body = json.loads(response.content)
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), str), body
    assert isinstance(body["error"].get("message"), str), body
    return body


# --- strategies ------------------------------------------------------------------------------

# Any code point, lone surrogates and NUL included (json.dumps escapes them as \ud800, \u0000).
any_char = st.characters(blacklist_categories=())
any_text = st.text(any_char, max_size=40)
huge_int = st.one_of(
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**63) + 2),
    st.integers(min_value=10**300, max_value=10**4000),
)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_int,
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_value = st.recursive(
    json_scalar,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5)
    ),
    max_leaves=15,
)


def nested(depth: int, *, opener: str = "[", inner: str = "1") -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + inner + closer * depth


# JSON texts that no JSON encoder writes: non-finite literals, huge numbers, deep nesting.
hostile_json_text = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "[NaN]", "{}", "[]", ""]),
    st.integers(min_value=4301, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=1, max_value=4300).map(lambda n: "-" + "9" * n),
    st.integers(min_value=100, max_value=12_000).map(nested),
    st.integers(min_value=100, max_value=12_000).map(lambda d: nested(d, opener='{"a":')),
    st.integers(min_value=1, max_value=10_000).map(lambda d: "[" * d),
    st.sampled_from(['"\\ud800"', '"\\udfff"', '"\\u0000"', '"\\ud800\\u0000"', '"a\\x"']),
)


def encode(text: str, how: str) -> bytes:
    """Text as bytes, possibly as invalid UTF-8 (lone surrogates passed through)."""
    if how == "utf-8":
        return text.encode("utf-8", "surrogatepass")
    if how == "latin-1":
        return text.encode("latin-1", "replace")
    return text.encode("utf-16", "surrogatepass")


invalid_utf8 = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"\xff\xfe{}",
            b'{"a": "\xc3\x28"}',
            b'"\xed\xa0\x80"',
            b"\xef\xbb\xbf{}",
            b"\x00",
            b"{\x80}",
        ]
    ),
)

event_type_ok = st.from_regex(r"[a-z0-9_.:-]{1,64}", fullmatch=True)
source_ok = st.text(string.ascii_letters + string.digits + "-_ é", min_size=1, max_size=100)
IDENT = string.ascii_lowercase
