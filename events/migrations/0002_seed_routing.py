"""Seed the default classification rules, routes and the seq counter row."""

from django.db import migrations

KEYWORDS = [
    # (keyword, criticality, priority): critical words win over the rest.
    ("error", "critical", 10),
    ("fail", "critical", 10),
    ("timeout", "critical", 10),
    ("exception", "critical", 10),
    ("crash", "critical", 10),
    ("cache", "performance", 20),
    ("metric", "performance", 20),
    ("latency", "performance", 20),
    ("session", "user_activity", 30),
    ("user", "user_activity", 30),
    ("test", "debug", 40),
    ("debug", "debug", 40),
]
PAYLOAD_KEYS = [("error", "critical", 10)]
ROUTES = [
    # (criticality, to_websocket, to_supabase)
    ("critical", True, True),
    ("system", True, True),
    ("performance", True, True),
    ("user_activity", True, True),
    ("debug", True, False),
]


def seed(apps, schema_editor):
    ClassificationRule = apps.get_model("events", "ClassificationRule")
    Route = apps.get_model("events", "Route")
    SeqCounter = apps.get_model("events", "SeqCounter")
    for value, criticality, priority in KEYWORDS:
        ClassificationRule.objects.get_or_create(
            match_kind="keyword", value=value,
            defaults={"criticality": criticality, "priority": priority},
        )
    for value, criticality, priority in PAYLOAD_KEYS:
        ClassificationRule.objects.get_or_create(
            match_kind="payload_key", value=value,
            defaults={"criticality": criticality, "priority": priority},
        )
    for criticality, to_websocket, to_supabase in ROUTES:
        Route.objects.get_or_create(
            criticality=criticality,
            defaults={"to_websocket": to_websocket, "to_supabase": to_supabase},
        )
    SeqCounter.objects.get_or_create(pk=1, defaults={"last_seq": 0})


class Migration(migrations.Migration):
    dependencies = [("events", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
