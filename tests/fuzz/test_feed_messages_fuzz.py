"""Messages to the live feed (/ws/events/) from a signed-in client, through the real ASGI
stack and Redis: every frame gets ``{"type": "error", ...}``, events or a pong, or a clean
close; the consumer never crashes, and after each frame a ping still gets a pong."""

import json
from typing import Any
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from events.services import event_publish_batch
from monitor_project.asgi import application
from tests.fuzz.conftest import any_text, fuzz_settings, hostile_json_text, huge_int, json_value

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

TIMEOUT = 10
ANSWER_TYPES = {"error", "event", "resumed", "pong"}

after_value = st.one_of(
    json_value,
    huge_int,
    st.integers(min_value=-5, max_value=40),
    st.sampled_from([2**63 - 1, 2**63, -1, 0, 1.0, True, "3", None]),
)
message = st.one_of(
    st.fixed_dictionaries({"type": st.just("resume")}, optional={"after": after_value}),
    st.fixed_dictionaries({"type": st.sampled_from(["ping", "PING", "resume ", "", "event"])}),
    st.fixed_dictionaries({"type": json_value}),
    st.dictionaries(any_text, json_value, max_size=5),
    json_value,
)
frame = st.one_of(
    message.map(lambda m: ("text", json.dumps(m))),
    after_value.map(lambda a: ("text", json.dumps({"type": "resume", "after": a}))),
    hostile_json_text.map(lambda t: ("text", t)),
    any_text.map(lambda t: ("text", t)),
    st.binary(max_size=64).map(lambda b: ("bytes", b)),
    st.sampled_from([("text", ""), ("bytes", b"")]),
)


async def open_feed(cookie: str, query: str = "") -> WebsocketCommunicator:
    headers = [
        (b"origin", b"http://127.0.0.1:8000"),
        (b"host", b"127.0.0.1:8000"),
        (b"cookie", f"sessionid={cookie}".encode()),
    ]
    communicator = WebsocketCommunicator(application, f"/ws/events/{query}", headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def next_answer(communicator) -> dict[str, Any] | None:
    """The next JSON message, or None when the server closed the connection cleanly."""
    output = await communicator.receive_output(timeout=TIMEOUT)
    if output["type"] == "websocket.close":
        return None
    assert output["type"] == "websocket.send", output
    answer = json.loads(output["text"])
    if answer["type"] == "error":
        assert isinstance(answer["code"], str) and isinstance(answer["message"], str), answer
    return answer


async def send_and_check(communicator, kind: str, data, tally) -> bool:
    """Send one frame, then a ping; False when the server closed the connection."""
    # send_input, not send_to: send_to refuses an empty frame, which a client can send.
    await communicator.send_input({"type": "websocket.receive", kind: data})
    await communicator.send_to(text_data='{"type": "ping"}')
    seen = []
    while True:
        answer = await next_answer(communicator)
        if answer is None:
            tally.add("closed")
            return False
        assert answer["type"] in ANSWER_TYPES, answer
        seen.append(answer["type"])
        if answer["type"] == "pong":
            break
    # The frame's own answer (an error, or a replay ending in "resumed") came first, unless the
    # frame was itself a ping.
    tally.add(seen[0] if len(seen) > 1 else "pong")
    return True


@pytest.fixture
def session_cookie(user) -> str:
    event_publish_batch(
        events=[
            {"event_type": "tool.call", "source": "fuzz", "payload": {"i": i}} for i in range(5)
        ]
    )
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@fuzz_settings(max_examples=60)
@given(frames=st.lists(frame, min_size=5, max_size=15))
def test_any_frame_gets_an_answer_and_the_feed_keeps_working(session_cookie, tally, frames):
    async def run() -> None:
        communicator = await open_feed(session_cookie)
        welcome = await next_answer(communicator)
        assert welcome["type"] == "welcome"
        for kind, data in frames:
            if not await send_and_check(communicator, kind, data, tally):
                communicator = await open_feed(session_cookie)
                assert (await next_answer(communicator))["type"] == "welcome"
        await communicator.disconnect()

    async_to_sync(run)()


@fuzz_settings(max_examples=40)
@given(after=st.one_of(st.text(max_size=20), huge_int.map(str), st.integers().map(str)))
def test_any_after_in_the_query_string_gets_an_answer(session_cookie, tally, after):
    async def run() -> None:
        communicator = await open_feed(session_cookie, "?after=" + quote(after))
        assert (await next_answer(communicator))["type"] == "welcome"
        await send_and_check(communicator, "text", '{"type": "ping"}', tally)
        await communicator.disconnect()

    async_to_sync(run)()
