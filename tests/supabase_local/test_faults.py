"""POST/GET/DELETE /__faults: injected REST errors and latency; the endpoint's guards."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from postgrest.exceptions import APIError
from starlette.applications import Starlette
from starlette.testclient import TestClient

from supabase_local.faults import FaultInjector
from tests.supabase_local.conftest import event_row


def _key(server):
    return {"apikey": server.service_role_key}


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
    shown = httpx.get(f"{supabase_local.url}/__faults", headers=_key(supabase_local)).json()
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


def _upsert(server, rows, *, timeout: float) -> httpx.Response:
    """The Supabase sink's write: an upsert on seq that ignores rows already there."""
    return httpx.post(
        f"{server.url}/rest/v1/monitoring_events",
        json=rows,
        headers={
            "apikey": server.service_role_key,
            "Authorization": f"Bearer {server.service_role_key}",
            "Prefer": "resolution=ignore-duplicates,return=minimal",
        },
        params={"on_conflict": "seq"},
        timeout=timeout,
    )


def _count(server, seqs) -> int:
    rows = server.sql(
        "SELECT count(*) AS n FROM monitoring_events WHERE seq BETWEEN %s AND %s",
        seqs[0],
        seqs[-1],
    )
    return rows[0]["n"]


def test_a_write_held_by_latency_never_lands_once_its_client_has_hung_up(
    supabase_faults_cleared, seq_block
):
    # given: 300 rows, more body than uvicorn reads ahead (64 KiB), as a sink batch is
    server = supabase_faults_cleared
    seqs = seq_block(300)
    server.set_faults(rest_latency_ms=3000)
    # when: the writer gives up while the write is held, as a SIGKILLed worker's socket
    # closes (issue 17: such a write landed after the next test had emptied the table)
    with pytest.raises(httpx.ReadTimeout):
        _upsert(server, [event_row(seq) for seq in seqs], timeout=0.5)
    # then: once nothing is in flight (the 3 s are over), the abandoned write has not landed
    assert server.rest_in_flight(wait=10) == 0
    assert _count(server, seqs) == 0
    assert "dropped: the client hung up" in server.log_tail(200)


def test_clearing_faults_releases_held_writes_and_answers_after_they_landed(
    supabase_faults_cleared, seq_block
):
    server = supabase_faults_cleared
    seqs = seq_block(300)
    server.set_faults(rest_latency_ms=30_000)
    answers: list[httpx.Response] = []
    writer = threading.Thread(
        target=lambda: answers.append(_upsert(server, [event_row(seq) for seq in seqs], timeout=60))
    )
    writer.start()
    try:
        _wait_until_held(server)

        server.clear_faults()

        # The DELETE answered after the released write was handled, not 30 s later.
        assert _count(server, seqs) == 300
    finally:
        writer.join(timeout=60)
    assert [answer.status_code for answer in answers] == [201]


