"""The prober's bookkeeping (deliveries, losses, latency on one clock), its service user and
session, and the command's input checks. The prober against real processes is in
test_e2e.py."""

import io

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from rollout import services
from rollout.models import HealthSample
from rollout.prober import Backoff, Probe, Prober, quota_refusal


def _prober(**kwargs) -> Prober:
    return Prober(base_url="http://127.0.0.1:8000", user_id=1, loss_timeout=10, **kwargs)


def _kinds(prober: Prober) -> list[tuple[str, str, float]]:
    return [(s.transport, s.kind, round(s.value, 3)) for s in prober.samples]


def test_the_feed_url_follows_the_base_url():
    assert _prober().feed_url == "ws://127.0.0.1:8000/ws/events/"
    secure = Prober(base_url="https://monitor.example/", user_id=1)
    assert secure.feed_url == "wss://monitor.example/ws/events/"


def test_a_delivery_records_latency_on_the_probers_clock():
    prober = _prober()
    prober.pending["p1"] = Probe("p1", sent_at=100.0, expected={"websocket", "supabase"})
    prober.delivered("websocket", {"probe_id": "p1"}, received_at=100.025)
    prober.delivered("websocket", {"probe_id": "p1"}, received_at=100.030)  # duplicate
    prober.delivered("supabase", {"probe_id": "other"}, received_at=100.030)  # not ours
    assert _kinds(prober) == [("websocket", "delivery", 1.0), ("websocket", "latency", 25.0)]
    assert "p1" in prober.pending  # supabase still outstanding


def test_a_probe_not_seen_within_the_timeout_is_lost_on_that_transport_only():
    prober = _prober()
    prober.pending["p1"] = Probe("p1", sent_at=100.0, expected={"websocket", "supabase"})
    prober.delivered("websocket", {"probe_id": "p1"}, received_at=100.01)
    prober.reap(now=109.9)
    assert ("supabase", "delivery", 0.0) not in _kinds(prober)
    prober.reap(now=110.0)
    assert _kinds(prober)[-1] == ("supabase", "delivery", 0.0)
    assert not prober.pending
    # A late arrival after the verdict changes nothing.
    prober.delivered("supabase", {"probe_id": "p1"}, received_at=111.0)
    assert len(prober.samples) == 3


def test_a_transport_that_was_down_when_the_probe_left_is_not_expected_to_deliver_it():
    prober = _prober()
    prober.pending["p1"] = Probe("p1", sent_at=100.0, expected={"websocket"})
    prober.delivered("supabase", {"probe_id": "p1"}, received_at=100.01)
    prober.reap(now=200.0)
    assert _kinds(prober) == [("websocket", "delivery", 0.0)]


def test_without_supabase_only_the_legacy_path_is_expected():
    prober = _prober(supabase=False)
    prober.pending["p1"] = Probe("p1", sent_at=0.0, expected={"websocket"})
    prober.reap(now=100.0)
    assert _kinds(prober) == [("websocket", "delivery", 0.0)]


def test_supabase_probes_are_read_from_the_rows_of_a_broadcast():
    prober = _prober()
    prober.pending["p1"] = Probe("p1", sent_at=0.0, expected={"supabase"})
    prober.pending["p2"] = Probe("p2", sent_at=0.0, expected={"supabase"})
    prober._supabase_broadcast(
        {
            "event": "events",
            "payload": {
                "events": [
                    {"seq": 3, "event_type": "monitor.probe", "payload": {"probe_id": "p1"}},
                    {"seq": 4, "event_type": "monitor.probe", "payload": "not json"},
                    {"seq": 5, "event_type": "tool.call", "payload": {"probe_id": "p2"}},
                ],
                "announced": [],
            },
        }
    )
    assert [s.kind for s in prober.samples] == ["delivery", "latency"]
    assert "p2" in prober.pending  # only rows of probe events are probes


@pytest.mark.parametrize(
    "error",
    [
        "ConnectionRateLimitReached: Too many connected users",
        "ClientJoinRateLimitReached: Too many joins per second",
        '{"status": "error", "message": "Too many messages per second"}',
    ],
)
def test_realtimes_quota_refusals_are_recognised(error):
    assert quota_refusal(f"the Realtime connection dropped: ['{error}']")


