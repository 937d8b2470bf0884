"""The health check of kept database connections (monitor_project/postgresql/base.py):
a quiet idle connection is used without asking the server, and one the server has dropped
or written to is checked the usual way."""

import time

import psycopg
import pytest
from django.db import close_old_connections, connection

from monitor_project.postgresql.base import socket_has_data
from tests.fixtures.database import other_connection

pytestmark = pytest.mark.django_db(transaction=True)


def _backend_last_query(observer: psycopg.Connection, pid: int) -> str:
    return observer.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[
        0
    ]


def _wait_readable(fileno: int) -> None:
    deadline = time.monotonic() + 5
    while not socket_has_data(fileno):
        assert time.monotonic() < deadline, "the server never wrote to the idle connection"
        time.sleep(0.01)


def test_a_quiet_idle_connection_is_usable_without_a_query_to_the_server():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), 'the last query of the previous request'")
        pid = cursor.fetchone()[0]
    with other_connection() as observer:
        assert connection.is_usable()
        assert "the last query of the previous request" in _backend_last_query(observer, pid)


def test_a_terminated_connection_is_replaced_before_the_next_request_uses_it():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        old_pid = cursor.fetchone()[0]
    with other_connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [old_pid])
    _wait_readable(connection.connection.pgconn.socket)

    assert not connection.is_usable()
    close_old_connections()  # what the next request does first
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != old_pid


def test_a_connection_the_server_wrote_to_is_checked_with_a_query_and_kept_if_healthy():
    with connection.cursor() as cursor:
        cursor.execute("LISTEN monitor_backend_check")
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with other_connection() as other:
        other.execute("NOTIFY monitor_backend_check")
        _wait_readable(connection.connection.pgconn.socket)

        assert connection.is_usable()
        assert _backend_last_query(other, pid) == "SELECT 1"
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == pid


def test_a_connection_inside_a_transaction_is_checked_with_a_query():
    connection.set_autocommit(False)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with other_connection() as observer:
            assert connection.is_usable()
            assert _backend_last_query(observer, pid) == "SELECT 1"
    finally:
        connection.rollback()
        connection.set_autocommit(True)
