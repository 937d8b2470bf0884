"""A stage's projected Supabase load against the plan: measured from the open pages'
telemetry and the event rate; a raise that would exceed a quota is refused unless forced,
and lowering or the kill switch never is."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from events.services import event_publish
from rollout import services
from rollout.models import AuditEntry, RolloutState
from rollout.open_pages import MAX_PAGES_PER_USER, open_pages, open_pages_forget
from rollout.quotas import coalescing_window_ms, quota_outlook
from tests.rollout.factories import analysis_passing

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_open_pages():
    open_pages_forget()
    yield
    open_pages_forget()


def _report(client, user, *, page: str, transport: str = "websocket"):
    client.force_login(user)
    response = client.post(
        "/api/telemetry", data=json.dumps({"transport": transport, "page": page}),
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    return response


@pytest.fixture
def twelve_open_pages(client, django_user_model):
    """Twelve users with one dashboard each, all on the legacy path (stage shadow)."""
    users = [django_user_model.objects.create_user(username=f"u{i}") for i in range(12)]
    for user in users:
        _report(client, user, page=f"p{user.pk}")
    return users


def test_an_empty_report_is_a_pages_heartbeat_and_counts_it_open(client, user):
    _report(client, user, page="tab-1")
    _report(client, user, page="tab-2")
    _report(client, user, page="tab-1")  # the same page again
    assert open_pages().by_transport == {"websocket": 2, "supabase": 0}


def test_one_account_counts_a_bounded_number_of_pages(client, user):
    for index in range(MAX_PAGES_PER_USER + 5):
        _report(client, user, page=f"tab-{index}")
    assert open_pages().by_transport["websocket"] == MAX_PAGES_PER_USER


def test_a_bad_page_id_is_refused_and_nothing_counted(client, user):
    client.force_login(user)
    response = client.post(
        "/api/telemetry", data=json.dumps({"transport": "websocket", "page": "no spaces!"}),
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["field"] == "page"
    assert open_pages().total == 0


def test_projection_counts_the_pages_a_stage_puts_on_supabase(settings, twelve_open_pages):
    settings.SUPABASE_PLAN = "custom:connections=100,messages=1000,joins=100,payload_kb=256"
    outlook = quota_outlook()
    assert outlook.current.stage == "shadow" and outlook.current.connections == 0
    assert outlook.following.stage == "10"
    state = RolloutState.objects.get_or_create(id=1)[0]
    from rollout.quotas import measured_load, stage_project

    everyone = stage_project(stage="100", load=measured_load(), state=state)
    assert everyone.connections == 12 and everyone.pages_moved == 12
    assert everyone.exceeded == []
    assert everyone.headroom["connections"] == 88


def test_a_users_own_choice_counts_whatever_the_stage(settings, client, twelve_open_pages):
    settings.SUPABASE_PLAN = "pro"
    chooser = twelve_open_pages[0]
    services.user_transport_preference_set(user=chooser, choice="supabase")
    _report(client, chooser, page=f"p{chooser.pk}", transport="supabase")
    outlook = quota_outlook()
    assert outlook.load.open_pages == {"websocket": 11, "supabase": 1}
    assert outlook.current.connections == 1  # shadow: only the user who chose Supabase


def test_raising_over_the_connection_quota_is_refused_and_changes_nothing(
    settings, staff_user, twelve_open_pages
):
    settings.SUPABASE_PLAN = "custom:connections=5,messages=1000,joins=100,payload_kb=256"
    analysis_passing()
    with pytest.raises(services.QuotaExceeded, match=r"~12 Supabase connections.*plan's 5"):
        services.rollout_stage_set(stage="100", actor=staff_user, reason="all in")
    assert RolloutState.objects.get(id=1).stage == "shadow"
    assert not AuditEntry.objects.filter(to_value="100").exists()


def test_forcing_past_the_quota_is_audited_with_the_projection(
    settings, staff_user, twelve_open_pages
):
    settings.SUPABASE_PLAN = "custom:connections=5,messages=1000,joins=100,payload_kb=256"
    analysis_passing()
    services.rollout_stage_set(
        stage="100", actor=staff_user, reason="quota raised by support", force_quota=True
    )
    entry = AuditEntry.objects.get(to_value="100")
    assert entry.action == "forced" and entry.reason == "quota raised by support"
    forced = entry.figures["forced_over_quota"]
    assert forced["projection"]["connections"] == 12
    assert "plan's 5" in forced["refusal"]


def test_lowering_and_the_kill_switch_are_never_blocked_by_the_quota(
    settings, staff_user, twelve_open_pages
):
    analysis_passing()
    services.rollout_stage_set(stage="100", actor=staff_user, reason="all in")
    settings.SUPABASE_PLAN = "custom:connections=1,messages=1,joins=1,payload_kb=1"
    services.rollout_stage_set(stage="50", actor=staff_user, reason="back down")
    services.rollout_kill(actor=staff_user, reason="stop")
    services.rollout_resume(actor=staff_user, reason="again")
    assert RolloutState.objects.get(id=1).stage == "50"


def test_messages_refuse_only_when_even_the_longest_window_cannot_fit(
    settings, staff_user, twelve_open_pages
):
    # 12 pages + the send itself = 13 messages per statement.
    settings.SUPABASE_PLAN = "custom:connections=100,messages=20,joins=100,payload_kb=256"
    settings.SUPABASE_COALESCE_MAX_WINDOW_MS = 500  # at most 2 statements/s: 26 messages/s
    for _ in range(120):  # at least 2 events/s, whichever way the rate is averaged
        event_publish(event_type="tool.error", source="test")
    analysis_passing()
    with pytest.raises(services.QuotaExceeded, match="messages/s even with the longest"):
        services.rollout_stage_set(stage="100", actor=staff_user, reason="all in")
    settings.SUPABASE_COALESCE_MAX_WINDOW_MS = 1000  # 1 statement/s: 13 messages/s fits
    services.rollout_stage_set(stage="100", actor=staff_user, reason="all in")
    # The sink's window keeps 13 messages per statement under the budget (80 % of 20/s).
    assert quota_outlook().current.window_ms == 813  # ceil(1000 × 13 / 16)


def test_no_quota_known_refuses_nothing(settings, staff_user, twelve_open_pages):
    settings.SUPABASE_PLAN = ""
    analysis_passing()
    services.rollout_stage_set(stage="100", actor=staff_user, reason="all in")
    assert quota_outlook().current.exceeded == []


def test_automatic_promotion_is_held_by_the_quota_with_an_alert(
    settings, staff_user, twelve_open_pages
):
    from datetime import timedelta

    from django.utils import timezone

    from rollout.models import Alert
    from tests.rollout.factories import samples_add

    # Five declared clients fill the plan; the prober's connection (its samples below) and
    # whoever the 10 % cohort adds are over it.
    settings.SUPABASE_PLAN = "custom:connections=5,messages=1000,joins=100,payload_kb=256"
    settings.SUPABASE_EXTRA_SUBSCRIBERS = 5
    services.rollout_promotion_configure(
        enabled=True, dwell_seconds=0, actor=staff_user, reason="autopilot"
    )
    samples_add(transport="supabase", kind="delivery", values=[1.0] * 30)
    samples_add(transport="supabase", kind="latency", values=[40.0] * 30)
    analysis_passing()
    now = timezone.now()
    services.rollout_promotion_check(now=now)
    evaluation = services.rollout_promotion_check(now=now + timedelta(seconds=1))
    assert RolloutState.objects.get(id=1).stage == "shadow"
    assert evaluation.promoted_to is None and "plan's 5" in evaluation.quota_refusal
    assert Alert.objects.get(kind="quota").severity == "warning"


@pytest.mark.parametrize(
    ("subscribers", "rate", "window"),
    [
        (0, 50.0, 0),  # nobody on Supabase: nothing to coalesce for
        (10, 1.0, 0),  # 11 messages/s, far under the budget of 2,000
        (999, 1.0, 0),  # 1,000 messages/s: still one statement per event
        (999, 3.0, 500),  # 3,000 messages/s: one statement every 500 ms (2 × 1,000)
        (1999, 3.0, 1000),  # twice the subscribers, twice the window
        (9999, 3.0, 2000),  # capped at SUPABASE_COALESCE_MAX_WINDOW_MS
    ],
)
def test_the_window_grows_with_subscribers_and_event_rate(settings, subscribers, rate, window):
    settings.SUPABASE_PLAN = "team"
    assert coalescing_window_ms(subscribers=subscribers, events_per_second=rate) == window


def test_rollout_status_shows_the_plan_and_both_projections(settings, capsys, twelve_open_pages):
    settings.SUPABASE_PLAN = "custom:connections=5,messages=1000,joins=100,payload_kb=256"
    call_command("rollout", "status")
    out = capsys.readouterr().out
    assert "Supabase plan: custom (connections 5" in out
    assert "websocket 12, supabase 0" in out
    assert "now: shadow" in out and "next: 10" in out


def test_the_command_refuses_over_quota_and_force_needs_a_reason(
    settings, staff_user, twelve_open_pages
):
    settings.SUPABASE_PLAN = "custom:connections=5,messages=1000,joins=100,payload_kb=256"
    analysis_passing()
    with pytest.raises(CommandError, match="plan's 5.*--force --reason"):
        call_command("rollout", "stage", "100")
    with pytest.raises(CommandError, match="--force needs --reason"):
        call_command("rollout", "stage", "100", "--force")
    call_command("rollout", "stage", "100", "--force", "--reason", "support raised it")
    assert AuditEntry.objects.get(to_value="100").figures["forced_over_quota"]


# --- Quota refusals in the rollback rules ----------------------------------------------------
# Realtime refuses a connection or a join over a quota ("ConnectionRateLimitReached: Too many
# connected users", "ClientJoinRateLimitReached"); pages and the prober report each refusal
# as a connection failure. The rules must count them like any other.


def test_the_probers_quota_refusals_roll_back_like_any_connection_failure(first_cohort):
    from datetime import timedelta

    from django.utils import timezone

    from tests.rollout.factories import samples_add

    a_minute_ago = timezone.now() - timedelta(seconds=60)
    samples_add(transport="supabase", kind="connect", count=1, at=a_minute_ago)
    samples_add(transport="supabase", kind="connect_failure", count=3)  # three refusals
    evaluation = services.rollout_health_evaluate()
    assert evaluation.rolled_back
    assert "3 consecutive Supabase connection failures" in evaluation.breaches[0]
    assert RolloutState.objects.get(id=1).killed


def test_pages_quota_refusals_roll_back_once_enough_users_see_them(
    settings, client, django_user_model, first_cohort
):
    # Five users on Supabase (their own choice) whose joins the quota refuses: each page
    # reports its refusals as connection failures, and its deliveries as none.
    for index in range(5):
        user = django_user_model.objects.create_user(username=f"refused{index}")
        services.user_transport_preference_set(user=user, choice="supabase")
        client.force_login(user)
        response = client.post(
            "/api/telemetry",
            data=json.dumps(
                {"transport": "supabase", "page": "p", "connects": 1, "connect_failures": 5}
            ),
            content_type="application/json",
        )
        assert response.status_code == 202
    evaluation = services.rollout_health_evaluate()
    assert evaluation.rolled_back, evaluation.figures
    assert any("pages: 5 of 5 users above it" in breach for breach in evaluation.breaches)


def test_a_stage_analysis_records_the_quota_headroom(settings, twelve_open_pages):
    settings.SUPABASE_PLAN = "custom:connections=10,messages=1000,joins=100,payload_kb=256"
    analysis = services.stage_analysis_record()
    headroom = analysis.quota_headroom
    assert headroom["plan"]["connections"] == 10
    assert headroom["load"]["open_pages"] == {"websocket": 12, "supabase": 0}
    assert headroom["stage"]["headroom"]["connections"] == 10  # shadow: nobody on Supabase
    assert headroom["next"]["stage"] == "10" and headroom["next"]["exceeded"] == []


# --- The panel -----------------------------------------------------------------------------------


@pytest.fixture
def operator(django_user_model):
    from tests.rollout.factories import permissions_grant

    user = django_user_model.objects.create_user(username="operator", is_staff=True)
    return permissions_grant(user, "rollout.set_stage")


def test_the_panel_shows_the_plan_both_projections_and_the_window(
    settings, client, operator, twelve_open_pages
):
    settings.SUPABASE_PLAN = "custom:connections=5,messages=1000,joins=100,payload_kb=256"
    client.force_login(operator)
    page = client.get("/admin/rollout/panel/").content.decode()
    assert 'data-testid="quota-plan">custom<' in page
    assert "12 pages open on websocket, 0 on Supabase" in page
    assert "now: shadow" in page and "next: 10" in page
    assert "one upsert per event" in page  # far under the budget: no added latency
    health = client.get("/admin/rollout/panel/health.json").json()
    assert 'data-testid="quotas"' in health["html"]


def test_the_panel_refuses_a_raise_over_the_quota_unless_the_box_is_ticked(
    settings, client, operator, twelve_open_pages
):
    settings.SUPABASE_PLAN = "custom:connections=5,messages=1000,joins=100,payload_kb=256"
    analysis_passing()
    client.force_login(operator)
    form = {"action": "stage", "stage": "100", "reason": "all in"}
    confirm = client.post("/admin/rollout/panel/action/", form).content.decode()
    assert 'data-testid="over-quota"' in confirm and "plan&#x27;s 5" in confirm
    client.post("/admin/rollout/panel/action/", {**form, "confirm": "yes"})
    assert RolloutState.objects.get(id=1).stage == "shadow"
    client.post("/admin/rollout/panel/action/", {**form, "confirm": "yes", "force_quota": "yes"})
    assert RolloutState.objects.get(id=1).stage == "100"
    entry = AuditEntry.objects.get(to_value="100")
    assert entry.action == "forced" and entry.actor == operator


def test_declared_subscribers_without_telemetry_count_in_every_stage(settings, twelve_open_pages):
    settings.SUPABASE_PLAN = "custom:connections=100,messages=1000,joins=100,payload_kb=256"
    settings.SUPABASE_EXTRA_SUBSCRIBERS = 40
    outlook = quota_outlook()
    assert outlook.current.connections == 40  # shadow: only the declared clients
    assert outlook.load.extra_subscribers == 40


def test_an_approved_promote_anyway_overrides_the_analysis_not_the_quota(
    settings, django_user_model, twelve_open_pages
):
    from rollout.models import ForcedPromotionRequest
    from tests.rollout.factories import permissions_grant

    settings.SUPABASE_PLAN = "custom:connections=5,messages=1000,joins=100,payload_kb=256"
    ada, bob = (
        permissions_grant(
            django_user_model.objects.create_user(username=name, is_staff=True),
            "rollout.set_stage",
        )
        for name in ("ada", "bob")
    )
    request = services.forced_promotion_request(stage="100", actor=ada, reason="no evidence yet")
    with pytest.raises(services.QuotaExceeded, match="plan's 5"):
        services.forced_promotion_decide(
            request_id=request.pk, actor=bob, approve=True, reason="fine by me"
        )
    assert ForcedPromotionRequest.objects.get(pk=request.pk).status == "pending"
    assert RolloutState.objects.get(id=1).stage == "shadow"
