"""Who may see a change: PostgreSQL decides, as the subscriber's role, in batches.

Like Realtime's WALRUS, a row change reaches a subscriber only if the subscriber's role,
with its JWT claims in ``request.jwt.claims``, can SELECT that row (looked up by primary
key). To scale to thousands of subscribers we never check per subscriber:

* Subscribers are grouped by :func:`RlsChecker.group_key`: the role alone when no
  SELECT policy that applies to the role reads the claims (``auth.uid()``, ``auth.jwt()``,
  ``current_setting(…)``), else the role plus the claims that matter.
* Per group the answer is often known without a query: no SELECT privilege → nothing;
  RLS off, or a role with BYPASSRLS (service_role) → everything; RLS on and no
  permissive SELECT policy for the role → nothing.
* Otherwise one query per (table, group) per transaction checks all its rows at once.

DELETE follows Realtime: RLS cannot be applied to a row that no longer exists, so a
delete goes to every role with SELECT privilege on the table, and its ``old_record``
holds only the primary key unless the table has REPLICA IDENTITY FULL and RLS off.

Catalogue facts are cached for :data:`CACHE_TTL_S` seconds and refreshed in the
background (a change is judged with facts at most one refresh old).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

CACHE_TTL_S = 2.0
ROLES = ("anon", "authenticated", "service_role")
_CLAIMS_DEPENDENT = re.compile(
    r"auth\.(uid|jwt|role|email)|current_setting|request\.jwt|current_user|session_user",
    re.I,
)

TABLE_SQL = """
SELECT c.oid, c.relrowsecurity, c.relreplident = 'f' AS replica_full,
       coalesce((SELECT array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))
                 FROM pg_index i JOIN pg_attribute a
                   ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS pk
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
"""

COLUMNS_SQL = """
SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

ROLE_SQL = """
SELECT r.rolname, r.rolsuper OR r.rolbypassrls AS bypass,
       has_table_privilege(r.rolname, $1::oid, 'SELECT') AS can_select
FROM pg_roles r WHERE r.rolname = ANY($2::text[])
"""

