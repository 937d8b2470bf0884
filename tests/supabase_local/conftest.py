"""Fixtures of the supabase_local conformance suite: official clients per role.

The ``supabase_local`` server fixture comes from the ``tests.fixtures.supabase_local``
plugin, which the root ``tests/conftest.py`` registers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from supabase import Client, ClientOptions, create_client


def make_client(
    server: Any,
    key: str,
    *,
    access_token: str | None = None,
    schema: str = "public",
    retry: bool = False,
) -> Client:
    """An official sync client; ``access_token`` plays a signed-in user's session."""
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    options = ClientOptions(schema=schema, headers=headers, postgrest_client_retry=retry)
    return create_client(server.url, key, options=options)


@pytest.fixture
def service_client(supabase_local: Any) -> Client:
    return make_client(supabase_local, supabase_local.service_role_key)


@pytest.fixture
def anon_client(supabase_local: Any) -> Client:
    return make_client(supabase_local, supabase_local.anon_key)


@pytest.fixture
def user_client(supabase_local: Any) -> Client:
    token = supabase_local.mint("authenticated", sub=str(uuid.uuid4()))
    return make_client(supabase_local, supabase_local.anon_key, access_token=token)


BASE_TIME = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def event_row(seq: int, **overrides: Any) -> dict[str, Any]:
    """A valid monitoring_events row; times are distinct per seq, microseconds included."""
    row: dict[str, Any] = {
        "seq": seq,
        "event_type": f"probe.{seq % 3}",
        "source": "tests",
        "criticality": ("critical", "performance", "user_activity", "system", "debug")[seq % 5],
        "occurred_at": (
            BASE_TIME + timedelta(seconds=seq % 10**7, microseconds=seq % 999_983)
        ).isoformat(),
        "received_at": (
            BASE_TIME + timedelta(seconds=seq % 10**7, microseconds=500_000)
        ).isoformat(),
        "payload": {"n": seq, "tags": ["a", "b"], "nested": {"ok": seq % 2 == 0}},
        "checksum": f"{seq:064x}",
    }
    row.update(overrides)
    return row


@pytest.fixture
def seq_block(supabase_local: Any) -> Iterator[Callable[[int], list[int]]]:
    """Hands out seq ranges no other test uses, and deletes their rows afterwards.

    Tests share one server and one table; disjoint seq ranges keep them independent of
    order, and every query a test makes filters on its own range.
    """
    taken: list[tuple[int, int]] = []

    def allocate(count: int) -> list[int]:
        start = (uuid.uuid4().int % 10**12) * 10**6 + 1
        taken.append((start, start + count))
        return list(range(start, start + count))

    yield allocate
    for start, end in taken:
        supabase_local.sql(
            "DELETE FROM public.monitoring_events WHERE seq >= %s AND seq < %s", start, end
        )


@pytest.fixture(scope="module")
def items_table(supabase_local: Any) -> Iterator[str]:
    """A table with nullable and array columns (monitoring_events has none), created
    behind the server's back: the server must find it by reloading its schema cache."""
    name = f"conformance_items_{uuid.uuid4().hex[:8]}"
    supabase_local.sql(
        f"CREATE TABLE public.{name} (id bigint PRIMARY KEY, name text NOT NULL,"
        " score integer, tags text[] NOT NULL DEFAULT '{}', meta jsonb,"
        " created_at timestamptz NOT NULL DEFAULT now(), label text DEFAULT 'fresh')"
    )
    supabase_local.sql(f"GRANT ALL ON public.{name} TO service_role")
    supabase_local.sql(
        f"INSERT INTO public.{name} (id, name, score, tags, meta) VALUES"
        " (1, 'alpha', 10, '{red,blue}', '{\"k\": 1}'),"
        " (2, 'beta', NULL, '{blue}', NULL),"
        " (3, 'Gamma', 30, '{}', '{\"k\": 3}'),"
        " (4, 'delta', 20, '{red}', '{\"k\": 4}'),"
        " (5, 'epsilon', NULL, '{green}', NULL)"
    )
    yield name
    supabase_local.sql(f"DROP TABLE public.{name}")
