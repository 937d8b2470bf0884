"""A stage's load on Supabase Realtime, projected from what is measured, against the plan.

What is measured:

- the **open dashboards** and their users, per transport (``rollout/open_pages.py``: every
  page's telemetry heartbeat), plus the prober's one Supabase connection while it runs;
- the **event rate** routed to Supabase and the upserts that carried it, from the local
  log (``events.selectors.supabase_write_rate``);
- declared, not measured: ``SUPABASE_EXTRA_SUBSCRIBERS``, Realtime clients of the events
  topic that send no telemetry (another service, a load test), added to every stage.

What is projected, for a stage (its percentage): the Supabase **connections** (the open
pages of the users that stage puts on Supabase, each user's own choice first as in
``rollout.selectors.transport_for_user_id``, plus the prober), and the **messages/s**.
With the statement-level trigger of ``supabase/migrations`` one upsert goes out as one
broadcast (more only when its rows exceed the payload limit), and Realtime counts one
message per client it reaches plus the send itself: messages/s ≈ statements/s ×
(subscribers + 1). The sink coalesces (``events/supabase_coalescing.py``), so
statements/s = the event rate while that fits the budget, else one per window.

A raise of the stage is refused (``stage_quota_refusal``) when the projection exceeds a
quota of the plan: the connections, or the messages/s even with the longest window the
sink may use. ``--force`` (command) or the panel's "exceed the quota" override it with a
reason, audited. Lowering the stage and the kill switch are never refused. With no quota
known (``SUPABASE_PLAN`` unset: ``unlimited``) nothing is refused, and the panel says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from events.supabase_plan import SupabasePlan, messages_budget, supabase_plan
from rollout.buckets import in_percentage
from rollout.models import (
    STAGE_PERCENT,
    SUPABASE_REALTIME_FLAG,
    HealthSample,
    RolloutState,
    SampleOrigin,
    Transport,
    TransportChoice,
    TransportPreference,
)
from rollout.open_pages import open_pages

# What one event's row weighs in a broadcast, for the messages one statement needs when
# many rows share it: the wire row with its payload is rarely above this.
ROW_BYTES_ESTIMATE = 1000
PROBER_ACTIVE_SECONDS = 60


@dataclass(frozen=True)
class MeasuredLoad:
    open_pages: dict[str, int] | None  # per transport; None: unknown (Redis down)
    prober_on_supabase: bool
    events_per_second: float  # routed to Supabase, over the last minute
    statements_per_second: float  # upserts that carried them, over the last minute
    users: dict[int, int] = field(default_factory=dict, repr=False)  # pages per user
    # Realtime clients of monitor:events that send no telemetry (other services, load
    # tests): SUPABASE_EXTRA_SUBSCRIBERS, counted in every projection.
    extra_subscribers: int = 0

    def as_dict(self) -> dict[str, Any]:
        figures = asdict(self)
        figures.pop("users")
        return figures


def coalescing_window_ms(
    *, subscribers: int, events_per_second: float, plan: SupabasePlan | None = None
) -> int:
    """The window the sink uses so that statements/s × (subscribers + 1) stays under the
    budget: 0 (one statement per event) while that holds without one, else the interval
    between statements the budget allows, at most ``SUPABASE_COALESCE_MAX_WINDOW_MS``."""
    budget = messages_budget(plan)
    if budget is None or subscribers <= 0 or events_per_second <= 0:
        return 0
    fan_out = subscribers + 1
    if events_per_second * fan_out <= budget:
        return 0
    window = math.ceil(1000 * fan_out / budget)
    return min(window, int(settings.SUPABASE_COALESCE_MAX_WINDOW_MS))


def statements_per_second(*, events_per_second: float, window_ms: int) -> float:
    if window_ms <= 0:
        return events_per_second
    return min(events_per_second, 1000 / window_ms)


def messages_per_statement(*, events_per_second: float, window_ms: int, payload_kb: int) -> int:
    rows = max(1.0, events_per_second * window_ms / 1000)
    return max(1, math.ceil(rows * ROW_BYTES_ESTIMATE / (payload_kb * 1000)))


@dataclass(frozen=True)
class StageProjection:
    stage: str
    percent: int
    connections: int  # Supabase sockets: open pages on Supabase at this stage + the prober
    pages_moved: int  # pages whose transport this stage changes from now (their joins)
    events_per_second: float
    messages_uncoalesced: float  # one statement per event
    window_ms: int  # the window the sink would use at this load
    messages_per_second: float  # with that window
    messages_at_max_window: float  # the least the sink can do
    plan: dict[str, Any]
    budget: float | None
    exceeded: list[str] = field(default_factory=list)  # one sentence per quota exceeded

    @property
    def headroom(self) -> dict[str, float | None]:
        """Quota minus projection (negative: over); None where the plan sets none."""
        connections = self.plan["connections"]
        messages = self.plan["messages"]
        return {
            "connections": None if connections is None else connections - self.connections,
            "messages_per_second": None
            if messages is None
            else round(messages - self.messages_per_second, 1),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "headroom": self.headroom}


def measured_load(*, now=None) -> MeasuredLoad:
    from events.selectors import supabase_write_rate

    now = now or timezone.now()
    pages = open_pages()
    rate = supabase_write_rate(now=now)
    prober = HealthSample.objects.filter(
        origin=SampleOrigin.PROBER, transport=Transport.SUPABASE,
        at__gt=now - timedelta(seconds=PROBER_ACTIVE_SECONDS),
    ).exists()  # fmt: skip
    return MeasuredLoad(
        open_pages=None if pages is None else dict(pages.by_transport),
        prober_on_supabase=prober,
        events_per_second=rate.events_per_second,
        statements_per_second=rate.statements_per_second,
        users=dict(pages.users()) if pages is not None else {},
        extra_subscribers=int(getattr(settings, "SUPABASE_EXTRA_SUBSCRIBERS", 0) or 0),
    )


def _on_supabase(*, user_ids, percent: float, killed: bool) -> set[int]:
    if killed:
        return set()
    choices = dict(
        TransportPreference.objects.filter(user_id__in=list(user_ids)).values_list(
            "user_id", "choice"
        )
    )
    chosen = set()
    for user_id in user_ids:
        choice = choices.get(user_id, TransportChoice.AUTO)
        bucketed = choice == TransportChoice.AUTO and in_percentage(
            flag_name=SUPABASE_REALTIME_FLAG, user_id=user_id, percent=percent
        )
        if choice == TransportChoice.SUPABASE or bucketed:
            chosen.add(user_id)
    return chosen


def stage_project(
    *, stage: str, load: MeasuredLoad, state: RolloutState, plan: SupabasePlan | None = None
) -> StageProjection:
    """The Supabase load of ``stage`` (as if it were in force, kill switch off) at the
    measured load, against the plan."""
    plan = plan or supabase_plan()
    percent = STAGE_PERCENT[stage]
    users = load.users
    at_stage = _on_supabase(user_ids=users, percent=percent, killed=False)
    now_on = _on_supabase(user_ids=users, percent=STAGE_PERCENT[state.stage], killed=state.killed)
    connections = (
        sum(users[u] for u in at_stage)
        + (1 if load.prober_on_supabase else 0)
        + load.extra_subscribers
    )
    moved = sum(users[u] for u in at_stage ^ now_on)
    fan_out = connections + 1
    rate = load.events_per_second
    window = coalescing_window_ms(subscribers=connections, events_per_second=rate, plan=plan)
    per_statement = messages_per_statement(
        events_per_second=rate, window_ms=window, payload_kb=plan.payload_kb
    )
    messages = statements_per_second(events_per_second=rate, window_ms=window) * fan_out
    max_window = int(settings.SUPABASE_COALESCE_MAX_WINDOW_MS)
    least = statements_per_second(events_per_second=rate, window_ms=max_window) * fan_out
    exceeded = []
    if plan.connections is not None and connections > plan.connections:
        exceeded.append(
            f"stage {stage} would open ~{connections} Supabase connections, over the plan's "
            f"{plan.connections} ({plan.name})"
        )
    if plan.messages is not None and least > plan.messages:
        exceeded.append(
            f"stage {stage} would cause ~{least:.0f} Supabase messages/s even with the "
            f"longest coalescing window ({max_window} ms), over the plan's {plan.messages}/s "
            f"({plan.name})"
        )
    if plan.joins is not None and moved > plan.joins * 60:
        # Pages re-join when told to switch; beyond a minute of the join quota they are
        # refused for longer than a page's backoff hides.
        exceeded.append(
            f"stage {stage} would move ~{moved} pages at once, over a minute of the plan's "
            f"{plan.joins} joins/s ({plan.name})"
        )
    return StageProjection(
        stage=stage, percent=percent, connections=connections, pages_moved=moved,
        events_per_second=round(rate, 3),
        messages_uncoalesced=round(rate * fan_out * per_statement, 1),
        window_ms=window,
        messages_per_second=round(messages * per_statement, 1),
        messages_at_max_window=round(least, 1),
        plan=plan.as_dict(), budget=messages_budget(plan), exceeded=exceeded,
    )  # fmt: skip


def next_stage(stage: str) -> str | None:
    stages = list(STAGE_PERCENT)
    index = stages.index(stage)
    return stages[index + 1] if index + 1 < len(stages) else None


@dataclass(frozen=True)
class QuotaOutlook:
    """What the panel and ``rollout status`` show: the plan, the load, this stage and the
    next one."""

    plan: SupabasePlan
    load: MeasuredLoad
    current: StageProjection
    following: StageProjection | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.as_dict(),
            "budget_messages_per_second": messages_budget(self.plan),
            "load": self.load.as_dict(),
            "current": self.current.as_dict(),
            "next": self.following.as_dict() if self.following else None,
        }


def quota_outlook(*, state: RolloutState | None = None) -> QuotaOutlook:
    from rollout.selectors import rollout_state_get

    state = state or rollout_state_get()
    plan = supabase_plan()
    load = measured_load()
    following = next_stage(state.stage)
    return QuotaOutlook(
        plan=plan,
        load=load,
        current=stage_project(stage=state.stage, load=load, state=state, plan=plan),
        following=stage_project(stage=following, load=load, state=state, plan=plan)
        if following
        else None,
    )


def stage_quota_refusal(*, stage: str, state: RolloutState) -> StageProjection | None:
    """The projection of ``stage`` when it exceeds a quota of the plan (None: it fits, or
    the plan sets no quota)."""
    plan = supabase_plan()
    if not plan.limited and plan.joins is None:
        return None
    projection = stage_project(stage=stage, load=measured_load(), state=state, plan=plan)
    return projection if projection.exceeded else None
