"""The dashboard page and the realtime token endpoint."""

import json
import time

import jwt
import pytest
from django.test import Client

from events.services import event_publish_batch

pytestmark = pytest.mark.django_db


def page_config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="dashboard-config" type="application/json">')
    body = html[start:].split(">", 1)[1].split("</script>", 1)[0]
    return json.loads(body)


def test_the_dashboard_requires_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_page_carries_the_latest_events_and_the_users_transport(signed_in_client, user):
    seqs = [
        r.seq
        for r in event_publish_batch(
            events=[
                {"event_type": "tool.error", "source": "svc"},
                {"event_type": "a", "source": "s"},
            ]
        )
    ]
    response = signed_in_client.get("/")
    config = page_config(response)
    assert response.status_code == 200
    assert [e["seq"] for e in config["initialEvents"]] == seqs[::-1]
    assert config["latestSeq"] == seqs[-1]
    assert config["transport"] == "websocket"  # shadow stage: nobody is on Supabase yet
    assert config["userId"] == user.pk
    assert config["supabase"] is None  # not configured in this test
    assert 'id="data-source"' in response.content.decode()


def test_with_supabase_the_page_gets_a_short_lived_user_token_and_never_the_service_key(
    signed_in_client, user, settings
):
    settings.SUPABASE_URL = "http://127.0.0.1:54321"
    settings.SUPABASE_ANON_KEY = "anon-key"
    settings.SUPABASE_SERVICE_ROLE_KEY = "service-role-key-must-not-leak"
    settings.SUPABASE_JWT_SECRET = "a-test-secret-with-at-least-32-characters!"
    response = signed_in_client.get("/")
    html = response.content.decode()
    supabase = page_config(response)["supabase"]
    assert "service-role-key-must-not-leak" not in html
    claims = jwt.decode(
        supabase["token"],
        settings.SUPABASE_JWT_SECRET,
        algorithms=["HS256"],
        audience="authenticated",
    )
    assert claims["role"] == "authenticated" and claims["sub"] == str(user.pk)
    assert 0 < claims["exp"] - time.time() <= 15 * 60
    assert supabase["expiresAt"] == claims["exp"]


def test_the_token_endpoint_refreshes_for_signed_in_users_only(signed_in_client, settings):
    assert Client().get("/api/realtime-token").status_code == 401
    assert signed_in_client.get("/api/realtime-token").status_code == 503
    settings.SUPABASE_URL = "http://127.0.0.1:54321"
    settings.SUPABASE_ANON_KEY = "anon-key"
    settings.SUPABASE_SERVICE_ROLE_KEY = "service"
    settings.SUPABASE_JWT_SECRET = "a-test-secret-with-at-least-32-characters!"
    body = signed_in_client.get("/api/realtime-token").json()
    assert set(body) == {"access_token", "expires_at"}
    assert signed_in_client.post("/api/realtime-token").status_code == 405
