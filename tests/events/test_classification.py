"""Classification: exact matches, then keywords and globs, then payload keys, else system."""

import pytest

from events.classification import Rule, classify, order_rules
from events.models import ClassificationRule
from events.selectors import routing_table

RULES = order_rules(
    [
        Rule("payload_key", "error", "critical", 10),
        Rule("keyword", "cache", "performance", 20),
        Rule("keyword", "fail", "critical", 10),
        Rule("keyword", "user", "user_activity", 30),
        Rule("keyword", "test", "debug", 40),
        Rule("glob", "db.*.slow", "performance", 50),
        Rule("exact", "user.failed_login_drill", "debug", 100),
    ]
)


@pytest.mark.parametrize(
    ("event_type", "payload", "expected"),
    [
        ("user.failed_login_drill", {}, "debug"),  # exact beats every keyword
        ("login_failed", {}, "critical"),  # a word that starts with "fail"
        ("user.failed", {}, "critical"),  # critical keyword has the lower priority
        ("cache.miss", {}, "performance"),
        ("user.login", {}, "user_activity"),
        ("latest.value", {}, "system"),  # "test" is not the start of a word here
        ("test.run", {}, "debug"),
        ("db.orders.slow", {}, "performance"),  # glob
        ("job.done", {"error": "boom"}, "critical"),  # payload hint
        ("job.done", {"ok": True}, "system"),  # nothing matched
    ],
)
def test_rules_apply_in_order(event_type, payload, expected):
    assert classify(event_type=event_type, payload=payload, rules=RULES) == expected


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [(None, None), (42, []), ("", "not-an-object"), ("x" * 10_000, {"error": None}), ("a", 3.5)],
)
def test_classification_never_raises_on_odd_input(event_type, payload):
    assert classify(event_type=event_type, payload=payload, rules=RULES) in {
        "critical",
        "performance",
        "user_activity",
        "system",
        "debug",
    }


def test_a_broken_rule_is_passed_over():
    broken = [Rule("glob", None, "debug"), Rule("keyword", "cache", "performance")]  # type: ignore[arg-type]
    assert classify(event_type="cache.miss", payload={}, rules=broken) == "performance"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("event_type", "payload", "expected"),
    [
        ("tool.error", {}, "critical"),
        ("http.timeout", {}, "critical"),
        ("worker.exception", {}, "critical"),
        ("cache.hit_ratio", {}, "performance"),
        ("app.metrics", {}, "performance"),
        ("http.latency", {}, "performance"),
        ("session.started", {}, "user_activity"),
        ("user.login", {}, "user_activity"),
        ("test.ping", {}, "debug"),
        ("debug.trace", {}, "debug"),
        ("deploy.done", {"error": "x"}, "critical"),
        ("health.check", {}, "system"),
    ],
)
def test_seeded_default_rules(event_type, payload, expected):
    table = routing_table()
    assert classify(event_type=event_type, payload=payload, rules=table.rules) == expected


@pytest.mark.django_db
def test_a_rule_edited_in_the_admin_applies_to_the_next_event():
    ClassificationRule.objects.create(match_kind="exact", value="health.check", criticality="debug")
    assert classify(event_type="health.check", payload={}, rules=routing_table().rules) == "debug"


def test_new_rules_apply_at_once_even_when_the_last_ones_were_kept():
    first = tuple(order_rules([Rule("keyword", "Cache", "performance")]))
    second = tuple(order_rules([Rule("keyword", "cache", "debug")]))
    assert classify(event_type="cache.miss", payload={}, rules=first) == "performance"
    assert classify(event_type="cache.miss", payload={}, rules=second) == "debug"
    assert classify(event_type="cache.miss", payload={}, rules=first) == "performance"

    changing = [Rule("keyword", "cache", "performance")]
    assert classify(event_type="cache.miss", payload={}, rules=changing) == "performance"
    changing[0] = Rule("keyword", "cache", "debug")
    assert classify(event_type="cache.miss", payload={}, rules=changing) == "debug"


def test_what_an_event_type_decided_is_kept_but_payload_rules_still_see_each_payload():
    rules = tuple(
        order_rules(
            [Rule("payload_key", "error", "critical"), Rule("keyword", "cache", "performance")]
        )
    )
    for _ in range(2):  # the second time from what the first one kept
        assert classify(event_type="job.done", payload={"error": "x"}, rules=rules) == "critical"
        assert classify(event_type="job.done", payload={}, rules=rules) == "system"
        assert classify(event_type="cache.miss", payload={"error": "x"}, rules=rules) == (
            "performance"
        )
