"""SUPABASE_PLAN: the project's Realtime quotas, named or explicit, checked at start-up."""

import pytest
from django.core.checks import run_checks

from events.checks import supabase_plan_check
from events.supabase_plan import PlanError, messages_budget, plan_parse, supabase_plan


@pytest.mark.parametrize(
    ("value", "connections", "messages", "joins", "payload_kb"),
    [
        ("free", 200, 100, 100, 256),
        ("pro", 500, 500, 500, 3000),
        ("pro-no-cap", 10_000, 2500, 2500, 3000),
        ("Team", 10_000, 2500, 2500, 3000),
    ],
)
def test_named_plans_carry_the_documented_quotas(value, connections, messages, joins, payload_kb):
    plan = plan_parse(value)
    assert (plan.connections, plan.messages, plan.joins, plan.payload_kb) == (
        connections, messages, joins, payload_kb,
    )  # fmt: skip
    assert plan.limited


def test_unset_means_unlimited_with_realtimes_own_payload_limit():
    for value in ("", "  ", "unlimited"):
        plan = plan_parse(value)
        assert plan.name == "unlimited" and not plan.limited
        assert plan.connections is plan.messages is plan.joins is None
        assert plan.payload_kb == 3000
    assert messages_budget(plan_parse("")) is None


def test_a_custom_plan_gives_all_four_limits():
    plan = plan_parse("custom:connections=1000, messages=800,joins=300,payload_kb=512")
    assert plan.name == "custom"
    assert (plan.connections, plan.messages, plan.joins, plan.payload_kb) == (1000, 800, 300, 512)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("enterprise", "unknown Supabase plan"),
        ("custom:connections=10,messages=10,joins=10", "missing: payload_kb"),
        ("custom:connections=10,messages=10,joins=10,payload_kb=0", "above zero"),
        ("custom:connections=-1,messages=10,joins=10,payload_kb=1", "above zero"),
        ("custom:connections=ten,messages=10,joins=10,payload_kb=1", "whole number"),
        ("custom:connections=1,messages=1,joins=1,payload_kb=1,users=5", "unknown limit"),
        ("custom:connections=1,connections=2", "twice"),
        ("custom:connections", "not name=number"),
    ],
)
def test_a_bad_plan_is_refused_with_what_is_wrong(value, says):
    with pytest.raises(PlanError, match=says):
        plan_parse(value)


def test_the_budget_is_a_share_of_the_plans_messages(settings):
    settings.SUPABASE_PLAN = "team"
    assert messages_budget() == 2000  # 80 % of 2,500 by default
    settings.SUPABASE_MESSAGES_BUDGET_PERCENT = 50
    assert messages_budget() == 1250
    assert supabase_plan().name == "team"


def test_the_system_check_refuses_a_bad_plan_and_a_bad_budget(settings):
    settings.SUPABASE_PLAN = "custom:connections=5"
    settings.SUPABASE_MESSAGES_BUDGET_PERCENT = 150
    problems = supabase_plan_check(None)
    assert [p.id for p in problems] == ["events.E006", "events.E006"]
    assert "missing" in problems[0].msg and "at most 100" in problems[1].msg
    assert any(p.id == "events.E006" for p in run_checks())


def test_a_real_project_without_a_plan_is_warned_about_and_a_local_one_is_not(settings):
    settings.SUPABASE_PLAN = ""
    settings.SUPABASE_URL = "https://abcd.supabase.co"
    assert [p.id for p in supabase_plan_check(None)] == ["events.W003"]
    settings.SUPABASE_URL = "http://127.0.0.1:54321"
    assert supabase_plan_check(None) == []
    settings.SUPABASE_URL = "https://abcd.supabase.co"
    settings.SUPABASE_PLAN = "pro"
    assert supabase_plan_check(None) == []
