"""Parsing of PostgREST's URL grammar and headers into plain data.

Nothing here touches the database or builds SQL: the parsed names are looked up in the
catalogue later. Grammar errors raise PGRST100 (``failed to parse ...``) like PostgREST.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from supabase_local.rest.errors import RestError, bad_query

# Operators with one value; "in" takes a list and "is" a keyword, handled apart.
COMPARISON_OPERATORS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "LIKE",
    "ilike": "ILIKE",
    "match": "~",
    "imatch": "~*",
    "cs": "@>",
    "cd": "<@",
    "ov": "&&",
    "isdistinct": "IS DISTINCT FROM",
}
IS_VALUES = {
    "null": "NULL",
    "not_null": "NOT NULL",
    "true": "TRUE",
    "false": "FALSE",
    "unknown": "UNKNOWN",
}
RESERVED_PARAMS = {"select", "order", "limit", "offset", "columns", "on_conflict"}
LOGIC_PARAMS = {"or", "and", "not.or", "not.and"}
BIGINT_MAX = 2**63 - 1
_ASCII_DIGITS = re.compile(r"[0-9]+")


def bigint(text: str) -> int:
    """ASCII digits (already checked) as an int; beyond bigint is PostgreSQL's 22003,
    which is what PostgREST answers when it passes such a number on."""
    # Checked on the text first: int() of thousands of digits is slow, then refused.
    if len(text.lstrip("0")) > len(str(BIGINT_MAX)) or int(text) > BIGINT_MAX:
        raise RestError(400, "22003", "bigint out of range")
    return int(text)


@dataclass(frozen=True)
class Condition:
    column: str
    operator: str  # a key of COMPARISON_OPERATORS, or "in" / "is"
    value: str | tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class Logic:
    operator: str  # "AND" | "OR"
    children: tuple[Condition | Logic, ...]
    negated: bool = False


@dataclass(frozen=True)
class SelectItem:
    column: str  # "*" for every column
    alias: str | None = None


@dataclass(frozen=True)
class OrderTerm:
    column: str
    descending: bool = False
    nulls: str | None = None  # "FIRST" | "LAST"


@dataclass
class Preferences:
    returning: str = "minimal"  # representation | minimal | headers-only
    count_mode: str | None = None  # exact | planned | estimated
    resolution: str | None = None  # merge-duplicates | ignore-duplicates
    missing_default: bool = False
    strict: bool = False  # handling=strict: max-affected is enforced
    max_affected: int | None = None
    # commit | rollback; only when the server allows overrides (--db-tx-end *-allow-override)
    tx: str | None = None
    invalid: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)

    @property
    def count(self) -> bool:
        """An exact total is wanted: ``estimated`` is exact here (no db-max-rows)."""
        return self.count_mode in ("exact", "estimated")


# Preference-Applied lists what was honoured in this order, as PostgREST does.
_APPLIED_ORDER = ("resolution", "missing", "return", "count", "tx", "handling", "max-affected")
_ACCEPTED = {
    "return": ("representation", "minimal", "headers-only"),
    "count": ("exact", "planned", "estimated"),
    "resolution": ("merge-duplicates", "ignore-duplicates"),
    "missing": ("default", "null"),
    "handling": ("strict", "lenient"),
    "tx": ("commit", "rollback"),
}


def parse_prefer(header_values: list[str], *, allow_tx_override: bool = False) -> Preferences:
    """The ``Prefer`` headers; the first value of each preference wins, as in PostgREST.

    ``tx=commit|rollback`` is accepted but applied only with ``allow_tx_override``
    (PostgREST's ``db-tx-end = *-allow-override``; a hosted Supabase project uses
    ``commit`` and ignores it). Anything else unknown is ignored, or refused with
    ``PGRST122`` under ``handling=strict`` (see :func:`check_strict`).
    """
    preferences = Preferences()
    chosen: dict[str, str] = {}
    tokens = [t.strip() for value in header_values for t in value.split(",") if t.strip()]
    for token in tokens:
        name, _, value = token.partition("=")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "max-affected" and _ASCII_DIGITS.fullmatch(value):
            chosen.setdefault(name, value)
        elif name == "timezone" and value:
            pass  # accepted by PostgREST; not applied here
        elif value in _ACCEPTED.get(name, ()):
            chosen.setdefault(name, value)
        else:
            preferences.invalid.append(token)
    if "return" in chosen:
        preferences.returning = chosen["return"]
    preferences.count_mode = chosen.get("count")
    preferences.resolution = chosen.get("resolution")
    preferences.missing_default = chosen.get("missing") == "default"
    preferences.strict = chosen.get("handling") == "strict"
    if "max-affected" in chosen:
        preferences.max_affected = bigint(chosen["max-affected"])
    if not allow_tx_override:
        chosen.pop("tx", None)
    preferences.tx = chosen.get("tx")
    if not preferences.strict:
        chosen.pop("max-affected", None)  # applied only under handling=strict
    preferences.applied = [f"{name}={chosen[name]}" for name in _APPLIED_ORDER if name in chosen]
    return preferences


def check_strict(preferences: Preferences) -> None:
    """Under ``handling=strict`` an unknown preference is an error, as in PostgREST."""
    if preferences.strict and preferences.invalid:
        raise RestError(
            400,
            "PGRST122",
            "Invalid preferences given with handling=strict",
            details="Invalid preferences: " + ", ".join(preferences.invalid),
        )


def split_top_level(text: str, separator: str = ",", *, arrays: bool = False) -> list[str]:
    """Split on ``separator`` outside double quotes and parentheses; with ``arrays``,
    also outside ``{...}`` (a logic tree's array literal, as in ``tags.cs.{a,b}``: like
    PostgREST, a value that starts with ``{`` runs to the first ``}``, without nesting)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    in_array = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if in_array:
            in_array = char != "}"
            current.append(char)
            continue
        if quoted and char == "\\":
            escaped = True
            current.append(char)
            continue
        if char == '"':
            quoted = not quoted
        elif arrays and not quoted and char == "{" and current and current[-1] == ".":
            in_array = True  # a value that starts with "{", as PostgREST's pPgArray
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                raise bad_query(f'"failed to parse ({text})"', "unbalanced parentheses")
        elif not quoted and depth == 0 and char == separator:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted or depth:
        raise bad_query(f'"failed to parse ({text})"', "unterminated quote or parenthesis")
    parts.append("".join(current))
    return parts


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def parse_list(text: str) -> tuple[str, ...]:
    if not (text.startswith("(") and text.endswith(")")):
        raise bad_query(f'"failed to parse filter (in.{text})"', "expecting a list: (a,b,...)")
    inner = text[1:-1]
    if inner == "":
        return ()
    # Whitespace is part of an unquoted value (as in PostgREST); around quotes it is not.
    return tuple(
        unquote(item.strip()) if item.strip().startswith('"') else item
        for item in split_top_level(inner)
    )


