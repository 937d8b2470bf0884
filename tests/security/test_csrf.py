"""CSRF on every state-changing form: refused (403) without the token, done with it.

Each case signs in the caller it needs, GETs a page so the ``csrftoken`` cookie is set
(as a browser would), then POSTs twice with ``Client(enforce_csrf_checks=True)``: once
without the token (403 and nothing changed), once with it (the form's success answer).
``/api/events`` POST is the one exemption: token-authenticated, so a session cookie
alone is refused with 401.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.test import Client
from django.utils import timezone

from events import services as event_services
from events.models import Event, Producer
from reconciliation.models import ReconciliationRun
from rollout import selectors as rollout_selectors
from rollout import services as rollout_services
from rollout.models import Alert, HealthSample, TransportPreference
from rollout.permissions import OPERATE_KILL_SWITCH, SET_STAGE
from tests.rollout.factories import analysis_passing, permissions_grant

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Form:
    name: str
    caller: str | None  # fixture name of the signed-in user, None for anonymous
    path: str
    data: Callable[[], dict]
    success: int
    done: Callable[[], bool]  # the state change happened
    json_body: bool = False


def _with_passing_analysis(data: dict) -> dict:
    """Raising the stage needs a passing analysis of the stage in force: record one."""
    analysis_passing()
    return data


def _alert_id() -> int:
    return rollout_services.alert_raise(kind="csrf_test", severity="info", message="m").pk


def _run_id() -> int:
    return ReconciliationRun.objects.create(trigger="manual", started_at=timezone.now()).pk


_issued_hashes: dict[int, str] = {}


def _producer_id() -> int:
    producer = event_services.producer_create(name="csrf-rotate").producer
    _issued_hashes[producer.pk] = producer.token_hash
    return producer.pk


def _rotated() -> bool:
    return any(
        Producer.objects.get(pk=pk).token_hash != first for pk, first in _issued_hashes.items()
    )


FORMS = [
    Form(
        "login",
        None,
        "/accounts/login/",
        lambda: {"username": "ada", "password": "pw-for-tests-1"},
        302,
        lambda: False,  # checked by the session below
    ),
    Form("logout", "user", "/accounts/logout/", dict, 302, lambda: False),
    Form(
        "settings",
        "user",
        "/settings/",
        lambda: {"transport": "supabase"},
        302,
        lambda: TransportPreference.objects.filter(choice="supabase").exists(),
    ),
    Form(
        "admin login",
        None,
        "/admin/login/",
        lambda: {"username": "grace", "password": "pw-for-tests-2", "next": "/admin/"},
        302,
        lambda: False,
    ),
    Form(
        "panel stage",
        "rollout_operator",
        "/admin/rollout/panel/action/",
        lambda: _with_passing_analysis(
            {"action": "stage", "stage": "10", "reason": "csrf", "confirm": "yes"}
        ),
        302,
        lambda: rollout_selectors.rollout_state_get().stage == "10",
    ),
    Form(
        "panel kill",
        "rollout_operator",
        "/admin/rollout/panel/action/",
        lambda: {"action": "kill", "reason": "csrf", "confirm": "yes"},
        302,
        lambda: rollout_selectors.rollout_state_get().killed,
    ),
    Form(
        "panel promotion",
        "rollout_operator",
        "/admin/rollout/panel/action/",
        lambda: {
            "action": "promotion",
            "enabled": "on",
            "dwell_seconds": "60",
            "reason": "csrf",
            "confirm": "yes",
        },
        302,
        lambda: rollout_selectors.rollout_state_get().auto_promotion_enabled,
    ),  # fmt: skip
    Form(
        "alert acknowledge",
        "staff_user",
        "/admin/rollout/panel/alerts/{alert}/acknowledge/",
        lambda: {"reason": "csrf"},
        302,
        lambda: Alert.objects.filter(kind="csrf_test", acknowledged_at__isnull=False).exists(),
    ),
    Form(
        "reconciliation repair action",
        "superuser",
        "/admin/reconciliation/reconciliationrun/",
        lambda: {"action": "repair_runs", "_selected_action": [str(_run_id())]},
        200,
        lambda: False,  # step 1 renders the confirmation page
    ),
    Form(
        "producer rotate action",
        "superuser",
        "/admin/events/producer/",
        lambda: {"action": "rotate_tokens", "_selected_action": [str(_producer_id())]},
        302,
        _rotated,
    ),
    Form(
        "telemetry",
        "user",
        "/api/telemetry",
        lambda: {"transport": "websocket", "connects": 2},
        202,
        lambda: HealthSample.objects.filter(origin="browser").exists(),
        json_body=True,
    ),
]


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-for-tests-3")


@pytest.fixture
def rollout_operator(staff_user):
    """Staff with the rollout's permissions: what the panel's changes need."""
    return permissions_grant(staff_user, SET_STAGE, OPERATE_KILL_SWITCH)


def strict_client(request, caller: str | None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if caller is not None:
        client.force_login(request.getfixturevalue(caller))
    client.get("/accounts/login/")  # renders {% csrf_token %}: sets the csrftoken cookie
    assert "csrftoken" in client.cookies
    return client


def post(client: Client, form: Form, data: dict, *, token: str | None):
    path = form.path.format(alert=_alert_id()) if "{alert}" in form.path else form.path
    if form.json_body:
        headers = {"X-CSRFToken": token} if token else {}
        return client.post(
            path, data=json.dumps(data), content_type="application/json", headers=headers
        )
    if token:
        data = {**data, "csrfmiddlewaretoken": token}
    return client.post(path, data=data)


@pytest.mark.parametrize("form", FORMS, ids=lambda form: form.name)
def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(
    form: Form, request, user, staff_user
):
    _issued_hashes.clear()
    client = strict_client(request, form.caller)
    session_before = client.cookies.get("sessionid")
    response = post(client, form, form.data(), token=None)
    assert response.status_code == 403
    assert not form.done()
    if form.caller is None:  # a login without the token signs nobody in
        assert "sessionid" not in client.cookies or client.cookies["sessionid"].value == ""
    else:  # still signed in (a logout without the token does nothing)
        assert client.cookies.get("sessionid").value == session_before.value
        assert client.get("/api/transport").status_code == 200


@pytest.mark.parametrize("form", FORMS, ids=lambda form: form.name)
def test_a_form_with_the_csrf_token_succeeds(form: Form, request, user, staff_user):
    _issued_hashes.clear()
    client = strict_client(request, form.caller)
    token = client.cookies["csrftoken"].value
    response = post(client, form, form.data(), token=token)
    assert response.status_code == form.success, response.content[:300]
    if form.name in ("login", "admin login"):
        assert client.get("/api/transport").status_code == 200  # signed in now
    elif form.name == "logout":
        assert client.get("/api/transport").status_code == 401  # signed out now
    else:
        assert form.done() or form.success == 200


def test_the_csrf_exempt_ingest_api_refuses_a_session_cookie_alone(signed_in_client):
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = signed_in_client.cookies
    body = {"event_type": "tool.call", "source": "csrf", "payload": {}}
    response = strict.post("/api/events", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert not Event.objects.filter(source="csrf").exists()


def test_the_csrf_exempt_ingest_api_accepts_a_token_without_csrf(producer_token):
    strict = Client(enforce_csrf_checks=True)
    body = {"event_type": "tool.call", "source": "csrf-token", "payload": {}}
    response = strict.post(
        "/api/events", data=json.dumps(body), content_type="application/json",
        headers={"Authorization": f"Bearer {producer_token}"},
    )  # fmt: skip
    assert response.status_code == 201
