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


def _matches(rule: Rule, *, event_type: str, words: list[str], payload: Any) -> bool:
    if rule.match_kind == EXACT:
        return event_type == rule.value
    if rule.match_kind == KEYWORD:
        keyword = rule.value.lower()
        return any(word.startswith(keyword) for word in words)
    if rule.match_kind == GLOB:
        return fnmatch.fnmatchcase(event_type, rule.value)
    if rule.match_kind == PAYLOAD_KEY:
        return isinstance(payload, Mapping) and rule.value in payload
    return False


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
    words = [word for word in _WORD_SEPARATORS.split(event_type.lower()) if word]
    for rule in rules:
        try:
            if _matches(rule, event_type=event_type, words=words, payload=payload):
                return rule.criticality
        except Exception:  # a malformed rule must not stop the feed
            continue
    return DEFAULT_CRITICALITY
