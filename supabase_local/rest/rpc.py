"""RPC: choosing the function a call means (by argument names) and the SQL calling it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supabase_local.rest.catalog import Function, quote
from supabase_local.rest.errors import RestError
from supabase_local.rest.query import (
    page_window,
    parse_filters,
    parse_non_negative,
    parse_order,
    parse_select,
)
from supabase_local.rest.sql import Statement, order_sql, page_sql, row_json_sql, where_sql

JSON_MEDIA = "application/json"
# PostgREST passes a POST body whole to a function with one unnamed parameter of the
# type its media type names.
BODY_MEDIA_TYPES = {
    JSON_MEDIA: ("json", "jsonb"),
    "text/plain": ("text",),
    "text/xml": ("xml",),
    "application/octet-stream": ("bytea",),
}


@dataclass(frozen=True)
class WholeBody:
    media_type: str
    raw: bytes


def _takes_whole_body(function: Function, body: WholeBody | None) -> bool:
    if body is None or len(function.arguments) != 1:
        return False
    (argument,) = function.arguments
    return argument.name == "" and argument.type in BODY_MEDIA_TYPES.get(body.media_type, ())


def choose_overload(
    schema: str,
    name: str,
    overloads: list[Function],
    candidates: dict[str, Any] | None,
    reading: bool,
    *,
    body: WholeBody | None = None,
) -> tuple[Function, dict[str, Any]]:
    """The one function whose parameters fit the given names, and its arguments.

    When none fits by name, a function with a single unnamed parameter of the body's
    media type takes the whole body (PostgREST's fallback); its arguments are then
    ``{"": <body>}``. ``candidates`` is None when the JSON body is not an object.
    """
    fitting: list[tuple[Function, dict[str, Any]]] = []
    fallback = [
        (function, {"": body.raw}) for function in overloads if _takes_whole_body(function, body)
    ]
    if candidates is None:
        if len(fallback) == 1:
            return fallback[0]
        raise RestError(
            400,
            "PGRST102",
            "Empty or invalid json",
            details="rpc arguments must be one JSON object",
        )
    for function in overloads:
        if _takes_whole_body(function, body):
            continue
        names = {arg.name for arg in function.arguments}
        if reading:
            # On GET, parameters naming an argument are arguments; the rest are filters.
            arguments = {key: value for key, value in candidates.items() if key in names}
        else:
            if not set(candidates) <= names:
                continue
            arguments = dict(candidates)
        required = {arg.name for arg in function.arguments if not arg.has_default}
        if required <= set(arguments):
            fitting.append((function, arguments))
    if len(fitting) == 1:
        return fitting[0]
    if not fitting and len(fallback) == 1:
        return fallback[0]
    signature = ", ".join(sorted(candidates))
    if not fitting:
        raise RestError(
            404,
            "PGRST202",
            f"Could not find the function {schema}.{name}({signature}) in the schema cache",
            details=(
                f"Searched for the function {schema}.{name} with parameters {signature} or with"
                " a single unnamed json/jsonb parameter, but no matches were found in the"
                " schema cache."
            ),
        )
    raise RestError(
        300,
        "PGRST203",
        "Could not choose the best candidate function between: "
        + ", ".join(f"{f.schema}.{f.name}" for f, _ in fitting),
        hint="Try renaming the parameters or the function itself in the database",
    )


def call_sql(
    function: Function,
    arguments: dict[str, Any],
    filter_params: list[tuple[str, str]],
    query: Mapping[str, str],
    *,
    header_range: tuple[int, int | None] | None,
    count: bool,
) -> tuple[str, Statement, int]:
    """The statement calling ``function``: (SQL, its arguments, the page's offset).

    Arguments travel as one JSON parameter, typed by ``json_to_record`` with the
    catalogue's argument types and passed by name, so defaults apply to the rest. A
    function returning rows takes ``select``, filters, ``order`` and paging over its
    result like a table; one returning scalars is returned as they come.
    """
    statement = Statement()
    page_offset = 0
    if "" in arguments:
        # The whole body as the single unnamed argument, cast to its type.
        (argument,) = function.arguments
        raw: bytes = arguments[""]
        value = raw if argument.type == "bytea" else raw.decode("utf-8", "replace")
        cast = "bytea" if argument.type == "bytea" else f"text::{argument.type}"
        source = f"{function.qualified}({statement.bind(value, cast)}) AS _pgrst_row"
    elif arguments:
        args_param = statement.bind(json.dumps(arguments), "json")
        record_columns = ", ".join(
            f"{quote(arg.name)} {arg.type}" for arg in function.arguments if arg.name in arguments
        )
        call_args = ", ".join(
            f"{quote(arg.name)} => _pgrst_args.{quote(arg.name)}"
            for arg in function.arguments
            if arg.name in arguments
        )
        source = (
            f"json_to_record({args_param}) AS _pgrst_args({record_columns})"
            f" CROSS JOIN LATERAL {function.qualified}({call_args}) AS _pgrst_row"
        )
    else:
        source = f"{function.qualified}() AS _pgrst_row"

    if function.returns_void:
        sql = (
            "SELECT NULL::bigint AS total, 1::bigint AS page_count, NULL::text AS body"
            f" FROM {source}"
        )
    elif function.returns_rows:
        columns = {column.name: column for column in function.output_columns}
        logic = parse_filters(filter_params, skip=set())
        items = parse_select(query.get("select"))
        where = where_sql(statement, logic, columns, function.name, "_pgrst_row")
        ordering = order_sql(
            statement, parse_order(query.get("order")), columns, function.name, "_pgrst_row"
        )
        page_offset, limit = page_window(
            parse_non_negative("limit", query.get("limit")),
            parse_non_negative("offset", query.get("offset")),
            header_range,
        )
        page = page_sql(statement, page_offset, limit)
        row_json = row_json_sql(statement, items, columns, function.name, "_pgrst_page")
        inner = f"SELECT _pgrst_row.* FROM {source} WHERE {where}"
        if function.returns_set:
            body = f"coalesce(json_agg({row_json}), '[]')::text"
        else:
            body = f"(array_agg({row_json}))[1]::text"
        if count:
            # Count over the materialised call, not by calling the function again.
            sql = (
                f"WITH pgrst_all AS MATERIALIZED ({inner}),"
                f" pgrst_source AS (SELECT * FROM pgrst_all AS _pgrst_row{ordering}{page})"
                " SELECT (SELECT pg_catalog.count(*) FROM pgrst_all) AS total,"
                f" pg_catalog.count(*) AS page_count, {body} AS body"
                " FROM pgrst_source AS _pgrst_page"
            )
        else:
            sql = (
                f"WITH pgrst_source AS MATERIALIZED ({inner}{ordering}{page})"
                " SELECT NULL::bigint AS total, pg_catalog.count(*) AS page_count,"
                f" {body} AS body FROM pgrst_source AS _pgrst_page"
            )
    else:
        if function.returns_set:
            body = "coalesce(json_agg(_pgrst_row), '[]')::text"
        else:
            body = "(array_agg(to_json(_pgrst_row)))[1]::text"
        total = "pg_catalog.count(*)" if count else "NULL::bigint"
        sql = (
            f"SELECT {total} AS total, pg_catalog.count(*) AS page_count,"
            f" {body} AS body FROM {source}"
        )
    return sql, statement, page_offset
