"""HTTP over ASGI (monitor_project/asgi_http.py): a request's synchronous work runs on a
fixed pool of threads, and a thread keeps its database connection between requests."""

import json
import threading

import pytest
from channels.testing import HttpCommunicator
from django.core.signals import request_started
from django.db import connection, connections

from events.models import Event
from monitor_project.asgi_http import PooledASGIHandler

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"127.0.0.1")


@pytest.fixture
def handler(settings):
    settings.HTTP_WORKER_THREADS = 1
    handler = PooledASGIHandler()
    yield handler
    # The pool thread's own connection is not the test's: close it before the test ends.
    handler._pool.submit(connections.close_all).result()
    handler._pool.shutdown()


@pytest.fixture
def kept_connections():
    """CONN_MAX_AGE as production has it (the test settings inherit it, but say so)."""
    before = connection.settings_dict["CONN_MAX_AGE"]
    connection.settings_dict["CONN_MAX_AGE"] = 300
    yield
    connection.settings_dict["CONN_MAX_AGE"] = before


async def test_an_ingest_request_is_answered_and_stored(handler, producer_token):
    body = {"event_type": "asgi.check", "source": "asgi-test", "payload": {"n": 1}}
    response = await HttpCommunicator(
        handler,
        "POST",
        "/api/events",
        body=json.dumps(body).encode(),
        headers=[
            HOST,
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {producer_token}".encode()),
        ],
    ).get_response()

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
