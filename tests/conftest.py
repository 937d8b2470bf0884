"""Shared fixtures: signed-in users, producers and a clean channel layer.

Tests run against the machine's PostgreSQL and Redis (see monitor_project/settings/test.py);
``make test`` starts them when they are down.
"""

import warnings
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings
from django.db import connection

from events import services
from tests.fixtures.seeds import seeds_apply
from tests.fixtures.supabase_settings import supabase_product_settings, supabase_settings_apply

pytest_plugins = ["tests.fixtures.supabase_local"]


@pytest.fixture(scope="session", autouse=True)
def _clean_test_redis() -> Iterator[None]:
    """Start from an empty test Redis database (never the developer's database 0)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert client.connection_pool.connection_kwargs.get("db", 0) != 0, "tests must not use db 0"
    client.flushdb()
    yield
    client.close()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker) -> Iterator[None]:
    """pytest-django's test database; at the end of the run, before it is dropped, the
    sessions this run's own threads left open on it (asgiref's executor threads keep
    theirs) are closed, and any other session still there is named in a warning."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        mine = connection.settings_dict["OPTIONS"]["application_name"]
        cursor.execute(
            "SELECT pid, application_name,"
            " CASE WHEN application_name = %s THEN pg_terminate_backend(pid) END"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()",
            [mine],
        )
        others = [f"{name} (backend {pid})" for pid, name, _ in cursor.fetchall() if name != mine]
    connection.close()
    if others:
        warnings.warn(f"sessions left on the test database: {', '.join(others)}", stacklevel=1)


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="ada", password="pw-for-tests-1")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="grace", password="pw-for-tests-2", is_staff=True
    )


@pytest.fixture
def signed_in_client(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def producer_token(db) -> str:
    return services.producer_create(name="test-producer").token


def pytest_collection_modifyitems(config, items) -> None:
    """Fast tests first; the slow real-process suites (``@pytest.mark.slow``) run last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


@pytest.fixture
def django_supabase(request, settings, supabase_local):
    """Point the Django app at the test supabase_local server with the keys of a project
    created today (publishable, secret, ES256 signing key), with an empty table; after the
    test, no fault and no REST request of the test's is left behind."""
    supabase_settings_apply(settings, supabase_product_settings(supabase_local))
    supabase_local.truncate()
    yield supabase_local
    supabase_local.assert_left_behind_nothing(request.node.nodeid)


@pytest.fixture(autouse=True)
def _seeded_rows_for_transactional_tests(request, django_db_blocker) -> None:
    """Transactional tests start with the data migrations' rows (see tests/fixtures/seeds)."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(marker and marker.kwargs.get("transaction")) or bool(
        {"transactional_db", "live_server"} & set(request.fixturenames)
    )
    if transactional:
        with django_db_blocker.unblock():
            seeds_apply()
