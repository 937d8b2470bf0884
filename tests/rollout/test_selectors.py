"""A user's transport, cohorts, and the health figures computed in PostgreSQL."""

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from rollout import selectors, services
from rollout.buckets import in_percentage, user_bucket
from rollout.models import SUPABASE_REALTIME_FLAG
from tests.rollout.factories import analysis_passing, samples_add

pytestmark = pytest.mark.django_db


# --- Buckets ----------------------------------------------------------------------------------


def test_buckets_are_the_same_in_another_process():
    ids = list(range(1, 200))
    code = (
        "import json; from rollout.buckets import user_bucket; "
        f"print(json.dumps([user_bucket(flag_name={SUPABASE_REALTIME_FLAG!r}, user_id=u) "
        f"for u in {ids!r}]))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    here = [user_bucket(flag_name=SUPABASE_REALTIME_FLAG, user_id=u) for u in ids]
    assert json.loads(other.stdout) == here


@pytest.mark.parametrize("percent", [10, 50, 100])
def test_the_cohort_is_within_one_point_of_the_target_over_10000_users(percent):
    members = sum(
        in_percentage(flag_name=SUPABASE_REALTIME_FLAG, user_id=u, percent=percent)
        for u in range(1, 10_001)
    )
    assert abs(members / 10_000 * 100 - percent) <= 1


def test_no_user_leaves_the_cohort_as_the_stages_rise():
    previous: set[int] = set()
    for percent in (0, 10, 50, 100):
        cohort = {
            u
            for u in range(1, 10_001)
            if in_percentage(flag_name=SUPABASE_REALTIME_FLAG, user_id=u, percent=percent)
        }
        assert previous <= cohort
        previous = cohort
    assert len(previous) == 10_000


# --- Transport --------------------------------------------------------------------------------


def _cohort_member(django_user_model, *, inside: bool, percent: int = 10):
    for n in range(1, 1000):
        user = django_user_model.objects.create_user(username=f"u{n}-{inside}")
        member = in_percentage(flag_name=SUPABASE_REALTIME_FLAG, user_id=user.pk, percent=percent)
        if member == inside:
            return user
    raise AssertionError("no user found")


def test_a_fresh_install_puts_everyone_on_websocket(user):
    assert selectors.rollout_state_get().stage == "shadow"
    assert selectors.user_transport(user) == "websocket"


def test_the_bucket_decides_for_auto_users(django_user_model, staff_user):
    inside = _cohort_member(django_user_model, inside=True)
    outside = _cohort_member(django_user_model, inside=False)
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="go")
    assert selectors.user_transport(inside) == "supabase"
    assert selectors.transport_for_user_id(inside.pk) == "supabase"
    assert selectors.user_transport(outside) == "websocket"


def test_the_users_choice_beats_the_bucket_and_the_kill_switch_beats_both(
    django_user_model, staff_user
):
    outside = _cohort_member(django_user_model, inside=False)
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="10", actor=staff_user, reason="go")
    services.user_transport_preference_set(user=outside, choice="supabase")
    assert selectors.user_transport(outside) == "supabase"
    services.rollout_kill(actor=staff_user, reason="incident")
    assert selectors.user_transport(outside) == "websocket"
    services.rollout_resume(actor=staff_user, reason="fixed")
    assert selectors.user_transport(outside) == "supabase"


def test_anonymous_users_are_on_websocket():
    from django.contrib.auth.models import AnonymousUser

    assert selectors.user_transport(AnonymousUser()) == "websocket"


def test_cohort_sizes_count_choices_buckets_and_the_kill_switch(django_user_model, staff_user):
    for n in range(200):
        django_user_model.objects.create_user(username=f"c{n}")
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="100", actor=staff_user, reason="all")
    chooser = django_user_model.objects.get(username="c0")
    services.user_transport_preference_set(user=chooser, choice="websocket")
    sizes = selectors.cohort_sizes()
    assert sizes == {"websocket": 1, "supabase": 200}  # 200 users + staff - the chooser
    services.rollout_kill(actor=staff_user, reason="stop")
    assert selectors.cohort_sizes() == {"websocket": 201, "supabase": 0}


# --- Health -----------------------------------------------------------------------------------


