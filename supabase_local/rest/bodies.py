"""Request bodies: JSON parsing and column checks for inserts and updates.

A body is parsed in Python only when the server must look inside it (no ``columns``
parameter, PATCH, RPC arguments); otherwise PostgreSQL parses it and its JSON errors
are mapped to PGRST102 by ``is_json_error``.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from supabase_local.rest.catalog import Table
from supabase_local.rest.errors import RestError


def json_body(raw: bytes, *, empty_ok: bool = False) -> Any:
    if not raw.strip():
        if empty_ok:
            return None
        raise RestError(400, "PGRST102", "Empty or invalid json")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise RestError(400, "PGRST102", "Empty or invalid json", details=str(error)) from error


def parsed_rows(raw: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The body as the text of a JSON array of objects, and those objects."""
    payload = json_body(raw)
    if isinstance(payload, dict):
        return "[" + raw.decode("utf-8") + "]", [payload]
    if isinstance(payload, list) and all(isinstance(row, dict) for row in payload):
        return raw.decode("utf-8"), payload
    raise RestError(
        400,
        "PGRST102",
        "Empty or invalid json",
        details="the body must be a JSON object or an array of objects",
    )


def unparsed_rows(raw: bytes) -> tuple[str, list[Any] | None]:
    """Like ``parsed_rows`` without parsing: ``rows`` is None (unknown) or [] (empty)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RestError(400, "PGRST102", "Empty or invalid json", details=str(error)) from error
    stripped = text.strip()
    if stripped.startswith("{"):
        return "[" + text + "]", None
    if stripped.startswith("["):
        return text, [] if stripped[1:].strip() == "]" else None
    raise RestError(400, "PGRST102", "Empty or invalid json")


def is_json_error(error: asyncpg.PostgresError) -> bool:
    return error.sqlstate in ("22P02", "22023") and "json" in (error.message or "")


def body_column(table: Table, name: str) -> str:
    if name not in table.columns:
        raise RestError(
            400,
            "PGRST204",
            f"Could not find the '{name}' column of '{table.name}' in the schema cache",
        )
    return name


def existing_column(table: Table, name: str) -> str:
    if name not in table.columns:
        raise RestError(400, "42703", f"column {table.name}.{name} does not exist")
    return name
