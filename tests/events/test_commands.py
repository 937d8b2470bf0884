"""create_producer and emit_events."""

import pytest
from django.core.management import CommandError, call_command

from events.models import Event, Producer
from events.selectors import producer_for_token

pytestmark = pytest.mark.django_db


def test_create_producer_prints_a_working_token_once_and_stores_only_its_hash(capsys):
    call_command("create_producer", "billing")
    token = capsys.readouterr().out.strip()
    producer = Producer.objects.get(name="billing")
    assert token not in (producer.token_hash, producer.token_prefix)
    assert producer_for_token(token) == producer
    assert producer_for_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


def test_create_producer_refuses_a_duplicate_name():
    call_command("create_producer", "billing")
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_producer", "billing")


def test_emit_events_publishes_the_requested_count(capsys):
    call_command("emit_events", "--count", "25", "--rate", "5000", "--quiet", "--seed", "1")
    assert Event.objects.count() == 25
    assert "sent 25 events" in capsys.readouterr().out


def test_emit_events_with_a_fixed_type_and_source():
    call_command(
        "emit_events",
        "--count",
        "3",
        "--rate",
        "1000",
        "--quiet",
        "--type",
        "cache.miss",
        "--source",
        "edge",
    )
    assert set(Event.objects.values_list("event_type", "source", "criticality")) == {
        ("cache.miss", "edge", "performance")
    }


@pytest.mark.parametrize(
    "args",
    [["--rate", "0"], ["--count", "-1"], ["--type", "Bad Type"], ["--source", "x" * 101]],
)
def test_emit_events_rejects_bad_arguments_and_publishes_nothing(args):
    with pytest.raises(CommandError):
        call_command("emit_events", "--quiet", *args)
    assert Event.objects.count() == 0
