"""Classification of an event into a criticality.

Rules are tried in this order: exact event-type matches, then keywords and globs (by
priority), then payload keys; an event matching nothing is ``system``. A keyword matches
when a word of the event type (words are separated by ``_ . : -``) starts with it, so
``fail`` matches ``login_failed`` but ``test`` does not match ``latest``.

Classification never raises: a rule that cannot be applied to an input is passed over.
"""

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_CRITICALITY = "system"
_WORD_SEPARATORS = re.compile(r"[_.:\-]+")

EXACT = "exact"
KEYWORD = "keyword"
GLOB = "glob"
PAYLOAD_KEY = "payload_key"
_KIND_ORDER = {EXACT: 0, KEYWORD: 1, GLOB: 1, PAYLOAD_KEY: 2}


@dataclass(frozen=True)
class Rule:
    match_kind: str
    value: str
    criticality: str
    priority: int = 100


def order_rules(rules: Iterable[Rule]) -> list[Rule]:
    indexed = list(enumerate(rules))
    indexed.sort(
        key=lambda item: (_KIND_ORDER.get(item[1].match_kind, 9), item[1].priority, item[0])
    )
    return [rule for _, rule in indexed]


def classify(*, event_type: Any, payload: Any, rules: Iterable[Rule]) -> str:
    """The criticality of an event; ``rules`` must already be in ``order_rules`` order."""
    if not isinstance(event_type, str):
        event_type = ""
    compiled = _compiled(rules)
    # Every rule before the first payload-key rule looks at the event type alone, so what
    # they decide is kept per event type (a producer sends few types, over and over).
    by_type = compiled.by_type
    decided = by_type.get(event_type, _UNKNOWN) if by_type is not None else _UNKNOWN
    if decided is _UNKNOWN:
        decided = _first_match(compiled.type_rules, event_type=event_type, payload=None)
        if by_type is not None:
            if len(by_type) >= _MAX_TYPES_KEPT:
                by_type.clear()
            by_type[event_type] = decided
    if decided is not None:
        return decided
    return (
        _first_match(compiled.payload_rules, event_type=event_type, payload=payload)
        or DEFAULT_CRITICALITY
    )


def _first_match(
    rules: tuple["_CompiledRule", ...], *, event_type: str, payload: Any
) -> str | None:
    words = [word for word in _WORD_SEPARATORS.split(event_type.lower()) if word]
    is_mapping = isinstance(payload, Mapping)
    for kind, value, criticality in rules:
        try:
            if kind == KEYWORD:
                for word in words:
                    if word.startswith(value):
                        return criticality
            elif (
                (kind == EXACT and event_type == value)
                or (kind == GLOB and fnmatch.fnmatchcase(event_type, value))
                or (kind == PAYLOAD_KEY and is_mapping and value in payload)
            ):
                return criticality
        except Exception:  # a malformed rule must not stop the feed
            continue
    return None


_CompiledRule = tuple[str | None, Any, str]
_UNKNOWN = object()
_MAX_TYPES_KEPT = 10_000


@dataclass
class _Compiled:
    type_rules: tuple[_CompiledRule, ...]  # up to the first payload-key rule
    payload_rules: tuple[_CompiledRule, ...]  # from it on
    by_type: dict[str, str | None] | None  # what type_rules decided, per event type


# The last tuple of rules compiled: the routing table hands every publish the same tuple
# until it re-reads the rules, so the rules are compiled once per re-read.
_last_compiled: tuple[tuple[Rule, ...], _Compiled] | None = None


def _compiled(rules: Iterable[Rule]) -> _Compiled:
    """The rules as (kind, value, criticality), keywords lowercased once."""
    global _last_compiled
    last = _last_compiled
    if last is not None and last[0] is rules:
        return last[1]
    flat = tuple(_compile(rule) for rule in rules)
    split = next((i for i, (kind, _, _) in enumerate(flat) if kind == PAYLOAD_KEY), len(flat))
    # Only an immutable tuple (of frozen rules) is safe to keep, with what it decided.
    keep = isinstance(rules, tuple)
    compiled = _Compiled(flat[:split], flat[split:], {} if keep else None)
    if keep:
        _last_compiled = (rules, compiled)
    return compiled


def _compile(rule: Rule) -> _CompiledRule:
    kind, value = rule.match_kind, rule.value
    if kind == KEYWORD:
        try:
            value = value.lower()
        except Exception:  # a malformed keyword never matches
            kind = None
    return (kind, value, rule.criticality)