def test_health_counts_failures_and_percentiles():
    samples_add(transport="supabase", kind="delivery", values=[1.0] * 18 + [0.0] * 2)
    samples_add(transport="supabase", kind="latency", values=[float(v) for v in range(1, 101)])
    samples_add(transport="supabase", kind="connect", count=1)
    samples_add(transport="supabase", kind="error", count=1, origin="browser")
    health = selectors.transport_health(transport="supabase", window_seconds=300)
    assert health.operations == 22
    assert health.failures == 3
    assert health.error_rate == pytest.approx(3 / 22)
    assert health.latency_samples == 100
    assert health.p50_ms == pytest.approx(50.5)
    assert health.p95_ms == pytest.approx(95.05)
    assert health.p99_ms == pytest.approx(99.01)


def test_health_only_counts_the_window():
    old = timezone.now() - timedelta(minutes=20)
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 10, at=old)
    samples_add(transport="supabase", kind="delivery", values=[1.0] * 10)
    health = selectors.transport_health(transport="supabase", window_seconds=300)
    assert (health.operations, health.failures) == (10, 0)


def test_consecutive_connect_failures_count_since_the_last_success():
    now = timezone.now()
    samples_add(
        transport="supabase", kind="connect_failure", count=4, at=now - timedelta(seconds=30)
    )
    samples_add(transport="supabase", kind="connect", count=1, at=now - timedelta(seconds=20))
    samples_add(
        transport="supabase", kind="connect_failure", count=2, at=now - timedelta(seconds=10)
    )
    # A page's failures interleave with other pages' and do not count as "in a row".
    samples_add(transport="supabase", kind="connect_failure", count=5, origin="browser")
    health = selectors.transport_health(transport="supabase", window_seconds=300)
    assert health.consecutive_connect_failures == 2


def test_the_baseline_is_the_legacy_p95_or_the_configured_value(settings):
    settings.ROLLOUT_BASELINE_P95_MS = 77.0
    thresholds = selectors.thresholds_get()
    baseline = selectors.latency_baseline(thresholds=thresholds)
    assert (baseline.p95_ms, baseline.source) == (77.0, "configured")
    samples_add(transport="websocket", kind="latency", values=[10.0] * 30)
    baseline = selectors.latency_baseline(thresholds=thresholds)
    assert (baseline.p95_ms, baseline.source) == (10.0, "measured")


def test_the_health_series_buckets_the_window():
    samples_add(transport="supabase", kind="latency", values=[5.0, 15.0])
    series = selectors.health_series(transport="supabase", window_seconds=600, buckets=30)
    assert series and series[-1]["p95_ms"] is not None


def test_health_can_read_one_origin_and_start_no_earlier_than_a_floor():
    now = timezone.now()
    samples_add(transport="supabase", kind="error", count=4, at=now - timedelta(seconds=100))
    samples_add(transport="supabase", kind="connect", count=2, at=now - timedelta(seconds=10))
    samples_add(transport="supabase", kind="error", count=3, origin="browser", reporter_id=1)
    everything = selectors.transport_health(transport="supabase", window_seconds=300)
    assert (everything.operations, everything.source) == (9, "all")
    prober = selectors.transport_health(transport="supabase", window_seconds=300, origin="prober")
    assert (prober.operations, prober.failures, prober.source) == (6, 4, "prober")
    since_floor = selectors.transport_health(
        transport="supabase", window_seconds=300, origin="prober", now=now,
        not_before=now - timedelta(seconds=60),
    )  # fmt: skip
    assert (since_floor.operations, since_floor.failures) == (2, 0)
    with pytest.raises(ValueError, match="unknown origin"):
        selectors.transport_health(transport="supabase", window_seconds=300, origin="pigeon")


def test_pages_never_set_the_latency_baseline(settings):
    settings.ROLLOUT_BASELINE_P95_MS = 77.0
    samples_add(
        transport="websocket", kind="latency", values=[0.0] * 100, origin="browser",
        reporter_id=1,
    )  # fmt: skip
    baseline = selectors.latency_baseline(thresholds=selectors.thresholds_get())
    assert (baseline.p95_ms, baseline.source, baseline.legacy_samples) == (77.0, "configured", 0)
