"""The Supabase project's Realtime quotas, from ``SUPABASE_PLAN``.

A real project refuses connections, joins and messages over its plan's quotas
(supabase.com/docs/guides/realtime/limits, ``docs/supabase.md``). Monitor keeps its own
table of them here (it never imports ``supabase_local``, which keeps the server's) so the
rollout can project a stage's load against them and the Supabase sink can keep its
messages/s under a budget of them.

``SUPABASE_PLAN`` is one of:

- ``free``, ``pro``, ``pro-no-cap``, ``team``: the plan's default quotas;
- ``custom:connections=N,messages=N,joins=N,payload_kb=N``: explicit limits (a project
  whose quotas Supabase raised), all four given, whole numbers above zero;
- ``unlimited`` (the default when unset): no quota is known. The dev stack's
  supabase_local runs without quotas too; a real project should always name its plan
  (system check ``events.W003`` says so when SUPABASE_URL is not a loopback address).

A bad value is a system check error (``events.E006``) and ``supabase_plan()`` raises
``PlanError``: nothing runs on a guessed quota.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

UNLIMITED = "unlimited"
CUSTOM_PREFIX = "custom:"
CUSTOM_FIELDS = ("connections", "messages", "joins", "payload_kb")

# supabase.com/docs/guides/realtime/limits (../shared/SUPABASE-2026.md §4).
PLANS: dict[str, dict[str, int]] = {
    "free": {"connections": 200, "messages": 100, "joins": 100, "payload_kb": 256},
    "pro": {"connections": 500, "messages": 500, "joins": 500, "payload_kb": 3000},
    "pro-no-cap": {"connections": 10_000, "messages": 2500, "joins": 2500, "payload_kb": 3000},
    "team": {"connections": 10_000, "messages": 2500, "joins": 2500, "payload_kb": 3000},
}
# Realtime's own payload limit applies even without a quota on the rest.
DEFAULT_PAYLOAD_KB = 3000
_NAME = re.compile(r"^[a-z_]+$")


class PlanError(ValueError):
    """``SUPABASE_PLAN`` cannot be read; the message says what a valid value looks like."""


@dataclass(frozen=True)
class SupabasePlan:
    """A project's Realtime quotas; None: no quota known for that figure."""

    name: str
    connections: int | None  # concurrent connections (sockets with a joined channel)
    messages: int | None  # messages per second, every delivery to a client counted
    joins: int | None  # channel joins per second
    payload_kb: int  # largest broadcast payload

    @property
    def limited(self) -> bool:
        return self.connections is not None or self.messages is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_parse(value: str) -> SupabasePlan:
    """Read a ``SUPABASE_PLAN`` value (see the module docstring); raises ``PlanError``."""
    text = (value or "").strip().lower()
    if not text or text == UNLIMITED:
        return SupabasePlan(
            name=UNLIMITED, connections=None, messages=None, joins=None,
            payload_kb=DEFAULT_PAYLOAD_KB,
        )  # fmt: skip
    if text in PLANS:
        return SupabasePlan(name=text, **PLANS[text])
    if not text.startswith(CUSTOM_PREFIX):
        known = ", ".join([*PLANS, UNLIMITED])
        raise PlanError(
            f"unknown Supabase plan {value!r}: use one of {known}, or "
            "custom:connections=N,messages=N,joins=N,payload_kb=N"
        )
    limits: dict[str, int] = {}
    for part in text[len(CUSTOM_PREFIX) :].split(","):
        name, sep, number = part.strip().partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name or "-"):
            raise PlanError(f"{part.strip()!r} in SUPABASE_PLAN is not name=number")
        if name not in CUSTOM_FIELDS:
            raise PlanError(f"unknown limit {name!r}: the limits are {', '.join(CUSTOM_FIELDS)}")
        if name in limits:
            raise PlanError(f"limit {name!r} is given twice")
        if not number.strip().isdigit() or int(number) < 1:
            raise PlanError(f"limit {name} must be a whole number above zero, not {number!r}")
        limits[name] = int(number)
    missing = [name for name in CUSTOM_FIELDS if name not in limits]
    if missing:
        raise PlanError(f"a custom plan gives all four limits; missing: {', '.join(missing)}")
    return SupabasePlan(name="custom", **limits)


def supabase_plan() -> SupabasePlan:
    """The configured plan (read on each call, so tests overriding settings are seen)."""
    return plan_parse(getattr(settings, "SUPABASE_PLAN", "") or "")


def messages_budget(plan: SupabasePlan | None = None) -> float | None:
    """Messages/s the Supabase sink may cause: ``SUPABASE_MESSAGES_BUDGET_PERCENT`` of the
    plan's quota (None: no quota known, no budget)."""
    plan = plan or supabase_plan()
    if plan.messages is None:
        return None
    percent = float(getattr(settings, "SUPABASE_MESSAGES_BUDGET_PERCENT", 80))
    return plan.messages * percent / 100
