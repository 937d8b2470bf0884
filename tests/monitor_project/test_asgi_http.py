"""HTTP over ASGI (monitor_project/asgi_http.py): a request's synchronous work runs on a
fixed pool of threads, a thread keeps its database connection between requests, and the
work a request leaves for after its answer (a publish's fan-out) runs once it is sent."""

import asyncio
import json
import threading
import time

import pytest
from channels.layers import get_channel_layer
from channels.testing import HttpCommunicator
from django.core.signals import request_started
from django.db import connection, connections

from events.models import Delivery, DeliveryStatus, Event, Sink
from events.sinks import FEED_GROUP
from monitor_project.after_response import after_response
from monitor_project.asgi_http import PooledASGIHandler

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"127.0.0.1")
READYZ_SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/readyz",
    "query_string": b"",
    "headers": [HOST],
}


async def _empty_body():
    return {"type": "http.request", "body": b""}


@pytest.fixture
def handler(settings):
    settings.HTTP_WORKER_THREADS = 1
    handler = PooledASGIHandler()
    yield handler
    # The pool thread's own connection is not the test's: close it before the test ends.
    handler._pool.submit(connections.close_all).result()
    handler._pool.shutdown()
    handler._after_pool.shutdown()


@pytest.fixture
def kept_connections():
    """CONN_MAX_AGE as production has it (the test settings inherit it, but say so)."""
    before = connection.settings_dict["CONN_MAX_AGE"]
    connection.settings_dict["CONN_MAX_AGE"] = 300
    yield
    connection.settings_dict["CONN_MAX_AGE"] = before


def _ingest(handler, token: str, payload: dict) -> HttpCommunicator:
    """A producer's ``POST /api/events`` of one event, to be sent through ``handler``."""
    body = {"event_type": "asgi.check", "source": "asgi-test", "payload": payload}
    return HttpCommunicator(
        handler,
        "POST",
        "/api/events",
        body=json.dumps(body).encode(),
        headers=[
            HOST,
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    )


async def test_an_ingest_request_is_answered_and_stored(handler, producer_token):
    response = await _ingest(handler, producer_token, {"n": 1}).get_response()

    assert response["status"] == 201
    seq = json.loads(response["body"])["seq"]
    assert await Event.objects.filter(seq=seq, source="asgi-test").aexists()


async def test_bad_input_gets_the_same_json_error_as_under_the_test_client(handler):
    response = await HttpCommunicator(
        handler, "POST", "/api/events", body=b"{}", headers=[HOST, (b"content-type", b"text/plain")]
    ).get_response()

    assert response["status"] == 401
    assert json.loads(response["body"])["error"]["code"] == "unauthorized"


async def test_requests_share_the_pool_thread_and_its_database_connection(
    handler, kept_connections
):
    seen: list[tuple[int, int]] = []

    def note_thread_and_backend(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            seen.append((threading.get_ident(), cursor.fetchone()[0]))

    request_started.connect(note_thread_and_backend)
    try:
        for _ in range(3):
            response = await HttpCommunicator(
                handler, "GET", "/readyz", headers=[HOST]
            ).get_response()
            assert response["status"] == 200
    finally:
        request_started.disconnect(note_thread_and_backend)

    assert len(seen) == 3
    assert len(set(seen)) == 1, "one pool thread, one kept connection"
    assert seen[0][0] != threading.get_ident()


async def test_work_left_for_after_the_answer_runs_once_the_response_is_sent(handler):
    order: list[str] = []

    def leave_work_for_later(**kwargs):
        after_response(lambda: order.append("work after the answer"))

    async def recording_send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"):
            order.append("response sent")

    request_started.connect(leave_work_for_later)
    try:
        await handler(READYZ_SCOPE, _empty_body, recording_send)
    finally:
        request_started.disconnect(leave_work_for_later)

    assert order == ["response sent", "work after the answer"]


async def test_a_failing_piece_of_after_work_does_not_stop_the_next_or_the_answer(handler):
    done: list[str] = []

    def leave_work_for_later(**kwargs):
        after_response(lambda: 1 / 0)
        after_response(lambda: done.append("second"))

    request_started.connect(leave_work_for_later)
    try:
        communicator = HttpCommunicator(handler, "GET", "/readyz", headers=[HOST])
        response = await communicator.get_response()
        await communicator.wait(timeout=5)  # the handler returns once the after-work is done
    finally:
        request_started.disconnect(leave_work_for_later)

    assert response["status"] == 200
    assert done == ["second"]


async def test_a_publish_is_answered_first_then_sent_to_the_feed_and_marked(
    handler, producer_token
):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(FEED_GROUP, channel)
    try:
        communicator = _ingest(handler, producer_token, {"n": 2})
        response = await communicator.get_response()
        assert response["status"] == 201
        seq = json.loads(response["body"])["seq"]

        message = await asyncio.wait_for(layer.receive(channel), timeout=5)
        assert [item["seq"] for item in message["events"]] == [seq]
        # The ledger mark comes after the send, in the same after-answer work.
        for _ in range(50):
            if await Delivery.objects.filter(
                event_id=seq, sink=Sink.WEBSOCKET, status=DeliveryStatus.SENT
            ).aexists():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the websocket delivery was never marked sent")
    finally:
        await layer.group_discard(FEED_GROUP, channel)


async def test_a_request_the_server_abandons_mid_view_still_gets_its_after_work(handler):
    """Daphne cancels an application whose client went away (after its close timeout);
    the view runs on in its thread, and what it committed must still be fanned out."""
    view_running = threading.Event()
    after_work_done = threading.Event()

    def slow_view_leaving_work(**kwargs):
        after_response(after_work_done.set)
        view_running.set()
        time.sleep(0.5)  # the server gives up on the request meanwhile

    async def send(message):
        pass

    request_started.connect(slow_view_leaving_work)
    try:
        request = asyncio.ensure_future(handler(READYZ_SCOPE, _empty_body, send))
        assert await asyncio.to_thread(view_running.wait, 5)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

        assert await asyncio.to_thread(after_work_done.wait, 5)
    finally:
        request_started.disconnect(slow_view_leaving_work)
