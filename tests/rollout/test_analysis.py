"""Stage analysis: the Supabase cohort against the legacy baseline over whole distributions
(Mann-Whitney U, Fisher's exact), with the thresholds of the admin; recorded by the beat
task and when a stage ends."""

import json

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone

from rollout import selectors, services, tasks
from rollout.models import StageAnalysis, Thresholds
from tests.rollout.factories import analysis_passing, samples_add

pytestmark = pytest.mark.django_db

RNG_SEED = 16


@pytest.fixture(autouse=True)
def stage_began_an_hour_ago() -> None:
    """The stage in force began before every sample of a test (the row is seeded by a
    migration; a transactional test elsewhere may have flushed it)."""
    from datetime import timedelta

    from rollout.models import RolloutState

    RolloutState.objects.update_or_create(
        id=1, defaults={"stage_started_at": timezone.now() - timedelta(hours=1)}
    )


def _prober(transport: str, latencies, lost: int = 0) -> None:
    """What the prober records per probe: a delivery (1, or 0 when lost) and a latency."""
    latencies = [float(v) for v in latencies]
    samples_add(transport=transport, kind="delivery", values=[1.0] * len(latencies) + [0.0] * lost)
    samples_add(transport=transport, kind="latency", values=latencies)


def _lognormal(median_ms: float, n: int = 300, seed: int = RNG_SEED) -> list[float]:
    return list(np.random.default_rng(seed).lognormal(np.log(median_ms), 0.35, n))


def _record() -> StageAnalysis:
    analysis = services.stage_analysis_record(trigger="manual")
    assert analysis is not None
    return analysis


def test_a_healthy_supabase_cohort_passes():
    _prober("websocket", _lognormal(40, seed=1))
    _prober("supabase", _lognormal(40, seed=2))
    analysis = _record()
    assert analysis.verdict == "pass", analysis.reasons
    latency = analysis.comparison["prober"]["latency"]
    assert latency["outcome"] == "ok" and latency["supabase_n"] == latency["legacy_n"] == 300
    assert 0.4 < latency["effect"] < 0.6
    assert analysis.comparison["prober"]["errors"]["outcome"] == "ok"


def test_a_slower_supabase_cohort_fails():
    _prober("websocket", _lognormal(40, seed=1))
    _prober("supabase", _lognormal(70, seed=2))
    analysis = _record()
    assert analysis.verdict == "fail"
    assert "stochastically greater" in analysis.reasons[0]
    assert analysis.comparison["prober"]["latency"]["p_value"] < 0.01


def test_a_failing_supabase_cohort_fails_even_when_fast():
    _prober("websocket", _lognormal(40, seed=1), lost=1)
    _prober("supabase", _lognormal(40, seed=2), lost=12)  # 3.8 % lost against 0.3 %
    analysis = _record()
    assert analysis.verdict == "fail"
    errors = analysis.comparison["prober"]["errors"]
    assert errors["outcome"] == "worse", errors
    assert errors["p_value"] < 0.01
    assert "Fisher" in " ".join(analysis.reasons)


def test_an_error_rate_above_the_rollback_limit_fails_whatever_legacy_does():
    _prober("websocket", _lognormal(40, seed=1), lost=30)
    _prober("supabase", _lognormal(40, seed=2), lost=30)  # 9 % on both paths
    analysis = _record()
    assert analysis.verdict == "fail"
    assert "above the rollback limit" in " ".join(analysis.reasons)


def test_a_cohort_whose_p95_is_fine_but_whose_distribution_is_worse_fails():
    # given: legacy spread evenly over 10-100 ms; Supabase's bulk moved up to 55-100 ms,
    # its p95 within 3 % of legacy's (far below the 2x rollback rule)
    legacy = np.linspace(10, 100, 300)
    supabase = np.linspace(55, 100, 300)
    _prober("websocket", legacy)
    _prober("supabase", supabase)
    report = selectors.health_report()
    assert report.supabase_long.p95_ms < 1.03 * report.websocket_long.p95_ms
    assert not report.breaches  # the percentile rule sees nothing
    # when
    analysis = _record()
    # then the whole distribution gives it away
    assert analysis.verdict == "fail"
    latency = analysis.comparison["prober"]["latency"]
    assert latency["outcome"] == "worse" and latency["effect"] > 0.7


