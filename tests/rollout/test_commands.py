"""``manage.py rollout`` for operators without a browser."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from rollout.models import AuditEntry, RolloutState
from tests.rollout.factories import analysis_passing

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("rollout", *args, stdout=out)
    return out.getvalue()


def test_status_prints_the_state_cohorts_and_health():
    out = run("status")
    assert "stage" in out and "shadow" in out
    assert "kill switch" in out
    assert "supabase" in out and "websocket" in out
    assert "p95 ms" in out


def test_stage_kill_resume_are_audited(staff_user):
    analysis_passing()  # the stage in force passed its analysis
    assert "stage is now 50" in run("stage", "50", "--reason", "half", "--as", "grace")
    assert "kill switch thrown" in run("kill", "--reason", "pager went off")
    assert "already on" in run("kill", "--reason", "again")
    assert "resumed at stage 50" in run("resume", "--reason", "fine now", "--as", "grace")
    entries = list(AuditEntry.objects.order_by("id").values_list("action", "actor_label"))
    assert entries == [("stage", "grace"), ("kill", "system"), ("resume", "grace")]
    assert "ON" not in run("status").split("kill switch")[1].split("\n")[0]


@pytest.mark.parametrize(
    "args",
    [
        ("stage", "75"),
        ("kill",),
        ("kill", "--reason", "  "),
        ("resume", "--reason", "x", "--as", "nobody"),
        ("explode",),
    ],
)
def test_bad_input_fails_clearly_and_changes_nothing(args):
    with pytest.raises((CommandError, SystemExit)):
        run(*args)
    assert not AuditEntry.objects.exists()
    assert RolloutState.objects.get(id=1).stage == "shadow"


def test_bad_input_exits_non_zero_from_the_shell():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", "rollout", "stage", "75"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "monitor_project.settings.test"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "invalid choice: '75'" in result.stderr


def test_status_says_a_breach_in_shadow_blocks_promotion_without_a_kill_switch():
    from tests.rollout.factories import samples_add

    assert "promotion blocked" not in run("status")
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    out = run("status")
    assert "breach" in out and "promotion blocked" in out
    assert "kill switch stays off" in out


def test_stage_refuses_a_promotion_during_a_breach_and_allows_lowering(staff_user):
    from tests.rollout.factories import samples_add

    analysis_passing()
    run("stage", "10", "--reason", "first cohort")
    analysis_passing()
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    with pytest.raises(CommandError, match="promotion blocked"):
        run("stage", "50", "--reason", "half")
    assert "stage is now shadow" in run("stage", "shadow", "--reason", "back")
