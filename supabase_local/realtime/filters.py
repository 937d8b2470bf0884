"""``postgres_changes`` binding filters (``column=op.value``), evaluated in Python.

Realtime evaluates a binding's filter against the changed row; we do the same on the
record decoded from the outbox, casting the filter value to the column's type so that
``seq=gt.9`` compares numbers, not strings. Supported: ``eq neq lt lte gt gte in``
(Realtime's documented set) plus ``is`` (null/true/false), ``like``/``ilike`` and a
``not.`` prefix; several conditions joined by commas are ANDed (commas inside ``in.(…)``
belong to the list).

Invariant: parsing happens once, at join time; :meth:`Filter.matches` is called per
change per subscriber and must stay cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "is", "like", "ilike")
_INT_TYPES = {"int2", "int4", "int8", "oid"}
_FLOAT_TYPES = {"float4", "float8", "numeric"}
_TIME_TYPES = {"timestamptz", "timestamp", "date"}


class FilterError(ValueError):
    """A filter string Realtime would refuse."""


@dataclass(frozen=True, slots=True)
class Condition:
    column: str
    op: str
    negate: bool
    raw: str | tuple[str, ...]
    # Filled in once the column's type is known (see Filter.bind_types).
    test: Callable[[Any], bool] | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    conditions: tuple[Condition, ...]
    text: str = ""

    @property
    def columns(self) -> set[str]:
        return {c.column for c in self.conditions}

    def bind_types(self, column_types: dict[str, str]) -> Filter:
        """Return a filter whose conditions compare values as the columns' types."""
        bound = []
        for cond in self.conditions:
            if cond.column not in column_types:
                raise FilterError(f"unknown column {cond.column!r} in filter")
            test = _make_test(cond, column_types[cond.column])
            bound.append(Condition(cond.column, cond.op, cond.negate, cond.raw, test))
        return Filter(tuple(bound), self.text)

    def matches(self, record: dict[str, Any] | None) -> bool:
        if record is None:
            return False
        for cond in self.conditions:
            if cond.column not in record:
                # e.g. a DELETE whose old_record holds the primary key only.
                return False
            assert cond.test is not None
            if not cond.test(record[cond.column]):
                return False
        return True


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


_CONDITION = re.compile(r"^(?P<col>[^=]+)=(?P<not>not\.)?(?P<op>[a-z]+)\.(?P<val>.*)$", re.S)


def parse_filter(text: str) -> Filter:
    conditions = []
    for part in _split_top_level(text):
        m = _CONDITION.match(part.strip())
        if not m or m["op"] not in OPERATORS:
            raise FilterError(f"Error parsing `filter` params: {part!r}")
        value: str | tuple[str, ...] = m["val"]
        if m["op"] == "in":
            if not (value.startswith("(") and value.endswith(")")):
                raise FilterError(f"Error parsing `filter` params: {part!r}")
            value = tuple(v.strip().strip('"') for v in value[1:-1].split(",") if v.strip())
        conditions.append(Condition(m["col"].strip(), m["op"], bool(m["not"]), value))
    return Filter(tuple(conditions), text)


def _caster(type_name: str) -> Callable[[Any], Any]:
    if type_name in _INT_TYPES:
        return int
    if type_name in _FLOAT_TYPES:
        return Decimal
    if type_name == "bool":
        return lambda v: v if isinstance(v, bool) else str(v).lower() in ("true", "t", "1")
    if type_name in _TIME_TYPES:
        return lambda v: _parse_time(str(v))
    return str


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value


def _make_test(cond: Condition, type_name: str) -> Callable[[Any], bool]:
    cast = _caster(type_name)

    def safe(v: Any) -> Any:
        try:
            return cast(v if not isinstance(v, float) else repr(v))
        except (ValueError, TypeError, InvalidOperation):
            return None

    op, negate = cond.op, cond.negate
    if op == "is":
        target = str(cond.raw).lower()
        if target not in ("null", "true", "false"):
            raise FilterError(f"is.{cond.raw}: expected null, true or false")
        expected = {"null": None, "true": True, "false": False}[target]

        def test_is(v: Any) -> bool:
            return (v is expected) is not negate

        return test_is
    if op == "in":
        wanted = {safe(x) for x in cond.raw}

        def test_in(v: Any) -> bool:
            return v is not None and (safe(v) in wanted) is not negate

        return test_in
    if op in ("like", "ilike"):
        pattern = "^" + ".*".join(re.escape(p) for p in str(cond.raw).split("%")) + "$"
        pattern = pattern.replace(re.escape("_"), ".")
        rx = re.compile(pattern, re.I if op == "ilike" else 0)

        def test_like(v: Any) -> bool:
            return v is not None and bool(rx.match(str(v))) is not negate

        return test_like
    target_value = safe(cond.raw)
    if target_value is None:
        raise FilterError(f"{cond.column}: {cond.raw!r} is not a valid {type_name}")
    compare: Callable[[Any, Any], bool] = {
        "eq": lambda a, b: a == b,
        "neq": lambda a, b: a != b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
    }[op]

    def test_cmp(v: Any) -> bool:
        value = safe(v) if v is not None else None
        if value is None:
            return False  # SQL semantics: a comparison with NULL is never true
        try:
            return compare(value, target_value) is not negate
        except TypeError:
            return False

    return test_cmp
