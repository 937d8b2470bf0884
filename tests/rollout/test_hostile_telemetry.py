"""One hostile signed-in account against the rollback rules and the promotion gates.

The account posts through the real ``POST /api/telemetry`` (CSRF, rate limit, transport
check) as fast as it is allowed; the real Celery tasks (run eagerly) then judge. It can
neither throw the kill switch, nor hide an outage the prober sees, nor promote the
rollout. Several honest users, on the other hand, are heard.
"""

import json

import pytest
from django.test import Client

from rollout import selectors, services, tasks
from rollout.models import Alert, RolloutState
from tests.rollout.factories import analysis_passing, samples_add

pytestmark = pytest.mark.django_db

# What the attacker of issue 14 sent, 60 times a minute (the rate limit).
FAILURE_FLOOD = {
    "transport": "supabase", "connect_failures": 1000, "errors": 1000,
    "latencies_ms": [600_000] * 200,
}  # fmt: skip
SUCCESS_FLOOD = {"transport": "supabase", "connects": 1000, "latencies_ms": [0] * 200}
REPORTS_PER_MINUTE = 60


def _state() -> RolloutState:
    return RolloutState.objects.get(id=1)


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _report(client: Client, body: dict) -> None:
    response = client.post("/api/telemetry", json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content


def _flood(client: Client, body: dict) -> None:
    for _ in range(REPORTS_PER_MINUTE):
        _report(client, body)


@pytest.fixture
def everyone_on_supabase(staff_user) -> None:
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="100", actor=staff_user, reason="everyone")


@pytest.fixture
def mallory(django_user_model):
    return django_user_model.objects.create_user(username="mallory")


@pytest.fixture
def hostile(mallory) -> Client:
    return _signed_in(mallory)


def _honest_users(django_user_model, count: int = 5, choice: str | None = None) -> list[Client]:
    clients = []
    for n in range(count):
        user = django_user_model.objects.create_user(username=f"honest{n}")
        if choice:
            services.user_transport_preference_set(user=user, choice=choice)
        clients.append(_signed_in(user))
    return clients


def _prober_healthy() -> None:
    samples_add(transport="supabase", kind="delivery", values=[1.0] * 30)
    samples_add(transport="supabase", kind="latency", values=[40.0] * 30)
    samples_add(transport="websocket", kind="latency", values=[30.0] * 30)


# --- It cannot trigger a rollback ---------------------------------------------------------------


@pytest.mark.parametrize("prober", ["healthy", "silent"])
def test_one_account_flooding_failures_throws_no_kill_switch(
    celery_eager, everyone_on_supabase, hostile, prober
):
    # given: the rollout at 100 %, the prober healthy (or not running at all)
    if prober == "healthy":
        _prober_healthy()
    # when: one account reports the worst it may, as often as it may
    _flood(hostile, FAILURE_FLOOD)
    tasks.rollout_health_evaluate.delay()
    # then: nothing is breached, nothing is thrown
    assert not _state().killed
    assert not Alert.objects.exists()
    report = selectors.health_report()
    assert report.breaches == []
    assert report.pages_supabase_short.users == 1 and not report.pages_supabase_short.counts


def test_one_account_on_the_legacy_path_cannot_lower_the_latency_baseline(
    celery_eager, everyone_on_supabase, mallory, hostile
):
    # the prober: Supabase p95 150 ms against a legacy 100 ms, under the 2x limit
    samples_add(transport="websocket", kind="latency", values=[100.0] * 30)
    samples_add(transport="supabase", kind="latency", values=[150.0] * 30)
    # an account that chose the legacy path reports instant legacy deliveries
    services.user_transport_preference_set(user=mallory, choice="websocket")
    _flood(hostile, {"transport": "websocket", "latencies_ms": [0] * 200})
    tasks.rollout_health_evaluate.delay()
    assert not _state().killed
    report = selectors.health_report()
    assert (report.baseline.p95_ms, report.baseline.source) == (100.0, "measured")
    assert report.breaches == []


