"""What pages' telemetry weighs (rollout/weighting.py), computed in PostgreSQL.

One user's reports weigh at most a bounded share of a window, page telemetry counts only
with a quorum of distinct users, and the prober's samples are not part of it at all.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from rollout.weighting import telemetry_weighted
from tests.rollout.factories import samples_add

pytestmark = pytest.mark.django_db


def pages(**kwargs):
    return telemetry_weighted(transport="supabase", window_seconds=300, **kwargs)


def page_samples(reporter_id: int, kind: str, **kwargs) -> None:
    samples_add(transport="supabase", kind=kind, origin="browser", reporter_id=reporter_id,
                **kwargs)  # fmt: skip


def test_one_users_operations_count_up_to_the_cap_and_keep_their_error_rate(settings):
    settings.ROLLOUT_TELEMETRY_USER_MAX_OPERATIONS = 50
    page_samples(1, "error", count=1000)  # a flood of failures
    page_samples(2, "delivery", values=[1.0] * 190 + [0.0] * 10)  # 200 ops, 5 % lost
    page_samples(3, "connect", count=10)
    figures = pages()
    assert figures.users == 3
    # 50 (capped) + 50 (capped: 200 scaled by 1/4) + 10 (under the cap)
    assert figures.operations == pytest.approx(110)
    # all 50 of user 1; user 2's 10 failures scaled by 1/4; none of user 3
    assert figures.failures == pytest.approx(52.5)
    own = {r.reporter_id: (r.operations, r.failures) for r in figures.reporters}
    assert own == {1: (1000, 1000), 2: (200, 10), 3: (10, 0)}  # unweighted, per user


def test_one_users_latencies_enter_the_percentiles_capped_and_spread(settings):
    settings.ROLLOUT_TELEMETRY_USER_MAX_LATENCIES = 50
    page_samples(1, "latency", values=[float(v) for v in range(1, 201)])
    page_samples(2, "latency", values=[600_000.0] * 200)
    page_samples(3, "latency", values=[10.0] * 20)
    figures = pages()
    assert figures.latency_samples == 50 + 50 + 20
    assert {r.reporter_id: r.latency_samples for r in figures.reporters} == {
        1: 200, 2: 200, 3: 20,
    }  # fmt: skip
    # user 2 holds 50 of 120 values: the figure moves, which is why a latency breach from
    # pages also needs a quorum of users who are slow on their own figures
    assert figures.p99_ms == 600_000.0
    assert pages(max_latencies_per_user=4).latency_samples == 4 + 4 + 4


def test_the_kept_latencies_of_a_user_are_evenly_spaced_over_its_values():
    page_samples(1, "latency", values=[float(v) for v in range(1, 201)])
    figures = pages(max_latencies_per_user=4)  # ranks 1, 51, 101, 151
    assert figures.latency_samples == 4
    assert figures.p50_ms == pytest.approx((51 + 101) / 2)


def test_page_telemetry_counts_only_with_a_quorum_of_distinct_users(settings):
    settings.ROLLOUT_TELEMETRY_MIN_USERS = 5
    for reporter in range(1, 5):
        page_samples(reporter, "connect", count=1)
    assert pages().users == 4 and not pages().counts
    assert pages().source_label == "pages (4 users, needs 5)"
    page_samples(5, "connect", count=1)
    assert pages().counts
    assert pages().source_label == "pages (5 users)"


def test_users_over_a_limit_are_judged_on_their_own_figures():
    page_samples(1, "delivery", values=[0.0] * 3 + [1.0] * 7)  # 30 % lost
    page_samples(2, "delivery", values=[0.0] * 1 + [1.0] * 49)  # 2 % lost
    page_samples(1, "latency", values=[500.0] * 20)
    page_samples(2, "latency", values=[50.0] * 20)
    figures = pages()
    assert figures.users_over_error_rate(0.05) == 1
    assert figures.users_over_latency(100.0) == 1
    assert figures.users_over_latency(1000.0) == 0


def test_the_prober_and_other_transports_are_not_part_of_page_telemetry():
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)  # prober
    samples_add(transport="websocket", kind="error", count=5, origin="browser", reporter_id=1)
    figures = pages()
    assert (figures.users, figures.operations, figures.latency_samples) == (0, 0, 0)
    assert figures.error_rate is None and figures.p95_ms is None


def test_only_the_window_and_nothing_before_the_judging_floor_counts():
    now = timezone.now()
    page_samples(1, "error", count=5, at=now - timedelta(minutes=10))  # before the window
    page_samples(2, "error", count=5, at=now - timedelta(seconds=100))  # before the floor
    page_samples(3, "error", count=5, at=now - timedelta(seconds=10))
    assert [r.reporter_id for r in pages(now=now).reporters] == [2, 3]
    floor = now - timedelta(seconds=60)
    figures = pages(now=now, not_before=floor)
    assert [r.reporter_id for r in figures.reporters] == [3]
    assert figures.since == floor


def test_samples_without_a_reporter_count_as_one_reporter():
    samples_add(transport="supabase", kind="error", count=3, origin="browser")
    samples_add(transport="supabase", kind="connect", count=3, origin="browser")
    figures = pages()
    assert figures.users == 1 and figures.operations == 6


def test_the_bounds_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        pages(max_operations_per_user=0)