def test_too_few_samples_is_inconclusive():
    _prober("websocket", _lognormal(40, n=49, seed=1))
    _prober("supabase", _lognormal(400, n=49, seed=2))  # slow, but too few to say so
    analysis = _record()
    assert analysis.verdict == "inconclusive"
    assert any("too few latencies" in reason for reason in analysis.reasons)
    assert any("pages: not counted" in reason for reason in analysis.reasons)


def test_the_thresholds_are_read_from_the_admin_row():
    _prober("websocket", _lognormal(40, seed=1))
    _prober("supabase", _lognormal(48, seed=2))  # 20 % slower
    assert _record().verdict == "fail"
    Thresholds.objects.filter(id=1).update(analysis_max_effect_size=0.75)
    analysis = _record()
    assert analysis.verdict == "pass"
    assert analysis.thresholds["max_effect_size"] == 0.75
    Thresholds.objects.filter(id=1).update(analysis_min_samples=1000)
    assert _record().verdict == "inconclusive"


def test_a_latency_tolerance_accepts_a_path_slower_by_less_than_it():
    legacy = _lognormal(15, seed=1)
    _prober("websocket", legacy)
    _prober("supabase", [value + 10 for value in _lognormal(15, seed=2)])  # +10 ms each
    assert _record().verdict == "fail"
    Thresholds.objects.filter(id=1).update(analysis_latency_tolerance_ms=15)
    analysis = _record()
    assert analysis.verdict == "pass", analysis.reasons
    assert analysis.comparison["prober"]["latency"]["tolerance_ms"] == 15
    Thresholds.objects.filter(id=1).update(analysis_latency_tolerance_ms=5)
    failed = _record()
    assert failed.verdict == "fail" and "by more than 5 ms" in failed.reasons[0]


# --- Pages, through the real API and the weighting of rollout/weighting.py ----------------------


def _page_users(django_user_model, prefix: str, choice: str, count: int = 5) -> list[Client]:
    clients = []
    for n in range(count):
        user = django_user_model.objects.create_user(username=f"{prefix}{n}")
        services.user_transport_preference_set(user=user, choice=choice)
        client = Client()
        client.force_login(user)
        clients.append(client)
    return clients


