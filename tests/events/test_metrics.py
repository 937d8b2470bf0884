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


def test_anonymous_callers_get_401_and_signed_in_non_staff_403(signed_in_client):
    from django.test import Client

    anonymous = Client().get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    non_staff = signed_in_client.get("/metrics")
    assert non_staff.status_code == 403
    assert non_staff.json()["error"]["code"] == "forbidden"
    assert "monitor_" not in non_staff.content.decode()


def test_a_non_staff_session_with_a_wrong_token_gets_401(signed_in_client, settings):
    settings.METRICS_TOKEN = "metrics-secret"
    response = signed_in_client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


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