def parse_condition(column: str, expression: str, *, in_logic: bool = False) -> Condition:
    """``expression`` is ``[not.]operator.value`` as in ``?col=not.eq.5``."""
    negated = False
    operator, dot, value = expression.partition(".")
    if operator == "not":
        negated = True
        operator, dot, value = value.partition(".")
    if not dot:
        raise bad_query(
            f'"failed to parse filter ({expression})" (line 1, column {len(expression) + 1})',
            "unexpected end of input expecting an operator followed by a value",
        )
    if operator == "in":
        return Condition(column, "in", parse_list(value), negated)
    if operator == "is":
        if value.lower() not in IS_VALUES:
            raise bad_query(
                f'"failed to parse filter ({expression})"',
                "is accepts only null, not_null, true, false or unknown",
            )
        return Condition(column, "is", value.lower(), negated)
    if operator not in COMPARISON_OPERATORS:
        raise bad_query(
            f'"failed to parse filter ({expression})" (line 1, column 1)',
            f'unexpected "{operator}" expecting an operator such as eq, neq, gt, in, is',
        )
    if in_logic:
        value = unquote(value)
    if operator in ("like", "ilike"):
        value = value.replace("*", "%")
    return Condition(column, operator, value, negated)


# Deeper logic trees are refused (PGRST100) before they reach Python's recursion limit
# or PostgreSQL's stack: no dashboard nests filters more than a few levels.
MAX_LOGIC_DEPTH = 32


def parse_logic(key: str, text: str, *, depth: int = 1) -> Logic:
    """``key`` is or / and / not.or / not.and, ``text`` is ``(cond,cond,...)``."""
    negated = key.startswith("not.")
    operator = key.removeprefix("not.").upper()
    if not (text.startswith("(") and text.endswith(")")):
        raise bad_query(f'"failed to parse logic tree ({text})"', "expecting (...)")
    if depth > MAX_LOGIC_DEPTH:
        raise bad_query(
            '"failed to parse logic tree"',
            f"logic trees may nest at most {MAX_LOGIC_DEPTH} levels deep",
        )
    children: list[Condition | Logic] = []
    for part in split_top_level(text[1:-1], arrays=True):
        part = part.strip()
        head = re.match(r"^(not\.)?(and|or)\(", part)
        if head:
            children.append(
                parse_logic(
                    f"{head.group(1) or ''}{head.group(2)}",
                    part[head.end() - 1 :],
                    depth=depth + 1,
                )
            )
            continue
        column, dot, rest = part.partition(".")
        if not dot or not column:
            raise bad_query(f'"failed to parse logic tree ({text})"', f"bad condition {part!r}")
        children.append(parse_condition(unquote(column), rest, in_logic=True))
    return Logic(operator, tuple(children), negated)


