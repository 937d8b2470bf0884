"""Database bootstrap: the roles, schemas and functions a Supabase project has, then
the project's migrations.

Invariants:
- ``bootstrap`` is idempotent and safe when several servers start at once on one
  PostgreSQL cluster (roles are cluster-wide, so a concurrent ``CREATE ROLE`` that loses
  the race is tolerated rather than prevented);
- every ``supabase/migrations/*.sql`` file runs once per database, in name order, each in
  its own transaction, and its name is recorded in ``supabase_local.schema_migrations``;
  an advisory lock serialises servers that share one database.
"""

from __future__ import annotations

import logging
import pathlib
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from supabase_local.realtime.schema import REALTIME_SCHEMA_SQL

log = logging.getLogger(__name__)

# Roles as on a Supabase project: NOLOGIN, service_role bypasses RLS.
_ROLES_SQL = """
DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN SELECT * FROM (VALUES
        ('anon', 'NOLOGIN NOINHERIT'),
        ('authenticated', 'NOLOGIN NOINHERIT'),
        ('service_role', 'NOLOGIN NOINHERIT BYPASSRLS')
    ) AS s(name, options) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = spec.name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I %s', spec.name, spec.options);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another server created it in the meantime
            END;
        END IF;
    END LOOP;
END
$$;
"""

# Per-database setup mirroring a fresh Supabase project: schema usage, Supabase's
# default privileges on public (ALL to the three roles, which is why migrations must
# revoke explicitly), the auth helper functions policies use, and the publication.
_DATABASE_SQL = """
CREATE SCHEMA IF NOT EXISTS supabase_local;
CREATE TABLE IF NOT EXISTS supabase_local.schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;

CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$fn$;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
    )::uuid
$fn$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
    )::text
$fn$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        CREATE PUBLICATION supabase_realtime;
    END IF;
END
$$;
"""

# Arbitrary constant: the advisory lock key serialising bootstrap within one database.
_BOOTSTRAP_LOCK_KEY = 5_432_154_321


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/") or "postgres"


def with_database(database_url: str, name: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path="/" + name))


async def ensure_database(database_url: str) -> bool:
    """Create the URL's database if it is missing; True when it was created."""
    name = database_name(database_url)
    try:
        connection = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await connection.close()
        return False
    admin = await asyncpg.connect(with_database(database_url, "postgres"))
    try:
        quoted = await admin.fetchval("SELECT quote_ident($1)", name)
        try:
            await admin.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False
    finally:
        await admin.close()
    log.info("created database %s", name)
    return True


def migration_files(migrations_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(migrations_dir.glob("*.sql"), key=lambda path: path.name)


async def bootstrap(database_url: str, migrations_dir: pathlib.Path) -> list[str]:
    """Prepare the database; return the names of the migrations applied now."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(_ROLES_SQL)
        await connection.execute("SELECT pg_advisory_lock($1)", _BOOTSTRAP_LOCK_KEY)
        try:
            await connection.execute(_DATABASE_SQL)
            # Before the migrations: they may write policies on realtime.messages.
            await connection.execute(REALTIME_SCHEMA_SQL)
            return await _apply_migrations(connection, migrations_dir)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _BOOTSTRAP_LOCK_KEY)
    finally:
        await connection.close()


async def _apply_migrations(
    connection: asyncpg.Connection, migrations_dir: pathlib.Path
) -> list[str]:
    rows = await connection.fetch("SELECT name FROM supabase_local.schema_migrations")
    done = {row["name"] for row in rows}
    applied: list[str] = []
    for path in migration_files(migrations_dir):
        if path.name in done:
            continue
        async with connection.transaction():
            await connection.execute(path.read_text(encoding="utf-8"))
            await connection.execute(
                "INSERT INTO supabase_local.schema_migrations (name) VALUES ($1)", path.name
            )
        log.info("applied migration %s", path.name)
        applied.append(path.name)
    return applied


async def create_pool(database_url: str, *, max_size: int) -> asyncpg.Pool:
    # UTC like a Supabase project, so timestamptz renders with +00:00 as there. JIT off:
    # compiling a 1,000-row INSERT ... SELECT (and its triggers) cost ~25 ms of ~70 ms here.
    # synchronous_commit off: a commit does not wait for its WAL flush (6-9 ms on this
    # disk). Only a crash of PostgreSQL itself could lose the last commits; for a dev and
    # test server that trade is right, and clients see no other difference.
    return await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=max_size,
        server_settings={
            "timezone": "UTC",
            "jit": "off",
            "synchronous_commit": "off",
            "application_name": "supabase_local",
        },
    )


async def connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url, server_settings={"timezone": "UTC"})
