"""Change capture for every table in the ``supabase_realtime`` publication.

The PostgreSQL here runs with ``wal_level=replica`` (no logical decoding), so instead of
reading the WAL we install triggers. This SQL is supabase_local's own machinery, kept in
the schema ``supabase_local_realtime``; it is not part of ``supabase/migrations``.

* INSERT and DELETE: statement-level triggers with transition tables, so a 1,000-row
  batch costs one ``INSERT … SELECT`` into the outbox, not 1,000 trigger calls.
* UPDATE: a row-level trigger, which pairs each old row with its new row exactly.
* Each trigger ``pg_notify``s the transaction id. PostgreSQL folds identical
  notifications of one transaction into one and delivers notifications in commit
  order, after commit: so one notification per committed transaction, in commit order,
  and never for a rollback (whose outbox rows vanish with it).
* The listener reads the transaction's outbox rows by ``txid`` (payloads may be far
  larger than NOTIFY's 8,000 bytes) in ``id`` order, which is statement order.
* ``commit_timestamp`` is the transaction's timestamp (``now()``): PostgreSQL does not
  expose the commit time without ``track_commit_timestamp``.
* Delivered rows are deleted in batches; rows nobody read (server down) are swept by age.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

SCHEMA = "supabase_local_realtime"
CHANNEL = "supabase_local_realtime"
PUBLICATION = "supabase_realtime"
TRIGGER_PREFIX = "supabase_local_realtime_"

INSTALL_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
-- UNLOGGED: the outbox is a hand-off buffer; Realtime is at-most-once anyway.
CREATE UNLOGGED TABLE IF NOT EXISTS {SCHEMA}.outbox (
    id bigserial PRIMARY KEY,
    txid bigint NOT NULL DEFAULT txid_current(),
    schema_name text NOT NULL,
    table_name text NOT NULL,
    op text NOT NULL,
    record jsonb,
    old_record jsonb,
    commit_ts timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_txid_idx ON {SCHEMA}.outbox (txid);
CREATE INDEX IF NOT EXISTS outbox_commit_ts_idx ON {SCHEMA}.outbox (commit_ts);
REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;

-- SECURITY DEFINER: writers are anon/authenticated/service_role, who cannot see the
-- outbox; the function runs as its owner (the superuser the server connects as).
CREATE OR REPLACE FUNCTION {SCHEMA}.capture_statement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {SCHEMA}.outbox (schema_name, table_name, op, record)
        SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT', to_jsonb(n) FROM new_rows n;
    ELSE
        INSERT INTO {SCHEMA}.outbox (schema_name, table_name, op, old_record)
        SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, 'DELETE', to_jsonb(o) FROM old_rows o;
    END IF;
    IF FOUND THEN
        PERFORM pg_notify('{CHANNEL}', txid_current()::text);
    END IF;
    RETURN NULL;
END
$fn$;

-- Broadcast from the database: rows inserted into realtime.messages (by realtime.send,
-- realtime.broadcast_changes or plain SQL) travel the same outbox, so they are broadcast
-- after commit and in commit order, like the changes of any captured table.
CREATE OR REPLACE FUNCTION {SCHEMA}.capture_broadcast() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    INSERT INTO {SCHEMA}.outbox (schema_name, table_name, op, record)
    SELECT 'realtime', 'messages', 'BROADCAST', to_jsonb(n)
    FROM new_rows n WHERE n.extension = 'broadcast';
    IF FOUND THEN
        PERFORM pg_notify('{CHANNEL}', txid_current()::text);
    END IF;
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS {TRIGGER_PREFIX}broadcast ON realtime.messages;
CREATE TRIGGER {TRIGGER_PREFIX}broadcast AFTER INSERT ON realtime.messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION {SCHEMA}.capture_broadcast();

CREATE OR REPLACE FUNCTION {SCHEMA}.capture_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    INSERT INTO {SCHEMA}.outbox (schema_name, table_name, op, record, old_record)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE', to_jsonb(NEW), to_jsonb(OLD));
    PERFORM pg_notify('{CHANNEL}', txid_current()::text);
    RETURN NULL;
END
$fn$;
"""

