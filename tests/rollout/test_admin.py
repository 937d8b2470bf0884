"""The staff rollout panel: every action confirmed, reasoned and audited; 403 for others."""

import pytest
from django.urls import reverse

from rollout import services
from rollout.models import Alert, AuditEntry, RolloutState
from tests.rollout.factories import samples_add

pytestmark = pytest.mark.django_db

PANEL = "/admin/rollout/panel/"
ACTION = "/admin/rollout/panel/action/"
HEALTH = "/admin/rollout/panel/health.json"


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def _state() -> RolloutState:
    return RolloutState.objects.get(id=1)


def test_the_panel_urls_are_in_the_admin():
    assert reverse("admin:rollout_panel") == PANEL
    assert reverse("admin:rollout_panel_action") == ACTION
    assert reverse("admin:rollout_panel_health") == HEALTH


def test_the_panel_shows_state_cohorts_health_thresholds_alerts_and_audit(staff_client):
    samples_add(transport="supabase", kind="latency", values=[10.0, 20.0, 30.0])
    services.alert_raise(kind="breaker_opened", severity="warning", message="breaker open")
    services.rollout_stage_set(stage="10", actor=None, reason="seeded")
    response = staff_client.get(PANEL)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="stage">10<' in body
    assert "on websocket" in body and "on Supabase" in body
    assert "<svg" in body and "rollback above" in body  # the thresholds are drawn
    assert "breaker open" in body
    assert "seeded" in body
    assert "csrfmiddlewaretoken" in body


def test_the_health_endpoint_answers_json_with_the_rendered_section(staff_client):
    response = staff_client.get(HEALTH)
    assert response.status_code == 200
    data = response.json()
    assert "supabase" in data["figures"] and "<svg" in data["html"]


@pytest.mark.parametrize(
    ("data", "check"),
    [
        ({"action": "stage", "stage": "50"}, lambda s: s.stage == "50"),
        ({"action": "kill"}, lambda s: s.killed),
        ({"action": "promotion", "enabled": "on", "dwell_seconds": "120"},
         lambda s: s.auto_promotion_enabled and s.promotion_dwell_seconds == 120),
    ],
)  # fmt: skip
def test_an_action_needs_a_confirmation_then_is_done_and_audited(staff_client, data, check):
    # given a first post without confirmation: a confirmation page, nothing changed
    first = staff_client.post(ACTION, {**data, "reason": "planned"})
    assert first.status_code == 200
    assert b'name="confirm" value="yes"' in first.content
    assert not AuditEntry.objects.exists()
    # when confirmed
    second = staff_client.post(ACTION, {**data, "reason": "planned", "confirm": "yes"})
    # then it is done and audited with the staff member and the reason
    assert second.status_code == 302 and second.url == PANEL
    assert check(_state())
    entry = AuditEntry.objects.get()
    assert (entry.actor_label, entry.reason, entry.action) == ("grace", "planned", data["action"])


def test_resume_is_confirmed_and_audited(staff_client, staff_user):
    services.rollout_kill(actor=staff_user, reason="incident")
    staff_client.post(ACTION, {"action": "resume", "reason": "fixed", "confirm": "yes"})
    assert not _state().killed
    assert AuditEntry.objects.latest("id").action == "resume"


@pytest.mark.parametrize(
    "data",
    [
        {"action": "kill", "reason": "", "confirm": "yes"},
        {"action": "stage", "stage": "75", "reason": "x", "confirm": "yes"},
        {"action": "promotion", "dwell_seconds": "-1", "reason": "x", "confirm": "yes"},
    ],
)
def test_a_missing_reason_or_bad_value_is_refused_even_when_confirmed(staff_client, data):
    response = staff_client.post(ACTION, data)
    assert response.status_code == 400
    assert not _state().killed and _state().stage == "shadow"
    assert not AuditEntry.objects.exists()


def test_an_alert_is_acknowledged_and_audited(staff_client, staff_user):
    alert = services.alert_raise(kind="rollback", severity="critical", message="m")
    response = staff_client.post(f"/admin/rollout/panel/alerts/{alert.pk}/acknowledge/")
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == staff_user and alert.acknowledged_at is not None
    assert AuditEntry.objects.get().action == "alert_ack"


@pytest.mark.parametrize("who", ["anonymous", "user"])
def test_non_staff_get_403_on_every_panel_url(client, user, who):
    if who == "user":
        client.force_login(user)
    alert = services.alert_raise(kind="rollback", severity="critical", message="m")
    assert client.get(PANEL).status_code == 403
    assert client.get(HEALTH).status_code == 403
    for data in (
        {"action": "kill", "reason": "r", "confirm": "yes"},
        {"action": "stage", "stage": "100", "reason": "r", "confirm": "yes"},
        {"action": "resume", "reason": "r", "confirm": "yes"},
    ):
        assert client.post(ACTION, data).status_code == 403
    assert client.post(f"/admin/rollout/panel/alerts/{alert.pk}/acknowledge/").status_code == 403
    assert not _state().killed and _state().stage == "shadow"
    assert not AuditEntry.objects.exists()
    assert Alert.objects.get().acknowledged_at is None


def test_panel_forms_are_csrf_protected(staff_user):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff_user)
    response = strict.post(ACTION, {"action": "kill", "reason": "r", "confirm": "yes"})
    assert response.status_code == 403
    assert not _state().killed


def test_the_rollout_flag_percent_is_read_only_in_the_admin(staff_client, staff_user):
    from rollout.models import Flag

    staff_user.is_superuser = True
    staff_user.save()
    flag = Flag.objects.get(name="supabase_realtime")
    response = staff_client.get(f"/admin/rollout/flag/{flag.pk}/change/")
    assert response.status_code == 200
    assert b'name="percent"' not in response.content


def test_the_state_changelist_leads_to_the_panel(staff_client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    response = staff_client.get("/admin/rollout/rolloutstate/")
    assert response.status_code == 302 and response.url == PANEL


def test_in_shadow_the_panel_says_a_breach_blocks_promotion_and_keeps_the_kill_switch_off(
    staff_client,
):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    body = staff_client.get(PANEL).content.decode()
    assert 'data-testid="promotion-blocked"' in body
    assert "Promotion blocked" in body and "the kill switch stays off" in body
    assert "shadow_breach" in body
    assert 'data-testid="killed">off<' in body
    html = staff_client.get(HEALTH).json()["html"]
    assert "Promotion blocked" in html


def test_the_panel_says_what_is_judged_since_a_resume(staff_client, staff_user):
    body = staff_client.get(PANEL).content.decode()
    assert 'data-testid="promotion-blocked"' not in body
    assert 'data-testid="judged-since"' not in body
    services.rollout_kill(actor=staff_user, reason="drill")
    services.rollout_resume(actor=staff_user, reason="drill over")
    body = staff_client.get(PANEL).content.decode()
    assert 'data-testid="judged-since"' in body and "since the resume" in body


def test_a_confirmed_promotion_during_a_breach_is_refused_with_the_reason(staff_client):
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    response = staff_client.post(
        ACTION, {"action": "stage", "stage": "10", "reason": "go", "confirm": "yes"}, follow=True
    )
    assert _state().stage == "shadow"
    assert "promotion blocked: supabase error rate" in response.content.decode().lower()
    assert not AuditEntry.objects.exists()
