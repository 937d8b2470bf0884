"""The schema cache: tables, columns, keys and functions of the exposed schemas.

Every identifier the REST layer puts into SQL comes from here, quoted with ``quote``;
a name from the request is only ever used as a key to look one up. The cache is loaded
at start, on ``NOTIFY pgrst, 'reload schema'`` like PostgREST, and on a miss, so a table
created behind the server's back is found. Misses cannot make the server reload
continuously (any caller with the anon key can name unknown tables): a miss reloads
unless a load started after the request looked (concurrent misses share one reload),
and miss-driven loads start at least ``miss_reload_interval`` seconds apart; a miss
inside that interval waits for the next allowed load and shares it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg

log = logging.getLogger(__name__)


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() output, usable in a cast
    nullable: bool
    default: str | None  # pg_get_expr() of the default, catalogue text


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"


@dataclass(frozen=True)
class Argument:
    name: str
    type: str
    has_default: bool


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    arguments: tuple[Argument, ...]
    returns_set: bool
    return_type: str
    returns_void: bool
    # Output columns for functions returning a row type or a TABLE; empty for scalars.
    output_columns: tuple[Column, ...]
    volatile: bool

    @property
    def qualified(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"

    @property
    def returns_rows(self) -> bool:
        return bool(self.output_columns)


_TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name, a.attname AS column,
       format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable,
       -- As PostgREST's schema cache: an identity column's default is its sequence's
       -- next value, a domain's default counts, a generated column has none.
       CASE
         WHEN a.attidentity = 'd' THEN format('nextval(%L)', pg_get_serial_sequence(
           format('%I.%I', n.nspname, c.relname), a.attname)::regclass)
         WHEN a.attgenerated = 's' THEN NULL
         WHEN t.typbasetype <> 0 AND d.adbin IS NULL THEN pg_get_expr(t.typdefaultbin, 0)
         ELSE pg_get_expr(d.adbin, d.adrelid)
       END AS default_expr
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
ORDER BY n.nspname, c.relname, a.attnum
"""

_KEYS_SQL = """
SELECT n.nspname AS schema, c.relname AS name, con.contype::text AS kind,
       array_agg(a.attname ORDER BY k.ord) AS columns
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE con.contype IN ('p', 'u') AND n.nspname = ANY($1::text[])
GROUP BY n.nspname, c.relname, con.oid, con.contype
"""

_FUNCTIONS_SQL = """
SELECT n.nspname AS schema, p.proname AS name, p.proretset AS returns_set,
       format_type(p.prorettype, NULL) AS return_type, p.prorettype = 'void'::regtype AS is_void,
       t.typrelid AS return_relid, p.provolatile = 'v' AS volatile,
       p.pronargs AS nargs, p.pronargdefaults AS ndefaults,
       coalesce(p.proargnames, '{}') AS arg_names,
       coalesce(p.proargmodes::text[], '{}') AS arg_modes,
       ARRAY(SELECT format_type(x, NULL)
             FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY u(x, i)
             ORDER BY i) AS all_arg_types
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_type t ON t.oid = p.prorettype
WHERE n.nspname = ANY($1::text[]) AND p.prokind = 'f'
"""

_RELATION_COLUMNS_SQL = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


MISS_RELOAD_INTERVAL_S = 1.0


