"""POST/GET/DELETE /__faults: injected REST errors and latency; the endpoint's guards."""

from __future__ import annotations

import time

import httpx
import pytest
from postgrest.exceptions import APIError
from starlette.applications import Starlette
from starlette.testclient import TestClient

from supabase_local.faults import FaultInjector
from tests.supabase_local.conftest import event_row


def test_error_rate_one_fails_every_rest_request_and_writes_nothing(
    supabase_faults_cleared, service_client, seq_block
):
    server = supabase_faults_cleared
    (seq,) = seq_block(1)
    server.set_faults(rest_error_rate=1.0, rest_error_status=500)

    with pytest.raises(APIError) as raised:
        service_client.table("monitoring_events").insert(event_row(seq)).execute()

    assert raised.value.code == "PGRST000"
    assert server.sql("SELECT seq FROM public.monitoring_events WHERE seq = %s", seq) == []
    response = httpx.get(
        f"{server.url}/rest/v1/monitoring_events", headers={"apikey": server.service_role_key}
    )
    assert response.status_code == 500


def test_status_is_configurable(supabase_faults_cleared):
    server = supabase_faults_cleared
    server.set_faults(rest_error_rate=1.0, rest_error_status=503)

    response = httpx.get(
        f"{server.url}/rest/v1/monitoring_events", headers={"apikey": server.service_role_key}
    )

    assert response.status_code == 503
    assert set(response.json()) == {"code", "message", "details", "hint"}


def test_latency_is_added(supabase_faults_cleared, service_client):
    server = supabase_faults_cleared
    server.set_faults(rest_latency_ms=300)

    started = time.monotonic()
    service_client.table("monitoring_events").select("seq").limit(1).execute()

    assert time.monotonic() - started >= 0.3


def test_delete_clears_and_get_shows(supabase_faults_cleared, service_client):
    supabase_local = supabase_faults_cleared
    supabase_local.set_faults(rest_error_rate=0.5, realtime_drop_rate=0.25)
    shown = httpx.get(f"{supabase_local.url}/__faults").json()
    cleared = supabase_local.clear_faults()

    assert shown["rest_error_rate"] == 0.5 and shown["realtime_drop_rate"] == 0.25
    assert cleared == {
        "rest_error_rate": 0.0,
        "rest_error_status": 503,
        "rest_latency_ms": 0,
        "realtime_drop_rate": 0.0,
        "realtime_latency_ms": 0,
    }
    service_client.table("monitoring_events").select("seq").limit(1).execute()


@pytest.mark.parametrize(
    "body",
    [
        {"rest_error_rate": 2},
        {"rest_error_rate": "half"},
        {"rest_error_status": 200},
        {"rest_latency_ms": -1},
        {"no_such_fault": 1},
        {"close_realtime_connections": "yes"},
        [1, 2],
    ],
)
def test_bad_settings_are_400_and_change_nothing(supabase_faults_cleared, body):
    server = supabase_faults_cleared
    server.set_faults(rest_latency_ms=5)

    response = httpx.post(f"{server.url}/__faults", json=body)

    assert response.status_code == 400
    assert "message" in response.json()
    assert httpx.get(f"{server.url}/__faults").json()["rest_latency_ms"] == 5


def _app(enabled: bool) -> tuple[Starlette, list[str]]:
    injector = FaultInjector(enabled=enabled)
    calls: list[str] = []

    async def hook() -> None:
        calls.append("closed")

    injector.on_close_realtime(hook)
    return Starlette(routes=injector.routes()), calls


def test_endpoint_is_404_without_the_faults_flag():
    app, _ = _app(enabled=False)
    with TestClient(app, client=("127.0.0.1", 5000)) as client:
        assert client.get("/__faults").status_code == 404
        assert client.post("/__faults", json={"rest_error_rate": 1}).status_code == 404


def test_endpoint_refuses_non_loopback_clients():
    app, _ = _app(enabled=True)
    with TestClient(app, client=("192.0.2.10", 5000)) as client:
        response = client.post("/__faults", json={"rest_error_rate": 1})
    assert response.status_code == 403


def test_close_realtime_connections_awaits_every_hook():
    app, calls = _app(enabled=True)
    with TestClient(app, client=("127.0.0.1", 5000)) as client:
        response = client.post("/__faults", json={"close_realtime_connections": True})
    assert response.status_code == 200
    assert calls == ["closed"]