def _wait_until_held(server, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while server.rest_in_flight() == 0:
        assert time.monotonic() < deadline, "the write never reached supabase_local"
        time.sleep(0.02)


def test_in_flight_counts_rest_requests_until_they_are_handled(supabase_faults_cleared):
    server = supabase_faults_cleared
    server.set_faults(rest_latency_ms=30_000)
    reader = threading.Thread(
        target=lambda: httpx.get(
            f"{server.url}/rest/v1/monitoring_events?limit=1",
            headers={"apikey": server.service_role_key},
            timeout=60,
        )
    )
    reader.start()
    try:
        _wait_until_held(server)
        assert server.rest_in_flight() == 1
        # A bounded wait answers the count it saw when the time ran out.
        assert server.rest_in_flight(wait=0.2) == 1
    finally:
        server.clear_faults()
        reader.join(timeout=60)
    assert server.rest_in_flight(wait=5) == 0


@pytest.mark.parametrize("wait", ["-1", "61", "soon", "nan", "inf"])
def test_in_flight_wait_out_of_range_is_400(supabase_local, wait):
    response = httpx.get(
        f"{supabase_local.url}/__faults/in-flight",
        params={"wait": wait},
        headers=_key(supabase_local),
    )

    assert response.status_code == 400
    assert "wait must be" in response.json()["message"]


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

    response = httpx.post(f"{server.url}/__faults", json=body, headers=_key(server))

    assert response.status_code == 400
    assert "message" in response.json()
    assert httpx.get(f"{server.url}/__faults", headers=_key(server)).json()["rest_latency_ms"] == 5


SERVICE_KEY = {"apikey": "the-service-key"}


def _app(enabled: bool) -> tuple[Starlette, list[str]]:
    injector = FaultInjector(enabled=enabled, authorize=lambda token: token == "the-service-key")
    calls: list[str] = []

    async def hook() -> None:
        calls.append("closed")

    injector.on_close_realtime(hook)
    return Starlette(routes=injector.routes()), calls


def test_endpoint_is_404_without_the_faults_flag():
    app, _ = _app(enabled=False)
    with TestClient(app, client=("127.0.0.1", 5000)) as client:
        assert client.get("/__faults", headers=SERVICE_KEY).status_code == 404
        assert (
            client.post("/__faults", json={"rest_error_rate": 1}, headers=SERVICE_KEY).status_code
            == 404
        )
        assert client.get("/__faults/in-flight", headers=SERVICE_KEY).status_code == 404


def test_endpoint_refuses_non_loopback_clients():
    app, _ = _app(enabled=True)
    with TestClient(app, client=("192.0.2.10", 5000)) as client:
        response = client.post("/__faults", json={"rest_error_rate": 1}, headers=SERVICE_KEY)
        in_flight = client.get("/__faults/in-flight", headers=SERVICE_KEY)
    assert response.status_code == 403
    assert in_flight.status_code == 403


def test_close_realtime_connections_awaits_every_hook():
    app, calls = _app(enabled=True)
    with TestClient(app, client=("127.0.0.1", 5000)) as client:
        response = client.post(
            "/__faults", json={"close_realtime_connections": True}, headers=SERVICE_KEY
        )
    assert response.status_code == 200
    assert calls == ["closed"]


@pytest.mark.parametrize("who", ["no key", "anon key", "user token", "forged service key"])
def test_endpoint_refuses_anything_but_the_service_role_key(supabase_faults_cleared, who):
    server = supabase_faults_cleared
    headers = {
        "no key": {},
        "anon key": {"apikey": server.anon_key},
        "user token": {"Authorization": f"Bearer {server.mint('authenticated')}"},
        "forged service key": {"apikey": server.service_role_key[:-4] + "AAAA"},
    }[who]

    changed = httpx.post(f"{server.url}/__faults", json={"rest_error_rate": 1}, headers=headers)
    shown = httpx.get(f"{server.url}/__faults", headers=headers)
    in_flight = httpx.get(f"{server.url}/__faults/in-flight", headers=headers)
    cleared = httpx.delete(f"{server.url}/__faults", headers=headers)

    assert [r.status_code for r in (changed, shown, in_flight, cleared)] == [401] * 4
    assert httpx.get(f"{server.url}/__faults", headers=_key(server)).json()["rest_error_rate"] == 0


def test_endpoint_answers_no_cross_origin_request(supabase_local):
    origin = {"Origin": "https://evil.example"}
    preflight = httpx.options(
        f"{supabase_local.url}/__faults",
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "apikey, content-type"},
    )  # fmt: skip
    shown = httpx.get(f"{supabase_local.url}/__faults", headers={**origin, **_key(supabase_local)})
    rest = httpx.get(
        f"{supabase_local.url}/rest/v1/monitoring_events?limit=1",
        headers={**origin, **_key(supabase_local)},
    )

    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code >= 400
    assert "access-control-allow-origin" not in shown.headers
    assert rest.headers["access-control-allow-origin"] == "*"  # REST keeps its CORS
