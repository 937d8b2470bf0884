"""/metrics: Prometheus figures of the sinks, for staff or the metrics token."""

import pytest
from django.core.cache import cache

from events.metrics import CACHE_KEY
from events.services import event_publish_batch

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_figures():
    """Figures are cached for a few seconds; each test starts without them."""
    cache.delete(CACHE_KEY)


def test_anonymous_and_non_staff_callers_are_refused(client, signed_in_client):
    assert client.get("/metrics").status_code == 401
    assert signed_in_client.get("/metrics").status_code == 401


def test_the_metrics_token_is_accepted_and_a_wrong_one_is_not(client, settings):
    settings.METRICS_TOKEN = "metrics-secret"
    ok = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"})
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert (ok.status_code, wrong.status_code) == (200, 401)


def test_staff_see_delivery_counts_by_sink_and_status(client, staff_user):
    event_publish_batch(
        events=[{"event_type": "a", "source": "s"}, {"event_type": "debug.x", "source": "s"}]
    )
    client.force_login(staff_user)
    body = client.get("/metrics").content.decode()
    assert 'monitor_sink_deliveries{sink="supabase",status="pending"} 1.0' in body
    assert 'monitor_sink_deliveries{sink="supabase",status="skipped"} 1.0' in body
    assert 'monitor_sink_deliveries{sink="websocket",status="pending"} 2.0' in body
    assert 'monitor_supabase_breaker_state{state="closed"} 1.0' in body