def test_other_realtime_errors_are_not_quota_refusals():
    assert not quota_refusal("Unauthorized: You do not have permissions to read from this Channel")


def test_backoff_grows_to_its_cap_and_resets():
    backoff = Backoff(first=0.5, cap=4.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert delays[-1] >= 2.0
    backoff.reset()
    assert backoff.next_delay() <= 0.5


@pytest.mark.django_db(transaction=True)
async def test_samples_are_stored_in_one_flush():
    prober = _prober()
    prober.record("websocket", "connect", at=1_700_000_000.0)
    prober.record("supabase", "connect_failure", at=1_700_000_001.0)
    await prober.flush()
    assert not prober.samples
    stored = [s async for s in HealthSample.objects.order_by("at")]
    assert [(s.transport, s.kind, s.origin) for s in stored] == [
        ("websocket", "connect", "prober"),
        ("supabase", "connect_failure", "prober"),
    ]
    await sync_to_async(connections.close_all)()


@pytest.mark.django_db
def test_the_service_user_has_no_password_and_no_staff_rights():
    user = services.prober_user_get_or_create()
    assert services.prober_user_get_or_create().pk == user.pk
    assert not user.has_usable_password()
    assert not user.is_staff and not user.is_superuser
    key = services.prober_session_create(user_id=user.pk)
    session = SessionStore(session_key=key)
    assert session["_auth_user_id"] == str(user.pk)
    assert session["_auth_user_hash"] == user.get_session_auth_hash()
    # and a request (or the feed's WebSocket) with this session is signed in as the prober,
    # whichever backend comes first in AUTHENTICATION_BACKENDS (django-axes' cannot load users)
    from django.contrib.auth import get_user
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.session = session
    assert get_user(request).pk == user.pk


@pytest.mark.django_db
def test_the_prober_session_signs_in_like_a_browsers(client, settings):
    # The first configured backend is django-axes', which cannot load a user: a session
    # naming it answered the prober's legacy feed with HTTP 500 on every connect.
    assert settings.AUTHENTICATION_BACKENDS[0].startswith("axes.")
    user = services.prober_user_get_or_create()
    client.cookies[settings.SESSION_COOKIE_NAME] = services.prober_session_create(user_id=user.pk)

    response = client.get("/api/transport")

    assert response.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [("--interval", "0"), ("--loss-timeout", "0.1"), ("--base-url", "ftp://x")],
)
def test_the_command_refuses_bad_options(args):
    with pytest.raises(CommandError):
        call_command("run_prober", *args, stdout=io.StringIO(), stderr=io.StringIO())


def test_the_first_probe_a_transport_is_expected_to_deliver_is_a_warm_up_that_records_nothing():
    prober = Prober(base_url="http://127.0.0.1:8000", user_id=1)
    first = prober.probe_new(expected={"websocket", "supabase"}, sent_at=100.0)
    second = prober.probe_new(expected={"websocket", "supabase"}, sent_at=105.0)
    prober.pending = {first.probe_id: first, second.probe_id: second}

    prober.delivered("websocket", {"probe_id": first.probe_id}, received_at=100.02)
    prober.delivered("supabase", {"probe_id": first.probe_id}, received_at=100.09)
    prober.delivered("websocket", {"probe_id": second.probe_id}, received_at=105.01)
    prober.delivered("supabase", {"probe_id": second.probe_id}, received_at=105.02)

    latencies = sorted((s.transport, round(s.value)) for s in prober.samples if s.kind == "latency")
    assert latencies == [("supabase", 20), ("websocket", 10)]
    assert prober.pending == {}


def test_a_transport_that_comes_up_later_gets_its_own_warm_up_and_a_lost_one_is_not_a_loss():
    prober = Prober(base_url="http://127.0.0.1:8000", user_id=1)
    prober.probe_new(expected={"websocket"}, sent_at=100.0)
    later = prober.probe_new(expected={"websocket", "supabase"}, sent_at=105.0)
    prober.pending = {later.probe_id: later}

    assert later.warmup == {"supabase"}
    prober.delivered("websocket", {"probe_id": later.probe_id}, received_at=105.01)
    prober.reap(now=200.0)

    assert [(s.transport, s.kind, s.value) for s in prober.samples] == [
        ("websocket", "delivery", 1.0),
        ("websocket", "latency", pytest.approx(10.0, abs=0.01)),
    ]
