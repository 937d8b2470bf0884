"""POST /api/events (ingest) and GET /api/events (backfill)."""

import json

import pytest

from events.models import Event, SeqCounter
from events.services import event_publish_batch

pytestmark = pytest.mark.django_db

URL = "/api/events"


def post(client, body, *, token: str | None, content_type: str = "application/json"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(URL, data=data, content_type=content_type, headers=headers)


def stored() -> tuple[int, int]:
    return Event.objects.count(), SeqCounter.objects.get().last_seq


def test_one_event_is_answered_201_with_its_seq(client, producer_token):
    response = post(client, {"event_type": "tool.call", "source": "svc"}, token=producer_token)
    assert response.status_code == 201
    body = response.json()
    assert body["duplicate"] is False
    assert Event.objects.get(seq=body["seq"]).producer.name == "test-producer"


def test_a_batch_is_answered_with_every_seq_in_order(client, producer_token):
    events = [{"event_type": "tool.call", "source": f"svc-{i}"} for i in range(3)]
    response = post(client, {"events": events}, token=producer_token)
    assert response.status_code == 201
    seqs = [item["seq"] for item in response.json()["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [Event.objects.get(seq=s).source for s in seqs] == ["svc-0", "svc-1", "svc-2"]


def test_a_retried_request_with_an_idempotency_key_is_not_stored_twice(client, producer_token):
    body = {"event_type": "a", "source": "s", "idempotency_key": "retry-1"}
    first = post(client, body, token=producer_token).json()
    second = post(client, body, token=producer_token).json()
    assert second == {"seq": first["seq"], "duplicate": True}


@pytest.mark.parametrize("token", [None, "mon_nothere_secret", "garbage", "Bearer"])
def test_without_a_valid_token_ingest_is_401(client, producer_token, token):
    before = stored()
    response = post(client, {"event_type": "a", "source": "s"}, token=token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert stored() == before


def test_a_deactivated_producer_is_401(client, producer_token):
    from events.models import Producer

    Producer.objects.update(is_active=False)
    assert post(client, {"event_type": "a", "source": "s"}, token=producer_token).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_type": "UPPER", "source": "s"}, "event_type"),
        ({"source": "s"}, "event_type"),
        ({"event_type": "a"}, "source"),
        ({"event_type": "a", "source": "s", "payload": "text"}, "payload"),
        ({"event_type": "a", "source": "s", "occurred_at": "not a time"}, "occurred_at"),
        ({"event_type": "a", "source": "s", "extra": 1}, "extra"),
        ({"events": []}, "events"),
        ({"events": "no"}, "events"),
        ({"events": [{"event_type": "a", "source": "s"}] * 501}, "events"),
        ({"events": [{"event_type": "a", "source": "s"}, {"event_type": "a"}]}, "events[1].source"),
        ({"events": [{"event_type": "a", "source": "s"}], "more": 1}, "more"),
        ([1, 2], "body"),
    ],
)
def test_a_bad_field_is_400_naming_it_and_stores_nothing(client, producer_token, body, field):
    before = stored()
    response = post(client, body, token=producer_token)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert stored() == before


def test_a_payload_over_64_kib_is_413_and_stores_nothing(client, producer_token):
    before = stored()
    body = {"event_type": "a", "source": "s", "payload": {"blob": "x" * (64 * 1024)}}
    response = post(client, body, token=producer_token)
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "payload"
    assert stored() == before


def test_a_body_over_the_limit_is_413(client, producer_token, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(
        client,
        {"event_type": "a", "source": "s", "payload": {"k": "x" * 2000}},
        token=producer_token,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"event_type": "a", "source": "s"',
        b"\xff\xfe{}",
        b" ",
        b'{"n": NaN}',
        b"[" * 100_000,
    ],
)
def test_malformed_json_is_400_and_stores_nothing(client, producer_token, raw):
    before = stored()
    response = post(client, raw, token=producer_token)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert stored() == before


def test_non_json_content_type_is_415(client, producer_token):
    response = post(
        client,
        "event_type=a",
        token=producer_token,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 415


def test_other_methods_are_405_json(client):
    response = client.put(URL)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- backfill ---------------------------------------------------------------------------


@pytest.fixture
def ten_events():
    return [
        r.seq
        for r in event_publish_batch(
            events=[{"event_type": "a", "source": f"s{i}"} for i in range(10)]
        )
    ]


def test_backfill_returns_events_after_a_seq_in_order(signed_in_client, ten_events):
    response = signed_in_client.get(URL, {"after": ten_events[2], "limit": 4})
    assert response.status_code == 200
    body = response.json()
    assert [e["seq"] for e in body["events"]] == ten_events[3:7]
    assert body["next_after"] == ten_events[6]
    first = body["events"][0]
    assert set(first) == {
        "seq",
        "event_type",
        "source",
        "criticality",
        "occurred_at",
        "received_at",
        "payload",
        "checksum",
    }


def test_backfill_pages_to_the_end(signed_in_client, ten_events):
    seen, after = [], 0
    while True:
        body = signed_in_client.get(URL, {"after": after, "limit": 3}).json()
        if not body["events"]:
            break
        seen += [e["seq"] for e in body["events"]]
        after = body["next_after"]
    assert seen == ten_events
    assert body["next_after"] == ten_events[-1]


def test_backfill_defaults_to_200_events(signed_in_client):
    event_publish_batch(events=[{"event_type": "a", "source": "s"}] * 250)
    assert len(signed_in_client.get(URL).json()["events"]) == 200


def test_backfill_accepts_a_producer_token(client, producer_token, ten_events):
    response = client.get(URL, headers={"Authorization": f"Bearer {producer_token}"})
    assert [e["seq"] for e in response.json()["events"]] == ten_events


def test_backfill_can_be_limited_to_what_a_sink_receives(signed_in_client):
    seqs = [
        r.seq
        for r in event_publish_batch(
            events=[
                {"event_type": "debug.trace", "source": "s"},
                {"event_type": "a", "source": "s"},
            ]
        )
    ]
    body = signed_in_client.get(URL, {"sink": "supabase"}).json()
    assert [e["seq"] for e in body["events"]] == seqs[1:]


def test_backfill_refuses_anonymous_callers(client):
    response = client.get(URL)
    assert response.status_code == 401
    assert "error" in response.json()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "x"}, "after"),
        ({"after": "-1"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"sink": "pigeon"}, "sink"),
        ({"after": str(2**70)}, "after"),
    ],
)
def test_backfill_parameters_are_validated(signed_in_client, params, field):
    response = signed_in_client.get(URL, params)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


