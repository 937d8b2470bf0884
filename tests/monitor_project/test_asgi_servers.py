"""The application serves the same product on each web server ``manage.py devstack
--server`` can start (monitor_project/asgi_servers.py): a real process of each, a
producer's POST, a signed-in legacy page that receives the event exactly once, and a
page from a foreign origin refused."""

import asyncio
import json
import tempfile
from pathlib import Path

import httpx
import pytest
import websockets
from django.conf import settings
from django.test import Client

from monitor_project.asgi_servers import ASGI_SERVERS
from tests.fixtures.django_processes import (
    ProcessSet,
    free_port,
    http_answers_ok,
    process_environment,
    wait_until,
    web_server_argv,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture(params=ASGI_SERVERS)
def web_server(request):
    port = free_port()
    processes = ProcessSet(
        env=process_environment(), log_dir=Path(tempfile.mkdtemp(prefix="asgi_server_"))
    )
    processes.start(request.param, web_server_argv(request.param, port))
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: processes.check_alive() or http_answers_ok(f"{base_url}/readyz"),
            timeout=60, interval=0.2, what=request.param,
        )  # fmt: skip
        yield base_url
    finally:
        processes.stop_all()


def _session_cookie(user) -> str:
    browser = Client()
    browser.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"


async def _frames_after_publish(base_url: str, *, cookie: str, token: str) -> tuple[int, list]:
    """Open the legacy feed, publish one event, and collect what the page is sent for a
    second after the event arrives."""
    url = base_url.replace("http://", "ws://") + "/ws/events/"
    async with websockets.connect(
        url, origin=base_url, additional_headers={"Cookie": cookie}
    ) as page:
        assert json.loads(await page.recv())["type"] == "welcome"
        async with httpx.AsyncClient(base_url=base_url) as producer:
            answer = await producer.post(
                "/api/events",
                json={"event_type": "server.check", "source": "svc", "payload": {"n": 1}},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 201, answer.text
        seq = answer.json()["seq"]
        frames = []
        while True:
            try:
                frames.append(json.loads(await asyncio.wait_for(page.recv(), 1 if frames else 10)))
            except TimeoutError:
                return seq, frames


def test_a_published_event_reaches_a_signed_in_legacy_page_exactly_once(
    web_server, user, producer_token
):
    seq, frames = asyncio.run(
        _frames_after_publish(web_server, cookie=_session_cookie(user), token=producer_token)
    )

    events = [frame["event"] for frame in frames if frame["type"] == "event"]
    assert [event["seq"] for event in events] == [seq], frames
    assert events[0]["event_type"] == "server.check"
    assert events[0]["payload"] == {"n": 1}


def test_a_page_from_a_foreign_origin_is_refused(web_server, user):
    url = web_server.replace("http://", "ws://") + "/ws/events/"
    cookie = _session_cookie(user)

    async def connect() -> None:
        async with websockets.connect(
            url, origin="http://attacker.example", additional_headers={"Cookie": cookie}
        ):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(connect())
    assert refused.value.response.status_code == 403
