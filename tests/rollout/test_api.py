"""/api/time, /api/transport, /api/telemetry and the user's /settings/ page."""

import json

import pytest
from django.test import Client

from rollout import services
from rollout.models import AuditEntry, HealthSample

pytestmark = pytest.mark.django_db

TELEMETRY = "/api/telemetry"
# Rate-limit counters live in the shared Redis cache under the user's id; ids are never
# reused (sequences survive rollbacks), so tests need not clear them (and must not flush
# a Redis database other test runs share).


def post(client, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(TELEMETRY, data=data, content_type="application/json", **extra)


def test_the_server_time_is_public_json(client):
    response = client.get("/api/time")
    assert response.status_code == 200
    assert isinstance(response.json()["now_ms"], float)
    assert "no-cache" in response["Cache-Control"]


def test_the_transport_endpoint_answers_for_the_signed_in_user(signed_in_client, client):
    assert signed_in_client.get("/api/transport").json() == {
        "transport": "websocket", "choice": "auto", "stage": "shadow", "killed": False,
    }  # fmt: skip
    assert Client().get("/api/transport").status_code == 401


def test_only_staff_read_the_reason_behind_the_rollout(signed_in_client, staff_user):
    services.rollout_kill(actor=staff_user, reason="newcomer: half")
    staff = Client()
    staff.force_login(staff_user)

    assert "reason" not in signed_in_client.get("/api/transport").json()
    assert staff.get("/api/transport").json()["reason"] == "newcomer: half"
    services.rollout_resume(actor=staff_user, reason="all clear")
    assert staff.get("/api/transport").json()["reason"] == "all clear"
    assert "newcomer" not in signed_in_client.get("/api/transport").content.decode()


def test_a_report_is_stored_as_browser_samples_with_latencies_on_the_server_clock(
    signed_in_client, user
):
    services.user_transport_preference_set(user=user, choice="supabase")
    response = post(
        signed_in_client,
        {
            "transport": "supabase",
            "connects": 2,
            "connect_failures": 1,
            "errors": 0,
            "latencies_ms": [100, 40.5, -30],
            "clock_offset_ms": -20,
        },
    )
    assert response.status_code == 202
    assert response.json() == {"recorded": 6}
    stored = HealthSample.objects.filter(origin="browser", transport="supabase")
    assert {s.reporter_id for s in stored} == {user.pk}
    rows = {(s.kind, s.weight, s.value) for s in stored}
    # raw + offset; a negative result is clock noise and counts as 0
    assert rows == {
        ("connect", 2, 1.0), ("connect_failure", 1, 1.0), ("delivery", 3, 1.0),
        ("latency", 1, 80.0), ("latency", 1, 20.5), ("latency", 1, 0.0),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "transport"),
        ({"transport": "carrier-pigeon"}, "transport"),
        ({"transport": "supabase", "connects": -1}, "connects"),
        ({"transport": "supabase", "errors": True}, "errors"),
        ({"transport": "supabase", "connect_failures": 10_001}, "connect_failures"),
        ({"transport": "supabase", "latencies_ms": "fast"}, "latencies_ms"),
        ({"transport": "supabase", "latencies_ms": [1] * 201}, "latencies_ms"),
        ({"transport": "supabase", "latencies_ms": [1, "x"]}, "latencies_ms[1]"),
        ({"transport": "supabase", "latencies_ms": [1e12]}, "latencies_ms[0]"),
        ({"transport": "supabase", "clock_offset_ms": "0"}, "clock_offset_ms"),
        ({"transport": "supabase", "clock_offset_ms": 1e10}, "clock_offset_ms"),
        ({"transport": "supabase", "extra": 1}, "extra"),
        ([1, 2], "body"),
    ],
)
def test_a_bad_report_is_a_400_naming_the_field_and_stores_nothing(signed_in_client, body, field):
    response = post(signed_in_client, body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert not HealthSample.objects.exists()


@pytest.mark.parametrize("raw", ["{not json", "NaN", '{"transport": NaN}', "\xff"])
def test_malformed_json_is_a_400_not_a_500(signed_in_client, raw):
    response = post(signed_in_client, raw)
    assert response.status_code == 400
    assert response.json()["error"]["field"] in {"body", "clock_offset_ms", "transport"}


def test_only_json_is_accepted(signed_in_client):
    response = signed_in_client.post(TELEMETRY, data="transport=supabase",
                                     content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert response.status_code == 415


def test_anonymous_reports_are_refused(client):
    assert post(client, {"transport": "supabase"}).status_code == 401


def test_reports_need_the_csrf_token(user):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert post(strict, {"transport": "websocket"}).status_code == 403
    strict.get("/settings/")  # sets the csrftoken cookie, as the dashboard page does
    token = strict.cookies["csrftoken"].value
    assert post(strict, {"transport": "websocket"}, HTTP_X_CSRFTOKEN=token).status_code == 202


def test_reports_are_rate_limited_per_user(settings, signed_in_client, django_user_model):
    settings.ROLLOUT_TELEMETRY_RATE_PER_MINUTE = 3
    for _ in range(3):
        assert post(signed_in_client, {"transport": "websocket"}).status_code == 202
    limited = post(signed_in_client, {"transport": "websocket"})
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited["Retry-After"]) >= 1
    other = Client()
    other.force_login(django_user_model.objects.create_user(username="bob"))
    assert post(other, {"transport": "websocket"}).status_code == 202


def test_the_settings_page_shows_and_saves_the_choice_with_an_audit(signed_in_client, user):
    page = signed_in_client.get("/settings/")
    assert page.status_code == 200
    assert b'value="auto" checked' in page.content
    response = signed_in_client.post("/settings/", {"transport": "supabase"})
    assert response.status_code == 302
    page = signed_in_client.get("/settings/")
    assert b'value="supabase" checked' in page.content
    assert b'data-testid="transport">supabase<' in page.content
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.to_value) == (user, "supabase")