class Catalog:
    def __init__(
        self, schemas: tuple[str, ...], *, miss_reload_interval: float = MISS_RELOAD_INTERVAL_S
    ) -> None:
        self.schemas = schemas
        self.miss_reload_interval = miss_reload_interval
        self.tables: dict[tuple[str, str], Table] = {}
        self.functions: dict[tuple[str, str], list[Function]] = {}
        self._load_started_at = float("-inf")
        self._lock = asyncio.Lock()
        self.loads = 0  # how many times the cache was (re)loaded, for tests and logs

    async def load(self, connection: asyncpg.Connection) -> None:
        async with self._lock:
            await self._load_locked(connection)

    async def _load_locked(self, connection: asyncpg.Connection) -> None:
        self._load_started_at = time.monotonic()
        tables = await _load_tables(connection, self.schemas)
        functions = await _load_functions(connection, self.schemas)
        self.tables, self.functions = tables, functions
        self.loads += 1
        log.info("schema cache loaded: %d tables, %d functions", len(tables), len(functions))

    async def reload(self, pool: asyncpg.Pool) -> None:
        """Reload now (NOTIFY pgrst, 'reload schema'): an operator's request, not a miss."""
        async with self._lock, pool.acquire() as connection:
            await self._load_locked(connection)

    async def reload_after_miss(self, pool: asyncpg.Pool) -> bool:
        """Reload unless a load began after this miss, and no sooner than
        ``miss_reload_interval`` after the last load; True when a reload ran or was joined."""
        missed_at = time.monotonic()
        async with self._lock:
            if self._load_started_at > missed_at:
                return True  # someone else reloaded while we waited for the lock
            # Waiting under the lock: misses queued behind it share the coming load.
            wait = self._load_started_at + self.miss_reload_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            async with pool.acquire() as connection:
                await self._load_locked(connection)
        return True

    async def table(self, pool: asyncpg.Pool, schema: str, name: str) -> Table | None:
        found = self.tables.get((schema, name))
        if found is None and await self.reload_after_miss(pool):
            found = self.tables.get((schema, name))
        return found

    async def function_overloads(
        self, pool: asyncpg.Pool, schema: str, name: str
    ) -> list[Function]:
        found = self.functions.get((schema, name), [])
        if not found and await self.reload_after_miss(pool):
            found = self.functions.get((schema, name), [])
        return found


async def _load_tables(
    connection: asyncpg.Connection, schemas: tuple[str, ...]
) -> dict[tuple[str, str], Table]:
    tables: dict[tuple[str, str], Table] = {}
    for row in await connection.fetch(_TABLES_SQL, list(schemas)):
        key = (row["schema"], row["name"])
        table = tables.setdefault(key, Table(schema=row["schema"], name=row["name"]))
        table.columns[row["column"]] = Column(
            name=row["column"],
            type=row["type"],
            nullable=row["nullable"],
            default=row["default_expr"],
        )
    for row in await connection.fetch(_KEYS_SQL, list(schemas)):
        table = tables.get((row["schema"], row["name"]))
        if table is None:
            continue
        columns = tuple(row["columns"])
        if row["kind"] == "p":
            table.primary_key = columns
        else:
            table.unique_keys.append(columns)
    return tables


async def _load_functions(
    connection: asyncpg.Connection, schemas: tuple[str, ...]
) -> dict[tuple[str, str], list[Function]]:
    functions: dict[tuple[str, str], list[Function]] = {}
    for row in await connection.fetch(_FUNCTIONS_SQL, list(schemas)):
        names = list(row["arg_names"])
        modes = list(row["arg_modes"]) or ["i"] * len(row["all_arg_types"])
        types = list(row["all_arg_types"])
        names += [""] * (len(types) - len(names))
        inputs = [(n, t) for n, t, m in zip(names, types, modes, strict=True) if m in "ibv"]
        outputs = [
            Column(n, t, True, None)
            for n, t, m in zip(names, types, modes, strict=True)
            if m in "obt"
        ]
        if not outputs and row["return_relid"]:
            outputs = [
                Column(r["name"], r["type"], True, None)
                for r in await connection.fetch(_RELATION_COLUMNS_SQL, row["return_relid"])
            ]
        if len(outputs) == 1 and not row["return_relid"]:
            outputs = []  # a single OUT parameter makes a scalar function
        first_default = row["nargs"] - row["ndefaults"]
        arguments = tuple(
            Argument(name=name, type=type_, has_default=index >= first_default)
            for index, (name, type_) in enumerate(inputs)
        )
        function = Function(
            schema=row["schema"],
            name=row["name"],
            arguments=arguments,
            returns_set=row["returns_set"],
            return_type=row["return_type"],
            returns_void=row["is_void"],
            output_columns=tuple(outputs),
            volatile=row["volatile"],
        )
        functions.setdefault((row["schema"], row["name"]), []).append(function)
    return functions
