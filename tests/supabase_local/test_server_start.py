"""The server process: CLI, keys, bootstrap, migrations recorded once."""

from __future__ import annotations

import subprocess
import sys

import httpx

from supabase_local.auth import verify_token


def test_printed_keys_are_signed_with_the_secret_and_carry_their_role(supabase_local):
    anon = verify_token(supabase_local.anon_key, secret=supabase_local.jwt_secret)
    service = verify_token(supabase_local.service_role_key, secret=supabase_local.jwt_secret)
    assert (anon.role, service.role) == ("anon", "service_role")


def test_health_answers(supabase_local):
    assert httpx.get(f"{supabase_local.url}/health").json() == {"status": "ok"}


def test_every_migration_is_recorded_once(supabase_local):
    from supabase_local.config import DEFAULT_MIGRATIONS_DIR

    files = sorted(p.name for p in DEFAULT_MIGRATIONS_DIR.glob("*.sql"))
    rows = supabase_local.sql("SELECT name FROM supabase_local.schema_migrations ORDER BY name")
    assert [row["name"] for row in rows] == files


def test_supabase_roles_and_publication_exist(supabase_local):
    roles = supabase_local.sql(
        "SELECT rolname, rolbypassrls, rolcanlogin FROM pg_roles"
        " WHERE rolname IN ('anon', 'authenticated', 'service_role') ORDER BY rolname"
    )
    assert [(r["rolname"], r["rolbypassrls"], r["rolcanlogin"]) for r in roles] == [
        ("anon", False, False),
        ("authenticated", False, False),
        ("service_role", True, False),
    ]
    tables = supabase_local.sql(
        "SELECT schemaname, tablename FROM pg_publication_tables"
        " WHERE pubname = 'supabase_realtime'"
    )
    assert {"schemaname": "public", "tablename": "monitoring_events"} in tables


def test_cli_refuses_a_non_loopback_host():
    result = subprocess.run(
        [sys.executable, "-m", "supabase_local", "--host", "0.0.0.0",
         "--database-url", "postgresql://postgres@127.0.0.1:5432/unused"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_cli_refuses_a_short_jwt_secret():
    result = subprocess.run(
        [sys.executable, "-m", "supabase_local", "--jwt-secret", "short",
         "--database-url", "postgresql://postgres@127.0.0.1:5432/unused"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "32 characters" in result.stderr


async def test_bootstrap_creates_the_database_and_is_idempotent_under_concurrency():
    import asyncio
    import secrets

    import asyncpg

    from supabase_local import db
    from supabase_local.config import DEFAULT_MIGRATIONS_DIR
    from tests.fixtures.supabase_local import _drop_database, _pg_url

    names = [f"monitor_supabase_boot_{secrets.token_hex(4)}" for _ in range(2)]
    urls = [_pg_url(name) for name in names]
    try:
        created = await asyncio.gather(*(db.ensure_database(url) for url in urls))
        # Four bootstraps at once: two per database, all racing on the cluster's roles.
        applied = await asyncio.gather(
            *(db.bootstrap(url, DEFAULT_MIGRATIONS_DIR) for url in urls + urls)
        )
        again = await db.ensure_database(urls[0])

        files = sorted(p.name for p in DEFAULT_MIGRATIONS_DIR.glob("*.sql"))
        assert created == [True, True] and again is False
        for url in urls:
            mine = [names_applied for u, names_applied in zip(urls + urls, applied, strict=True)
                    if u == url]  # fmt: skip
            assert sorted(mine, key=len) == [[], files]  # exactly one of the two applied them
            connection = await asyncpg.connect(url)
            try:
                recorded = await connection.fetchval(
                    "SELECT count(*) FROM supabase_local.schema_migrations"
                )
            finally:
                await connection.close()
            assert recorded == len(files)
    finally:
        for name in names:
            _drop_database(name)


def test_cli_says_so_when_postgresql_is_unreachable():
    result = subprocess.run(
        [sys.executable, "-m", "supabase_local", "--port", "1",
         "--database-url", "postgresql://postgres@127.0.0.1:1/unreachable"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("supabase_local: cannot use PostgreSQL")