def test_the_settings_page_refuses_a_bad_choice(signed_in_client):
    assert signed_in_client.post("/settings/", {"transport": "pigeon"}).status_code == 400
    assert not AuditEntry.objects.exists()


def test_the_settings_page_needs_sign_in_and_csrf(client, user):
    assert client.get("/settings/").status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post("/settings/", {"transport": "supabase"}).status_code == 403


def test_the_kill_switch_shows_on_the_settings_page(signed_in_client, staff_user, user):
    services.user_transport_preference_set(user=user, choice="supabase")
    services.rollout_kill(actor=staff_user, reason="incident")
    page = signed_in_client.get("/settings/")
    assert b'data-testid="transport">websocket<' in page.content
    assert b"kill switch is on" in page.content


# --- The reported transport is checked against the user's real one ---------------------------


def test_a_report_for_a_transport_the_user_is_not_on_is_a_409_and_stores_nothing(
    signed_in_client,
):
    # shadow: the user is on websocket, whatever the page claims
    response = post(signed_in_client, {"transport": "supabase", "errors": 1000})
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("transport_mismatch", "transport")
    assert "you are on websocket, not supabase" in error["message"]
    assert not HealthSample.objects.exists()
    assert post(signed_in_client, {"transport": "websocket", "errors": 1}).status_code == 202


def test_after_the_kill_switch_a_report_for_supabase_is_refused(signed_in_client, user, staff_user):
    services.user_transport_preference_set(user=user, choice="supabase")
    assert post(signed_in_client, {"transport": "supabase", "connects": 1}).status_code == 202
    services.rollout_kill(actor=staff_user, reason="incident")
    response = post(signed_in_client, {"transport": "supabase", "connects": 1})
    assert response.status_code == 409
    assert HealthSample.objects.filter(origin="browser").count() == 1