POLICIES_SQL = """
SELECT p.roles::text[], p.qual, p.permissive
FROM pg_policies p
WHERE p.schemaname = $1 AND p.tablename = $2 AND p.cmd IN ('SELECT', 'ALL')
"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(slots=True)
class RoleAccess:
    verdict: str  # "all" | "none" | "check"
    claims_dependent: bool = False


@dataclass(slots=True)
class TableInfo:
    schema: str
    table: str
    oid: int
    rls_enabled: bool
    replica_full: bool
    pk: list[str]
    columns: list[dict[str, str]]  # [{"name", "type"}] as Realtime sends them
    sql_types: dict[str, str]
    roles: dict[str, RoleAccess] = field(default_factory=dict)
    loaded_at: float = 0.0

    @property
    def column_types(self) -> dict[str, str]:
        return {c["name"]: c["type"] for c in self.columns}

    def delete_old_record(self, old: dict[str, Any] | None) -> dict[str, Any]:
        if old is None:
            return {}
        if self.replica_full and not self.rls_enabled:
            return old
        return {k: old.get(k) for k in self.pk}

    def update_old_record(self, old: dict[str, Any] | None) -> dict[str, Any]:
        # Default replica identity: Realtime's old_record for UPDATE has the key only.
        return self.delete_old_record(old)


class RlsChecker:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._tables: dict[tuple[str, str], TableInfo] = {}
        self._refreshing: dict[tuple[str, str], asyncio.Task[TableInfo | None]] = {}

    async def table(self, schema: str, table: str) -> TableInfo | None:
        key = (schema, table)
        info = self._tables.get(key)
        if info is None:
            return await self._refresh(key)
        if time.monotonic() - info.loaded_at >= CACHE_TTL_S and key not in self._refreshing:
            # Stale-while-revalidate: delivery never waits for the catalogue.
            task = asyncio.create_task(self._refresh(key))
            self._refreshing[key] = task
            task.add_done_callback(lambda _t, k=key: self._refreshing.pop(k, None))
        return info

    async def _refresh(self, key: tuple[str, str]) -> TableInfo | None:
        try:
            info = await self._load(*key)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            log.warning("realtime: reloading %s.%s from the catalogue failed", *key)
            return self._tables.get(key)
        if info is None:
            self._tables.pop(key, None)
        else:
            self._tables[key] = info
        return info

    async def _load(self, schema: str, table: str) -> TableInfo | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(TABLE_SQL, schema, table)
            if row is None:
                return None
            cols = await conn.fetch(COLUMNS_SQL, row["oid"])
            roles = await conn.fetch(ROLE_SQL, row["oid"], list(ROLES))
            policies = await conn.fetch(POLICIES_SQL, schema, table)
        info = TableInfo(
            schema=schema,
            table=table,
            oid=row["oid"],
            rls_enabled=row["relrowsecurity"],
            replica_full=row["replica_full"],
            pk=list(row["pk"]),
            columns=[{"name": c[0], "type": c[1]} for c in cols],
            sql_types={c[0]: c[2] for c in cols},
            loaded_at=time.monotonic(),
        )
        for r in roles:
            info.roles[r["rolname"]] = _role_access(
                r["rolname"], r["bypass"], r["can_select"], info.rls_enabled, policies
            )
        return info

    @staticmethod
    def group_key(info: TableInfo, role: str, claims: dict[str, Any]) -> tuple[str, str]:
        access = info.roles.get(role)
        if access is not None and access.claims_dependent:
            significant = {k: v for k, v in claims.items() if k not in ("exp", "iat", "nbf")}
            return role, json.dumps(significant, sort_keys=True, default=str)
        return role, ""

    def can_receive_deletes(self, info: TableInfo, role: str) -> bool:
        access = info.roles.get(role)
        return access is not None and access.verdict != "none_privilege"

    async def visible(
        self,
        info: TableInfo,
        role: str,
        claims: dict[str, Any],
        records: list[dict[str, Any]],
    ) -> list[bool]:
        """For each record (same table), may ``role`` with ``claims`` SELECT it now?"""
        access = info.roles.get(role)
        if access is None or access.verdict in ("none", "none_privilege"):
            return [False] * len(records)
        if access.verdict == "all":
            return [True] * len(records)
        if not info.pk:
            # Without a key the row cannot be found again; Realtime refuses such tables
            # under RLS, and so do we (nothing is sent).
            return [False] * len(records)
        keys = [{"__i": i, **{k: rec.get(k) for k in info.pk}} for i, rec in enumerate(records)]
        coldefs = ", ".join(f"{_ident(k)} {info.sql_types[k]}" for k in info.pk)
        match = " AND ".join(f"t.{_ident(k)} = k.{_ident(k)}" for k in info.pk)
        query = (
            f"SELECT k.__i FROM jsonb_to_recordset($1::jsonb) AS k(__i int, {coldefs}) "
            f"WHERE EXISTS (SELECT 1 FROM {_ident(info.schema)}.{_ident(info.table)} t "
            f"WHERE {match})"
        )
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            # role is one of ROLES (checked when the token was verified).
            await conn.execute(f"SET LOCAL ROLE {_ident(role)}")
            await conn.execute(
                "SELECT set_config('request.jwt.claims', $1, true),"
                " set_config('request.jwt.claim.sub', $2, true),"
                " set_config('request.jwt.claim.role', $3, true)",
                json.dumps(claims, default=str),
                str(claims.get("sub") or ""),
                role,
            )
            rows = await conn.fetch(query, json.dumps(keys, default=str))
        seen = {r[0] for r in rows}
        return [i in seen for i in range(len(records))]


def _role_access(
    role: str,
    bypass: bool,
    can_select: bool,
    rls_enabled: bool,
    policies: list[asyncpg.Record],
) -> RoleAccess:
    if not can_select:
        return RoleAccess("none_privilege")
    if bypass or not rls_enabled:
        return RoleAccess("all")
    applicable = [
        p
        for p in policies
        if p["permissive"] == "PERMISSIVE" and ("public" in p["roles"] or role in p["roles"])
    ]
    if not applicable:
        return RoleAccess("none")
    restrictive = [
        p
        for p in policies
        if p["permissive"] != "PERMISSIVE" and ("public" in p["roles"] or role in p["roles"])
    ]
    if not restrictive and any((p["qual"] or "").strip() == "true" for p in applicable):
        # USING (true): every row is visible; no need to ask per change.
        return RoleAccess("all")
    texts = [p["qual"] or "" for p in applicable + restrictive]
    return RoleAccess("check", any(_CLAIMS_DEPENDENT.search(t) for t in texts))
