"""Realtime Authorization: who may receive and send on a private channel, decided by the
RLS policies on ``realtime.messages``, evaluated by PostgreSQL as the joining user.

As Supabase Realtime does it (``Realtime.Tenants.Authorization``):

* **read** — in a transaction, insert one probe row per extension (``broadcast``,
  ``presence``) for the topic as the server; then become the user (``role``,
  ``request.jwt.claims``, ``request.headers``, ``realtime.topic``) and select the probes
  back. A probe the user's SELECT policies let through grants that extension's read.
* **write** — as the user, insert a probe per extension inside a savepoint; an
  ``insufficient_privilege`` (RLS ``WITH CHECK`` or a missing grant) means no write.
* Both transactions are rolled back, so no probe is ever stored or broadcast.

A join of a private channel is refused unless broadcast or presence read is granted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

_BECOME_USER = (
    "SELECT set_config('role', $1, true), set_config('realtime.topic', $2, true),"
    " set_config('request.jwt.claims', $3, true), set_config('request.headers', $4, true)"
)
_PROBE = (
    "INSERT INTO realtime.messages (topic, extension, private) VALUES ($1, $2, true) RETURNING id"
)


@dataclass(frozen=True)
class Permissions:
    broadcast_read: bool = False
    broadcast_write: bool = False
    presence_read: bool = False
    presence_write: bool = False

    @property
    def may_join(self) -> bool:
        return self.broadcast_read or self.presence_read


class PolicyError(Exception):
    """A policy raised an error other than a refusal (Realtime: RlsPolicyError)."""


async def _become(
    conn: asyncpg.Connection, *, topic: str, claims: Any, headers: dict[str, str]
) -> None:
    await conn.execute(
        _BECOME_USER, claims.role, topic, json.dumps(claims.raw), json.dumps(headers)
    )


async def _read(
    conn: asyncpg.Connection, *, topic: str, claims: Any, headers: dict[str, str]
) -> tuple[bool, bool]:
    tx = conn.transaction()
    await tx.start()
    try:
        broadcast_id = await conn.fetchval(_PROBE, topic, "broadcast")
        presence_id = await conn.fetchval(_PROBE, topic, "presence")
        await _become(conn, topic=topic, claims=claims, headers=headers)
        rows = await conn.fetch(
            "SELECT id FROM realtime.messages WHERE topic = $1 AND"
            " ((extension = 'broadcast' AND id = $2) OR (extension = 'presence' AND id = $3))",
            topic,
            broadcast_id,
            presence_id,
        )
        seen = {row["id"] for row in rows}
        return broadcast_id in seen, presence_id in seen
    finally:
        await tx.rollback()


async def _write(
    conn: asyncpg.Connection, *, topic: str, claims: Any, headers: dict[str, str]
) -> tuple[bool, bool]:
    tx = conn.transaction()
    await tx.start()
    try:
        await _become(conn, topic=topic, claims=claims, headers=headers)
        allowed = []
        for extension in ("broadcast", "presence"):
            try:
                async with conn.transaction():  # a savepoint
                    await conn.fetchval(_PROBE, topic, extension)
            except asyncpg.InsufficientPrivilegeError:
                allowed.append(False)
            else:
                allowed.append(True)
        return allowed[0], allowed[1]
    finally:
        await tx.rollback()


async def permissions_for(
    pool: asyncpg.Pool, *, topic: str, claims: Any, headers: dict[str, str] | None = None
) -> Permissions:
    """The user's permissions on a private ``topic`` (the name without ``realtime:``)."""
    headers = headers or {}
    try:
        async with pool.acquire() as conn:
            broadcast_read, presence_read = await _read(
                conn, topic=topic, claims=claims, headers=headers
            )
            broadcast_write, presence_write = await _write(
                conn, topic=topic, claims=claims, headers=headers
            )
    except asyncpg.PostgresError as error:
        raise PolicyError(str(error)) from error
    return Permissions(
        broadcast_read=broadcast_read,
        broadcast_write=broadcast_write,
        presence_read=presence_read,
        presence_write=presence_write,
    )


async def may_send(
    pool: asyncpg.Pool, *, topic: str, claims: Any, headers: dict[str, str] | None = None
) -> bool:
    """Broadcast write on a private topic (the REST broadcast endpoint's check)."""
    try:
        async with pool.acquire() as conn:
            broadcast_write, _ = await _write(
                conn, topic=topic, claims=claims, headers=headers or {}
            )
    except asyncpg.PostgresError:
        return False
    return broadcast_write
