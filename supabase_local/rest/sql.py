"""SQL text for the REST operations, built only from catalogue identifiers.

Every value from the request is appended to ``Statement.args`` and referenced as ``$n``;
values travel as text and are cast by PostgreSQL to the column's catalogue type (so a
bad literal fails with 22P02 there, as in PostgREST). Column names from the request are
only keys into ``columns``; an unknown one fails before any SQL exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from supabase_local.rest.catalog import Column, quote
from supabase_local.rest.errors import RestError
from supabase_local.rest.query import (
    COMPARISON_OPERATORS,
    IS_VALUES,
    Condition,
    Logic,
    OrderTerm,
    SelectItem,
    split_json_path,
)

_INDEX = re.compile(r"-?[0-9]+")


@dataclass
class Statement:
    args: list[object] = field(default_factory=list)

    def bind(self, value: object, cast: str | None = None) -> str:
        self.args.append(value)
        placeholder = f"${len(self.args)}"
        return f"{placeholder}::{cast}" if cast else placeholder


def undefined_column(relation_name: str, column: str) -> RestError:
    return RestError(400, "42703", f"column {relation_name}.{column} does not exist")


def resolve(columns: Mapping[str, Column], relation_name: str, name: str) -> Column:
    column = columns.get(name)
    if column is None:
        raise undefined_column(relation_name, name)
    return column


def reference_sql(
    statement: Statement,
    reference: str,
    columns: Mapping[str, Column],
    relation_name: str,
    qualifier: str,
) -> tuple[str, str, str]:
    """SQL, type and output name of ``col`` or a JSON path ``col->a->>b``.

    Path keys are bound parameters (integers for array positions, as in PostgREST);
    ``->`` keeps the column's json/jsonb type, ``->>`` yields text.
    """
    name, steps = split_json_path(reference)
    column = resolve(columns, relation_name, name)
    sql = f"{qualifier}.{quote(column.name)}"
    sql_type = column.type
    output_name = column.name
    for operator, key in steps:
        # An array index is ASCII digits, as in PostgREST's grammar ("²" is a key).
        if _INDEX.fullmatch(key):
            index = int(key) if len(key) <= 11 else None
            if index is None or not -(2**31) <= index < 2**31:
                raise RestError(400, "22003", "integer out of range")
            step = statement.bind(index, "integer")
        else:
            step = statement.bind(key, "text")
        sql = f"({sql} {operator} {step})"
        sql_type = "text" if operator == "->>" else column.type
        output_name = key
    return sql, sql_type, output_name


def where_sql(
    statement: Statement,
    logic: Logic,
    columns: Mapping[str, Column],
    relation_name: str,
    qualifier: str,
) -> str:
    """The boolean SQL for a logic tree; "TRUE" when it has no conditions."""
    parts = []
    for child in logic.children:
        if isinstance(child, Logic):
            parts.append(where_sql(statement, child, columns, relation_name, qualifier))
        else:
            parts.append(_condition_sql(statement, child, columns, relation_name, qualifier))
    sql = "(" + f" {logic.operator} ".join(parts) + ")" if parts else "TRUE"
    return f"NOT {sql}" if logic.negated else sql


def _condition_sql(
    statement: Statement,
    condition: Condition,
    columns: Mapping[str, Column],
    relation_name: str,
    qualifier: str,
) -> str:
    target, target_type, _ = reference_sql(
        statement, condition.column, columns, relation_name, qualifier
    )
    if condition.operator == "is":
        sql = f"{target} IS {IS_VALUES[str(condition.value)]}"
    elif condition.operator == "in":
        values = list(condition.value)
        sql = f"{target} = ANY({statement.bind(values, 'text[]')}::{target_type}[])"
    else:
        operator = COMPARISON_OPERATORS[condition.operator]
        value = statement.bind(condition.value, "text")
        if condition.operator in ("like", "ilike", "match", "imatch"):
            sql = f"{target}::text {operator} {value}"
        else:
            sql = f"{target} {operator} {value}::{target_type}"
    return f"NOT ({sql})" if condition.negated else sql


def order_sql(
    statement: Statement,
    terms: list[OrderTerm],
    columns: Mapping[str, Column],
    relation_name: str,
    qualifier: str,
) -> str:
    if not terms:
        return ""
    rendered = []
    for term in terms:
        target, _, _ = reference_sql(statement, term.column, columns, relation_name, qualifier)
        piece = f"{target} {'DESC' if term.descending else 'ASC'}"
        if term.nulls:
            piece += f" NULLS {term.nulls}"
        rendered.append(piece)
    return " ORDER BY " + ", ".join(rendered)


def page_sql(statement: Statement, offset: int, limit: int | None) -> str:
    sql = ""
    if limit is not None:
        sql += f" LIMIT {statement.bind(limit, 'bigint')}"
    if offset:
        sql += f" OFFSET {statement.bind(offset, 'bigint')}"
    return sql


def row_json_sql(
    statement: Statement,
    items: list[SelectItem],
    columns: Mapping[str, Column],
    relation_name: str,
    row_alias: str,
) -> str:
    """JSON of one row of ``row_alias`` shaped by ``select``; keys are bound parameters."""
    if all(item.column == "*" and item.alias is None for item in items):
        return f"to_json({row_alias})"
    pairs = []
    for item in items:
        if item.column == "*":
            for column in columns.values():
                key = statement.bind(column.name, "text")
                pairs.append(f"{key}, {row_alias}.{quote(column.name)}")
            continue
        target, _, output_name = reference_sql(
            statement, item.column, columns, relation_name, row_alias
        )
        pairs.append(f"{statement.bind(item.alias or output_name, 'text')}, {target}")
    if len(pairs) > 50:
        # json_build_object takes at most 100 arguments.
        raise RestError(400, "PGRST100", "select lists more than 50 columns")
    return "json_build_object(" + ", ".join(pairs) + ")"