def _report(client: Client, body: dict) -> None:
    response = client.post("/api/telemetry", json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content


def _pages(django_user_model, *, supabase_ms: float, errors: int = 0) -> None:
    for index, client in enumerate(_page_users(django_user_model, "ws", "websocket")):
        latencies = [round(v, 1) for v in _lognormal(40, n=30, seed=100 + index)]
        _report(client, {"transport": "websocket", "connects": 1, "latencies_ms": latencies})
    for index, client in enumerate(_page_users(django_user_model, "sb", "supabase")):
        latencies = [round(v, 1) for v in _lognormal(supabase_ms, n=30, seed=200 + index)]
        _report(
            client,
            {"transport": "supabase", "connects": 1, "errors": errors, "latencies_ms": latencies},
        )


def test_pages_alone_decide_with_a_quorum_healthy_passes(django_user_model):
    _pages(django_user_model, supabase_ms=40)
    analysis = _record()
    assert analysis.verdict == "pass", analysis.reasons
    assert analysis.comparison["pages"]["conclusive"]
    assert analysis.transports["supabase"]["users"]["page_reporters"] == 5
    assert analysis.transports["supabase"]["pages"]["counts"] is True


def test_pages_alone_decide_with_a_quorum_slow_fails(django_user_model):
    _pages(django_user_model, supabase_ms=90)
    analysis = _record()
    assert analysis.verdict == "fail"
    assert analysis.comparison["pages"]["latency"]["outcome"] == "worse"


def test_one_hostile_account_cannot_fail_a_healthy_stage(django_user_model):
    _prober("websocket", _lognormal(40, seed=1))
    _prober("supabase", _lognormal(40, seed=2))
    (mallory,) = _page_users(django_user_model, "mallory", "supabase", count=1)
    for _ in range(60):
        _report(mallory, {"transport": "supabase", "errors": 1000, "latencies_ms": [600000] * 200})
    analysis = _record()
    assert analysis.verdict == "pass", analysis.reasons
    assert analysis.comparison["pages"]["note"].startswith("pages: not counted")


# --- What an analysis records, and when ---------------------------------------------------------


def test_an_analysis_records_window_users_figures_events_and_reconciliation(staff_user):
    from events.services import event_publish
    from reconciliation.models import ReconciliationRun

    _prober("websocket", _lognormal(40, seed=1))
    _prober("supabase", _lognormal(40, seed=2))
    samples_add(transport="supabase", kind="connect_failure", count=2)
    event_publish(event_type="order.created", source="test", payload={"n": 1})
    ReconciliationRun.objects.create(
        trigger="manual", status="discrepancies", started_at=timezone.now(),
        events_judged=10, events_agreeing=8, discrepancy_count=2,
    )  # fmt: skip
    analysis = _record()
    state = selectors.rollout_state_get()
    assert analysis.stage == "shadow" and analysis.stage_started_at == state.stage_started_at
    assert analysis.window_start == state.stage_started_at < analysis.window_end
    supabase = analysis.transports["supabase"]
    assert supabase["users"]["cohort"] == 0 and analysis.transports["websocket"]["users"]["cohort"]
    prober = supabase["prober"]
    assert prober["latency_samples"] == 300
    assert prober["p50_ms"] < prober["p95_ms"] < prober["p99_ms"]
    assert prober["connect_failures"] == 2
    assert "error_rate" in supabase["pages"]
    # one event, one delivery per sink (sent or still pending: no worker runs here)
    assert sum(analysis.events["delivered"]["websocket"].values()) == 1
    assert sum(analysis.events["delivered"]["supabase"].values()) == 1
    assert analysis.events["validated"] == {"events_judged": 10, "events_agreeing": 8}
    assert analysis.reconciliation["runs"] == 1 and analysis.reconciliation["discrepancies"] == 2
    # the plan (none set: unlimited) against this stage and the next, at the measured load
    headroom = analysis.quota_headroom
    assert headroom["plan"]["name"] == "unlimited"
    assert (headroom["stage"]["stage"], headroom["next"]["stage"]) == ("shadow", "10")
    assert headroom["stage"]["headroom"] == {"connections": None, "messages_per_second": None}
    assert headroom["load"]["events_per_second"] > 0  # the one event, just published


def test_the_beat_task_records_an_analysis(celery_eager):
    tasks.stage_analysis_record.delay()
    analysis = StageAnalysis.objects.get()
    assert (analysis.trigger, analysis.final, analysis.verdict) == (
        "periodic", False, "inconclusive",
    )  # fmt: skip


def test_a_stage_change_records_the_final_analysis_of_the_stage_that_ended(
    staff_user, django_capture_on_commit_callbacks, celery_eager
):
    started = selectors.rollout_state_get().stage_started_at
    _prober("websocket", _lognormal(40, seed=1))
    _prober("supabase", _lognormal(40, seed=2))
    analysis_passing()
    with django_capture_on_commit_callbacks(execute=True):
        state = services.rollout_stage_set(stage="10", actor=staff_user, reason="go")
    final = StageAnalysis.objects.get(final=True)
    assert (final.stage, final.trigger, final.verdict) == ("shadow", "stage_end", "pass")
    assert final.stage_started_at == started and final.window_end == state.stage_started_at
    assert state.stage_started_at > started
    # the new stage has a run of its own, with no analysis yet
    assert selectors.stage_analysis_latest() is None
    # a repeated task (a retry) records no second final analysis
    tasks.stage_analysis_final_record.delay(
        stage="shadow", stage_started_at=started.isoformat(),
        ended_at=state.stage_started_at.isoformat(), resumed_at=None, cohorts={},
    )  # fmt: skip
    assert StageAnalysis.objects.filter(final=True).count() == 1


def test_after_a_resume_the_analysis_judges_only_what_came_after(staff_user):
    _prober("websocket", _lognormal(40, seed=1))
    _prober("supabase", _lognormal(90, seed=2))
    assert _record().verdict == "fail"
    services.rollout_kill(actor=staff_user, reason="drill")
    state, _ = services.rollout_resume(actor=staff_user, reason="fixed")
    analysis = _record()
    assert analysis.window_start == state.resumed_at
    assert analysis.verdict == "inconclusive"


def test_identical_constant_latencies_pass_and_store_only_finite_figures():
    _prober("websocket", [40.0] * 60)
    _prober("supabase", [40.0] * 60)
    analysis = _record()
    assert analysis.verdict == "pass", analysis.reasons
    assert analysis.comparison["prober"]["latency"]["effect"] == 0.5
    assert analysis.comparison["prober"]["errors"]["p_value"] == 1.0
