"""create_producer and emit_events."""

import json

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


def ingest(client, token: str):
    return client.post(
        "/api/events",
        data=json.dumps({"event_type": "tool.call", "source": "billing"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_create_producer_refuses_a_duplicate_name_and_says_how_to_rotate(capsys):
    call_command("create_producer", "billing")
    token = capsys.readouterr().out.strip()
    with pytest.raises(CommandError) as refused:
        call_command("create_producer", "billing")
    assert str(refused.value) == (
        "A producer named 'billing' already exists. To issue it a new token (the old one "
        "then stops working), run: manage.py create_producer billing --rotate"
    )
    assert refused.value.returncode == 1
    assert capsys.readouterr().out == ""
    assert Producer.objects.filter(name="billing").count() == 1
    assert producer_for_token(token) == Producer.objects.get(name="billing")


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_create_producer_refuses_a_bad_name_in_plain_words(name):
    with pytest.raises(CommandError, match=r"^The producer name must be 1-100 characters\.$"):
        call_command("create_producer", name)
    assert not Producer.objects.exists()


def test_rotate_issues_a_new_token_and_the_ingest_api_refuses_the_old_one(client, capsys):
    call_command("create_producer", "billing")
    old_token = capsys.readouterr().out.strip()
    assert ingest(client, old_token).status_code == 201

    call_command("create_producer", "billing", "--rotate")
    printed = capsys.readouterr()
    new_token = printed.out.strip()
    assert new_token != old_token
    assert "old token no longer works" in printed.err
    assert new_token not in printed.err

    refused = ingest(client, old_token)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"]
    accepted = ingest(client, new_token)
    assert accepted.status_code == 201
    assert Event.objects.get(seq=accepted.json()["seq"]).producer.name == "billing"
    assert Event.objects.count() == 2
    assert Producer.objects.count() == 1


def test_rotate_of_an_unknown_producer_is_refused_and_creates_nothing():
    with pytest.raises(CommandError, match="no producer named 'billing'; run without --rotate"):
        call_command("create_producer", "billing", "--rotate")
    assert not Producer.objects.exists()


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
