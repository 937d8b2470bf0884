"""The dashboard on the Supabase path as it runs today: Broadcast from the database on the
private topic ``monitor:events``, replay then REST after a dropped socket, and control
messages that only the server can send (a forged one moves no page)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid

import httpx
import pytest
from realtime import AsyncRealtimeClient

from tests.browser.test_dashboard import (
    LEGACY,
    SUPABASE,
    assert_each_once_in_order,
    publish,
    supabase_failure_reported,
    supabase_user,
    wait_for_indicator,
    wait_for_seqs,
)
from tests.supabase_local.test_realtime_authorization import join, private

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

REALTIME_SOCKET = "**/realtime/v1/websocket**"
FORGED_SWITCH = {"action": "switch_transport", "transport": "websocket"}


class RealtimeLine:
    """The page's Realtime socket through Playwright: passed through, except that the test
    can make it lose every event broadcast silently (a half-dead connection) and then
    drop it (supabase-js reconnects and rejoins by itself)."""

    def __init__(self) -> None:
        self.losing = False
        self.lost = 0
        self.open: list = []
        self.connections = 0

    def __call__(self, ws) -> None:
        self.connections += 1
        server = ws.connect_to_server()
        self.open.append((ws, server))
        ws.on_message(lambda message: server.send(message))
        server.on_message(lambda message: self.to_page(ws, message))

    def to_page(self, ws, message) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        # Rows carry a checksum; replies, system messages and heartbeats do not.
        if self.losing and "monitor:events" in text and "checksum" in text:
            self.lost += 1
            return
        ws.send(message)

    def drop(self) -> None:
        self.losing = False
        for ws, server in self.open:
            with contextlib.suppress(Exception):
                server.close()
            with contextlib.suppress(Exception):
                ws.close()
        self.open.clear()


def stats(page) -> dict:
    return page.evaluate("window.monitorFeed.stats()")


def messages_since(supabase_local, started) -> int:
    rows = supabase_local.sql(
        "SELECT count(*) AS n FROM realtime.messages WHERE topic = 'monitor:events'"
        " AND extension = 'broadcast' AND inserted_at >= %s",
        started,
    )
    return rows[0]["n"]


def db_now(supabase_local):
    return supabase_local.sql("SELECT timezone('utc', now()) AS t")[0]["t"]


def test_a_dropped_realtime_socket_is_filled_by_replay_then_rest_each_event_once(
    open_dashboard, django_user_model, supabase_local
):
    page, _ = open_dashboard(supabase_user(django_user_model, "sb-replay"))
    line = RealtimeLine()
    page.route_web_socket(REALTIME_SOCKET, line)
    page.reload()
    wait_for_indicator(page, SUPABASE)
    # The backfill every subscription makes (after replay) is done.
    page.wait_for_function("window.monitorFeed.stats().backfills >= 1", timeout=30_000)
    before = publish(2)
    wait_for_seqs(page, before)
    assert stats(page)["replayed"] == 0

    # given: the connection silently loses every event message while 40 events are written
    # one statement at a time (more messages than one replay holds: 25), then it drops
    # (Waits are the page's own: Playwright handles the routed socket in this thread.)
    started = db_now(supabase_local)
    line.losing = True
    missed: list[int] = []
    for _ in range(40):
        missed += publish(1, source="half-dead")
        page.wait_for_timeout(100)
    deadline = time.monotonic() + 10
    while messages_since(supabase_local, started) < len(missed) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    sent_while_losing = messages_since(supabase_local, started)
    page.wait_for_timeout(300)
    line.drop()

    # then: on the rejoin, replay brings the latest 25 messages and REST the rest
    wait_for_seqs(page, missed, timeout_s=60)
    assert page.evaluate("window.monitorFeed.transport") == "supabase", page.locator(
        "#notice"
    ).inner_text()
    page.wait_for_timeout(800)  # a duplicate would have been rendered by now
    assert_each_once_in_order(page, before + missed)
    after = stats(page)
    assert sent_while_losing > 25, "the events were not written as separate statements"
    assert line.lost == sent_while_losing
    assert line.connections >= 2
    assert after["replayed"] == 25  # replay's limit
    assert after["gapsFilled"] >= 1  # what replay could not hold came through REST
    assert after["duplicates"] == 0


# --- forged control messages ---------------------------------------------------------------


def rest_broadcast(url, key, topic, event, payload, *, private: bool, token=None):
    """POST /realtime/v1/api/broadcast as a browser key's holder (a user token optional)."""
    message = {"topic": topic, "event": event, "payload": payload, "private": private}
    return httpx.post(
        f"{url}/realtime/v1/api/broadcast",
        headers={"apikey": key, "Authorization": f"Bearer {token or key}"},
        json={"messages": [message]},
        timeout=10,
    )


async def forge_over_the_socket(supabase_local, topics: list[str]) -> None:
    """An ordinary signed-in user joins each topic, private and public, and broadcasts."""
    token = supabase_local.mint_signed("authenticated", str(uuid.uuid4()))
    for is_private in (True, False):  # one client each: a client holds a topic once
        client = AsyncRealtimeClient(
            f"{supabase_local.url}/realtime/v1",
            supabase_local.publishable_key,
            auto_reconnect=False,
        )
        await client.set_auth(token)
        try:
            for topic in topics:
                _, _, channel = await join(client, topic, private(is_private=is_private))
                await channel.send_broadcast("control", FORGED_SWITCH)
                await channel.send_broadcast("events", {"events": [], "announced": [10**9]})
            await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)