PUBLISHED_TABLES_SQL = f"""
SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = '{PUBLICATION}'
"""

CAPTURED_TABLES_SQL = f"""
SELECT n.nspname, c.relname
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgname = '{TRIGGER_PREFIX}insert'
"""

READ_SQL = f"""
SELECT o.txid, o.schema_name, o.table_name, o.op, o.record::text, o.old_record::text,
       to_char(o.commit_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM {SCHEMA}.outbox o
WHERE o.txid = ANY($1::bigint[])
  AND (o.schema_name = ANY($2::text[]) OR o.schema_name || '.' || o.table_name = ANY($3::text[]))
ORDER BY array_position($1::bigint[], o.txid), o.id
"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def trigger_sql(schema: str, table: str) -> str:
    """Triggers for one table; names and identifiers come from the catalogue."""
    rel = f"{_ident(schema)}.{_ident(table)}"
    return f"""
CREATE TRIGGER {TRIGGER_PREFIX}insert AFTER INSERT ON {rel}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION {SCHEMA}.capture_statement();
CREATE TRIGGER {TRIGGER_PREFIX}delete AFTER DELETE ON {rel}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION {SCHEMA}.capture_statement();
CREATE TRIGGER {TRIGGER_PREFIX}update AFTER UPDATE ON {rel}
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.capture_update();
"""


@dataclass(slots=True)
class Change:
    txid: int
    schema: str
    table: str
    op: str  # INSERT | UPDATE | DELETE, or BROADCAST for a realtime.messages row
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    commit_timestamp: str


class ChangeCapture:
    """Installs the triggers and turns notifications into ordered :class:`Change` batches.

    ``on_transaction`` is awaited once per committed transaction, strictly one after the
    other and in commit order, with the transaction's changes in statement order.
    """

    SWEEP_INTERVAL_S = 1.0
    STALE_AFTER_S = 300

    def __init__(
        self,
        database_url: str,
        pool: asyncpg.Pool,
        on_transaction: Callable[[list[Change]], Awaitable[None]],
        interest: Callable[[], tuple[list[str], list[str]]] = lambda: ([], []),
    ) -> None:
        self._dsn = database_url
        # The pool serves installs and cleanup; the reader has its own connection so
        # that delivery never waits behind them.
        self._pool = pool
        self._on_transaction = on_transaction
        # (schemas watched whole, "schema.table" names watched): rows of other tables are
        # not even fetched, so unwatched bulk writes cost the server nothing.
        self._interest = interest
        self._listen_conn: asyncpg.Connection | None = None
        self._read_conn: asyncpg.Connection | None = None
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._delivered: list[int] = []
        self._captured: set[tuple[str, str]] = set()
        self._install_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._read_conn = await asyncpg.connect(self._dsn)
        # Two servers starting on one database would race on CREATE … IF NOT EXISTS.
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", SCHEMA)
            await conn.execute(INSTALL_SQL)
            await conn.execute(
                f"DELETE FROM {SCHEMA}.outbox WHERE commit_ts < now() - interval '1 minute'"
            )
        await self.sync_published_tables()
        await self._listen()
        self._tasks = [
            asyncio.create_task(self._consume(), name="realtime-capture-consume"),
            asyncio.create_task(self._sweep(), name="realtime-capture-sweep"),
            asyncio.create_task(self._watch_listener(), name="realtime-capture-watch"),
        ]

    async def _listen(self) -> None:
        self._listen_conn = await asyncpg.connect(self._dsn)
        await self._listen_conn.add_listener(CHANNEL, self._on_notify)

    async def _watch_listener(self) -> None:
        """Re-LISTEN after the connection drops (database restart, terminated backend).

        Changes committed while nobody listened are not replayed (Realtime is
        at-most-once too); their outbox rows are swept by age.
        """
        while True:
            await asyncio.sleep(1.0)
            if self._listen_conn is not None and not self._listen_conn.is_closed():
                continue
            log.warning("realtime: LISTEN connection lost; reconnecting")
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError):
                log.warning("realtime: reconnecting the listener failed; retrying")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for conn in (self._listen_conn, self._read_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
        self._listen_conn = self._read_conn = None

    async def published_tables(self) -> set[tuple[str, str]]:
        rows = await self._pool.fetch(PUBLISHED_TABLES_SQL)
        return {(r[0], r[1]) for r in rows}

    async def sync_published_tables(self) -> set[tuple[str, str]]:
        """Install triggers on published tables that lack them; return the published set.

        Called at startup and whenever a join names a table not yet captured (a
        migration may have published it since).
        """
        async with self._install_lock, self._pool.acquire() as conn:
            published = {(r[0], r[1]) for r in await conn.fetch(PUBLISHED_TABLES_SQL)}
            captured = {(r[0], r[1]) for r in await conn.fetch(CAPTURED_TABLES_SQL)}
            for schema, table in sorted(published - captured):
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", SCHEMA)
                    again = await conn.fetchval(
                        CAPTURED_TABLES_SQL + " AND n.nspname = $1 AND c.relname = $2",
                        schema,
                        table,
                    )
                    if again is None:
                        await conn.execute(trigger_sql(schema, table))
                        log.info("realtime: capturing changes of %s.%s", schema, table)
            self._captured = published
            return published

    def is_captured(self, schema: str, table: str) -> bool:
        return (schema, table) in self._captured

    # -- listening -------------------------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._queue.put_nowait(int(payload))
        except ValueError:
            log.warning("realtime: ignoring notification %r", payload)

    async def _consume(self) -> None:
        while True:
            txids = [await self._queue.get()]
            # Batch whatever else has arrived: one round trip for a burst of commits.
            while not self._queue.empty() and len(txids) < 500:
                txids.append(self._queue.get_nowait())
            try:
                changes = await self._read(txids)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                log.warning("realtime: reading the outbox failed; reconnecting", exc_info=True)
                await self._reconnect_reader()
                try:
                    changes = await self._read(txids)
                except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                    log.exception("realtime: lost transactions %s", txids)
                    continue
            by_tx: dict[int, list[Change]] = {}
            for change in changes:
                by_tx.setdefault(change.txid, []).append(change)
            for txid in txids:
                batch = by_tx.get(txid)
                if batch:
                    try:
                        await self._on_transaction(batch)
                    except Exception:
                        log.exception("realtime: dispatch of transaction %s failed", txid)
            self._delivered.extend(txids)

    async def _read(self, txids: list[int]) -> list[Change]:
        assert self._read_conn is not None
        schemas, tables = self._interest()
        tables = [*tables, "realtime.messages"]  # database broadcasts are always read
        rows = await self._read_conn.fetch(READ_SQL, txids, schemas, tables)
        return [
            Change(
                txid=r[0],
                schema=r[1],
                table=r[2],
                op=r[3],
                record=json.loads(r[4]) if r[4] is not None else None,
                old_record=json.loads(r[5]) if r[5] is not None else None,
                commit_timestamp=r[6],
            )
            for r in rows
        ]

    async def _reconnect_reader(self) -> None:
        with contextlib.suppress(Exception):
            if self._read_conn is not None:
                await self._read_conn.close(timeout=1)
        while True:
            try:
                self._read_conn = await asyncpg.connect(self._dsn)
                return
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(1)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.SWEEP_INTERVAL_S)
            done, self._delivered = self._delivered, []
            if not done:
                continue
            try:
                await self._pool.execute(
                    f"DELETE FROM {SCHEMA}.outbox WHERE txid = ANY($1::bigint[])"
                    f" OR commit_ts < now() - make_interval(secs => $2)",
                    done,
                    self.STALE_AFTER_S,
                )
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                log.warning("realtime: outbox cleanup failed; will retry", exc_info=True)
                self._delivered.extend(done)