# --- synthetic events in the backfill ------------------------------------------------------


@pytest.fixture
def with_a_probe():
    events = [
        {"event_type": "a", "source": "s"},
        {"event_type": "monitor.probe", "source": "prober"},
        {"event_type": "a", "source": "s"},
    ]
    return [r.seq for r in event_publish_batch(events=events)]


def test_backfill_leaves_synthetic_events_out_by_default(signed_in_client, with_a_probe):
    body = signed_in_client.get(URL).json()
    assert [e["seq"] for e in body["events"]] == [with_a_probe[0], with_a_probe[2]]
    assert body["next_after"] == with_a_probe[2]


def test_staff_and_producers_can_ask_for_synthetic_events(
    client, staff_user, producer_token, with_a_probe
):
    client.force_login(staff_user)
    body = client.get(URL, {"synthetic": "show"}).json()
    assert [e["seq"] for e in body["events"]] == with_a_probe
    client.logout()
    response = client.get(
        URL, {"synthetic": "show"}, headers={"Authorization": f"Bearer {producer_token}"}
    )
    assert [e["seq"] for e in response.json()["events"]] == with_a_probe


def test_a_user_asking_for_synthetic_events_is_refused(signed_in_client, with_a_probe):
    response = signed_in_client.get(URL, {"synthetic": "show"})
    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "forbidden",
        "message": "only staff can show synthetic events",
        "field": "synthetic",
    }


def test_the_synthetic_parameter_is_validated(signed_in_client):
    response = signed_in_client.get(URL, {"synthetic": "yes"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "synthetic"