def in_a_thread(coroutine) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not errors, errors


def test_a_forged_control_broadcast_moves_no_page(
    open_dashboard, django_user_model, supabase_local
):
    page, _ = open_dashboard(supabase_user(django_user_model, "sb-forged"))
    heard: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: heard.append(str(frame))))
    page.reload()
    wait_for_indicator(page, SUPABASE)
    page.evaluate("window.__sameDocument = true")
    user_token = supabase_local.mint_signed("authenticated", str(uuid.uuid4()))
    config = json.loads(page.locator("#dashboard-config").text_content())
    # The topic the page's config names, and the two private topics of the product.
    topics = sorted({config["supabase"]["controlTopic"], "monitor:control", "monitor:events"})

    # when: the hostile account sends switch_transport every way a browser key allows
    answers = []
    for key in (supabase_local.publishable_key, supabase_local.anon_key):
        for topic in topics:
            for is_private in (True, False):
                for token in (None, user_token):
                    answers.append(
                        rest_broadcast(
                            supabase_local.url, key, topic, "control", FORGED_SWITCH,
                            private=is_private, token=token,
                        )
                    )  # fmt: skip
    in_a_thread(forge_over_the_socket(supabase_local, topics))
    page.wait_for_timeout(3000)

    # then: nothing reached the page, and it stayed where it was
    assert {answer.status_code for answer in answers} == {202}  # private ones are skipped
    assert not [frame for frame in heard if "switch_transport" in frame]
    assert page.evaluate("window.monitorFeed.transport") == "supabase"
    assert page.locator("#data-source").inner_text() == SUPABASE
    assert "rollout" not in page.locator("#notice").inner_text().lower()
    assert page.evaluate("window.__sameDocument") is True
    seqs = publish(2)
    wait_for_seqs(page, seqs)


def test_a_forged_message_that_did_get_through_is_only_a_hint(
    open_dashboard, django_user_model, supabase_local
):
    # Even if a message reached the page (here: the server's own key sends it, as a leaked
    # key or a mistaken policy would), the page asks /api/transport before it acts, and
    # the server still says Supabase.
    page, _ = open_dashboard(supabase_user(django_user_model, "sb-hint"))
    wait_for_indicator(page, SUPABASE)
    answer = rest_broadcast(
        supabase_local.url,
        supabase_local.secret_key,
        "monitor:control",
        "control",
        FORGED_SWITCH,
        private=True,
    )
    page.wait_for_timeout(1500)

    assert answer.status_code == 202
    assert page.evaluate("window.monitorFeed.transport") == "supabase"
    assert "rollout" not in page.locator("#notice").inner_text().lower()


def test_the_server_side_rest_broadcast_refuses_the_browser_keys(supabase_local):
    # The single-message endpoint says so plainly (403), where the batch one skips.
    for key in (supabase_local.publishable_key, supabase_local.anon_key):
        response = httpx.post(
            f"{supabase_local.url}/realtime/v1/api/broadcast/monitor:control/events/control",
            params={"private": "true"},
            headers={"apikey": key, "Authorization": f"Bearer {key}"},
            content=json.dumps(FORGED_SWITCH),
            timeout=10,
        )
        assert response.status_code == 403, response.text


# --- quota refusals -----------------------------------------------------------------------


def refusing_joins(reason: str):
    """A Realtime line that answers the page's join of monitor:events as Realtime answers a
    join over a quota (supabase_local/realtime/quotas.py), and passes the rest through."""

    def handler(ws) -> None:
        server = ws.connect_to_server()

        def to_server(message) -> None:
            frame = json.loads(message) if isinstance(message, str) else None
            if isinstance(frame, list) and frame[2:4] == ["realtime:monitor:events", "phx_join"]:
                join_ref, ref, topic = frame[:3]
                error = {"status": "error", "response": {"reason": reason}}
                ws.send(json.dumps([join_ref, ref, topic, "phx_reply", error]))
                return
            if isinstance(frame, dict) and (frame.get("topic"), frame.get("event")) == (
                "realtime:monitor:events",
                "phx_join",
            ):
                error = {"status": "error", "response": {"reason": reason}}
                ws.send(json.dumps({**frame, "event": "phx_reply", "payload": error}))
                return
            server.send(message)

        ws.on_message(to_server)
        server.on_message(lambda message: ws.send(message))

    return handler


def test_a_join_refused_for_a_quota_is_reported_as_a_connection_failure(
    open_dashboard, django_user_model
):
    page, _ = open_dashboard(supabase_user(django_user_model, "sb-quota"))
    page.route_web_socket(
        REALTIME_SOCKET, refusing_joins("ConnectionRateLimitReached: Too many connected users")
    )
    page.reload()

    # At once, not after the 8 s the page gives a silent join.
    wait_for_indicator(page, LEGACY, timeout_s=6)
    assert "Too many connected users" in page.locator("#notice").inner_text()

    assert supabase_failure_reported(page), (
        "the page did not report the refusal as a failed connection"
    )
