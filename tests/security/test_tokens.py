"""Producer tokens are stored only as a SHA-256 and compared in constant time."""

import hashlib
import hmac
import inspect

import pytest
from django.db import connection

from events import selectors, services, tokens

pytestmark = pytest.mark.django_db


def test_the_stored_row_never_contains_the_token_only_its_sha256():
    issued = services.producer_create(name="hashed")
    secret = issued.token.split("_", 2)[2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM events_producer WHERE id = %s", [issued.producer.pk])
        row = cursor.fetchone()
    stored = " ".join(str(value) for value in row)
    assert issued.token not in stored
    assert secret not in stored
    assert issued.producer.token_hash in stored
    assert issued.producer.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()


def test_token_hash_is_sha256_hex():
    assert tokens.token_hash("mon_abc_def") == hashlib.sha256(b"mon_abc_def").hexdigest()
    assert len(tokens.token_hash("x")) == 64


def test_a_wrong_token_of_equal_length_is_refused():
    issued = services.producer_create(name="equal-length")
    last = issued.token[-1]
    wrong = issued.token[:-1] + ("A" if last != "A" else "B")
    assert len(wrong) == len(issued.token)
    assert selectors.producer_for_token(issued.token) == issued.producer
    assert selectors.producer_for_token(wrong) is None


def test_a_rotated_token_stops_working_at_once():
    issued = services.producer_create(name="rotated")
    services.producer_token_rotate(producer=issued.producer)
    assert selectors.producer_for_token(issued.token) is None


@pytest.fixture
def compare_digest_calls(monkeypatch) -> list[tuple[str, str]]:
    """Count calls of ``hmac.compare_digest`` (the real one still answers)."""
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", counting)
    return calls


def test_known_and_unknown_prefixes_both_hash_and_compare_in_constant_time(
    compare_digest_calls,
):
    issued = services.producer_create(name="constant-time")
    wrong_secret = issued.token[:-4] + "zzzz"
    unknown_prefix = tokens.token_new().token

    for candidate in (issued.token, wrong_secret, unknown_prefix, "mon_nope"):
        compare_digest_calls.clear()
        selectors.producer_for_token(candidate)
        assert len(compare_digest_calls) == 1, candidate
        hashed, _ = compare_digest_calls[0]
        assert hashed == tokens.token_hash(candidate)  # the hash was computed every time


def test_token_matches_compares_digests_not_raw_tokens():
    source_lines = [
        line.strip()
        for line in inspect.getsource(tokens.token_matches).splitlines()
        if line.strip().startswith("return")
    ]
    assert source_lines == ["return hmac.compare_digest(token_hash(token), stored_hash)"]
