"""Rate limits answer 429 with a JSON error and ``Retry-After``: ingest (per producer,
``INGEST_RATE_PER_MINUTE``) and browser telemetry (per user,
``ROLLOUT_TELEMETRY_RATE_PER_MINUTE``).

Both count a fixed wall-clock minute in Redis. A test never waits for a window: it sends
until refused, and at most ``2 * limit`` requests can pass when a run straddles one window
boundary, so ``2 * limit + 1`` requests always reach the limit.
"""

import json

import pytest
from django.test import Client

from events import services
from events.models import Event

pytestmark = pytest.mark.django_db

LIMIT = 3
EVENT = {"event_type": "tool.call", "source": "security-test", "payload": {}}


def ingest(client: Client, token: str, body=EVENT):
    return client.post(
        "/api/events",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def send_until_limited(send, *, limit: int):
    """Send up to ``2 * limit + 1`` requests; the answers up to and including the first 429."""
    answers = []
    for _ in range(2 * limit + 1):
        answer = send()
        answers.append(answer)
        if answer.status_code == 429:
            break
    return answers


def assert_rate_limited(response) -> None:
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["message"]
    assert 1 <= int(response["Retry-After"]) <= 60


def test_ingest_answers_429_json_over_the_per_producer_limit(settings, client, producer_token):
    # given
    settings.INGEST_RATE_PER_MINUTE = LIMIT
    # when
    answers = send_until_limited(lambda: ingest(client, producer_token), limit=LIMIT)
    # then
    assert all(answer.status_code == 201 for answer in answers[:-1])
    assert len(answers) - 1 >= LIMIT
    assert_rate_limited(answers[-1])
    assert Event.objects.filter(source="security-test").count() == len(answers) - 1


def test_a_refused_ingest_stores_nothing_and_other_producers_keep_their_budget(
    settings, client, producer_token
):
    settings.INGEST_RATE_PER_MINUTE = LIMIT
    answers = send_until_limited(lambda: ingest(client, producer_token), limit=LIMIT)
    assert_rate_limited(answers[-1])
    stored = Event.objects.count()

    again = ingest(client, producer_token, {**EVENT, "source": "refused"})
    if again.status_code == 429:  # still the same window (a boundary may have passed)
        assert not Event.objects.filter(source="refused").exists()
        assert Event.objects.count() == stored

    other = services.producer_create(name="other-producer").token
    assert ingest(client, other).status_code == 201


def test_the_ingest_limit_is_counted_after_authentication(settings, client):
    """Bad tokens are refused with 401 and never spend a producer's budget."""
    settings.INGEST_RATE_PER_MINUTE = 1
    for _ in range(5):
        assert ingest(client, "mon_000000000000_not-a-token").status_code == 401


def test_telemetry_answers_429_json_over_the_per_user_limit(settings, signed_in_client):
    settings.ROLLOUT_TELEMETRY_RATE_PER_MINUTE = LIMIT
    report = {"transport": "websocket", "connects": 1}

    def send():
        return signed_in_client.post(
            "/api/telemetry", data=json.dumps(report), content_type="application/json"
        )

    answers = send_until_limited(send, limit=LIMIT)
    assert all(answer.status_code == 202 for answer in answers[:-1])
    assert len(answers) - 1 >= LIMIT
    assert_rate_limited(answers[-1])


def test_ingest_is_let_through_uncounted_while_redis_is_down(settings, client, producer_token):
    """The limit protects the service; a Redis restart must not refuse every producer."""
    settings.INGEST_RATE_PER_MINUTE = 1
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/1",  # nothing listens on port 1
        }
    }
    answers = [ingest(client, producer_token).status_code for _ in range(3)]
    assert answers == [201, 201, 201]
    assert Event.objects.filter(source="security-test").count() == 3