def test_one_account_cannot_tip_honest_users_minor_trouble_into_a_rollback(
    celery_eager, everyone_on_supabase, hostile, django_user_model
):
    # four honest users each lose 1 delivery in 50 (2 %, under the 5 % threshold)
    for client in _honest_users(django_user_model, count=4):
        _report(client, {"transport": "supabase", "latencies_ms": [30] * 49, "errors": 1})
    _flood(hostile, FAILURE_FLOOD)
    # five distinct users: page telemetry counts, and its weighted rate is above 5 %...
    report = selectors.health_report()
    assert report.pages_supabase_short.counts
    assert report.pages_supabase_short.error_rate > 0.05
    # ...but only one user sees a breach on his own figures: no quorum, no rollback
    assert report.breaches == []
    tasks.rollout_health_evaluate.delay()
    assert not _state().killed


# --- It cannot mask one -------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["lost_deliveries", "slow_deliveries"])
def test_one_account_cannot_mask_an_outage_the_prober_sees(
    celery_eager, everyone_on_supabase, hostile, outage
):
    # given: the prober sees Supabase fail (every probe lost, or 30x slower than legacy)
    if outage == "lost_deliveries":
        samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    else:
        samples_add(transport="supabase", kind="latency", values=[900.0] * 30)
        samples_add(transport="websocket", kind="latency", values=[30.0] * 30)
    # when: one account reports perfect health, as much as it may
    _flood(hostile, SUCCESS_FLOOD)
    tasks.rollout_health_evaluate.delay()
    # then: the prober's figures still throw the kill switch
    state = _state()
    assert state.killed
    rule = "error rate" if outage == "lost_deliveries" else "p95"
    assert f"Supabase {rule}" in state.kill_reason and "prober" in state.kill_reason
    assert Alert.objects.get(kind="rollback").severity == "critical"


# --- It cannot satisfy the promotion gates ------------------------------------------------------


def test_one_account_cannot_satisfy_the_promotion_gates(celery_eager, staff_user, mallory, hostile):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="first cohort")
    services.rollout_promotion_configure(
        enabled=True, dwell_seconds=0, actor=staff_user, reason="autopilot"
    )
    services.user_transport_preference_set(user=mallory, choice="supabase")
    _flood(hostile, SUCCESS_FLOOD)
    tasks.rollout_promotion_check.delay()
    tasks.rollout_promotion_check.delay()
    assert _state().stage == "10"
    assert not selectors.health_report().gates_have_data


# --- Several honest users are heard -------------------------------------------------------------


@pytest.mark.parametrize("trouble", ["errors", "slow"])
def test_several_honest_users_seeing_trouble_throw_the_kill_switch(
    celery_eager, everyone_on_supabase, django_user_model, trouble
):
    # no prober data at all: page telemetry alone decides, as it may with a quorum
    body = (
        {"transport": "supabase", "connects": 1, "errors": 5, "latencies_ms": [30] * 20}
        if trouble == "errors"
        else {"transport": "supabase", "connects": 1, "latencies_ms": [900] * 20}
    )
    for client in _honest_users(django_user_model, count=5):
        _report(client, body)
    tasks.rollout_health_evaluate.delay()
    state = _state()
    assert state.killed
    assert "pages: 5 of 5 users" in state.kill_reason


def test_several_honest_users_satisfy_the_promotion_gates(
    celery_eager, staff_user, django_user_model
):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="first cohort")
    analysis_passing()  # and so does stage 10: only the health gates decide here
    services.rollout_promotion_configure(
        enabled=True, dwell_seconds=0, actor=staff_user, reason="autopilot"
    )
    for client in _honest_users(django_user_model, count=5, choice="supabase"):
        _report(client, {"transport": "supabase", "connects": 1, "latencies_ms": [30] * 20})
    assert selectors.health_report().gates_have_data
    tasks.rollout_promotion_check.delay()  # the dwell starts
    tasks.rollout_promotion_check.delay()  # and has held for its 0 s
    assert _state().stage == "50"