def parse_filters(params: list[tuple[str, str]], skip: set[str]) -> Logic:
    """Every query parameter that is not reserved is a filter; all are ANDed."""
    children: list[Condition | Logic] = []
    for key, value in params:
        if key in RESERVED_PARAMS or key in skip:
            continue
        if key in LOGIC_PARAMS:
            children.append(parse_logic(key, value))
        else:
            # Clients quote names holding reserved characters (``"a,b"=eq.1``).
            column = key if "->" in key else unquote(key)
            children.append(parse_condition(column, value))
    return Logic("AND", tuple(children))


_SELECT_ITEM = re.compile(r'^(?:(?P<alias>[^:"]+|"[^"]+"):(?!:))?(?P<column>\*|[^:()!.]+|"[^"]+")$')
_JSON_STEP = re.compile(r"(->>?)")


def split_json_path(reference: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``payload->a->>b`` -> ("payload", (("->", "a"), ("->>", "b"))); a column alone
    has no steps. Keys stay request text: the SQL layer binds them as parameters."""
    pieces = _JSON_STEP.split(reference)
    column = unquote(pieces[0])
    steps = []
    for operator, key in zip(pieces[1::2], pieces[2::2], strict=True):
        if key == "":
            raise bad_query(f'"failed to parse json path ({reference})"', "empty key")
        steps.append((operator, unquote(key)))
    return column, tuple(steps)


def parse_select(text: str | None) -> list[SelectItem]:
    if text is None or text.strip() == "":
        return [SelectItem("*")]
    items: list[SelectItem] = []
    for part in split_top_level(text):
        part = part.strip()
        if "(" in part:
            raise RestError(
                400,
                "PGRST200",
                "Could not find a relationship in the schema cache",
                details=f"Embedding ({part}) is not supported by supabase_local",
                hint="supabase_local serves single tables only",
            )
        match = _SELECT_ITEM.match(part)
        if not match:
            raise bad_query(
                f'"failed to parse select parameter ({text})"',
                f"unsupported select item {part!r} (casts are not supported)",
            )
        alias = match.group("alias")
        column = match.group("column")
        items.append(
            SelectItem(
                column if "->" in column else unquote(column), unquote(alias) if alias else None
            )
        )
    return items


def parse_order(text: str | None) -> list[OrderTerm]:
    if not text:
        return []
    terms: list[OrderTerm] = []
    for part in split_top_level(text):
        pieces = part.strip().split(".")
        column, modifiers = pieces[0], pieces[1:]
        descending, nulls = False, None
        for modifier in modifiers:
            if modifier in ("asc", "desc"):
                descending = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast"):
                nulls = "FIRST" if modifier == "nullsfirst" else "LAST"
            else:
                raise bad_query(
                    f'"failed to parse order ({text})"',
                    f'unexpected "{modifier}" expecting "asc", "desc", "nullsfirst" or "nullslast"',
                )
        if not column:
            raise bad_query(f'"failed to parse order ({text})"', "empty column name")
        terms.append(OrderTerm(unquote(column), descending, nulls))
    return terms


def parse_non_negative(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    # str.isdigit() also accepts "²" and other scripts' digits, which int() then refuses.
    if not _ASCII_DIGITS.fullmatch(text):
        raise bad_query(
            f'"failed to parse {name} parameter ({text})"', f"{name} must be a non-negative integer"
        )
    return bigint(text)


_RANGE_HEADER = re.compile(r"^(?:items=)?\s*([0-9]+)-([0-9]*)\s*$", re.ASCII)


def parse_range_header(value: str | None) -> tuple[int, int | None] | None:
    """``Range: 0-9`` -> (0, 9); ``Range: 10-`` -> (10, None); unparseable -> ignored."""
    if not value:
        return None
    match = _RANGE_HEADER.match(value)
    if not match:
        return None
    start = bigint(match.group(1))
    end = bigint(match.group(2)) if match.group(2) else None
    if end is not None and end < start:
        return None
    return start, end


def page_window(
    limit: int | None, offset: int | None, header_range: tuple[int, int | None] | None
) -> tuple[int, int | None]:
    """Intersect the query's limit/offset with the Range header: (offset, limit or None)."""
    start = offset or 0
    end = None if limit is None else start + limit - 1
    if header_range is not None:
        range_start, range_end = header_range
        start = max(start, range_start)
        if range_end is not None:
            end = range_end if end is None else min(end, range_end)
    if end is None:
        return start, None
    return start, max(end - start + 1, 0)
