"""``manage.py supabase_doctor``: the configured Supabase project, checked end to end.

Each check is a ``DoctorCheck`` (name, passed, what was seen, what to do when it failed),
in the order an operator fixes things: the URL, the keys, the schema, the signing key,
Realtime, the quotas. A check that cannot run because an earlier one failed says so.

The probe: one ``monitor.probe`` event published through ``event_publish`` (the local
log and the Supabase sink, like the prober's every few seconds), written by the sink's
own flush, must arrive by broadcast on the private topic to a user token minted as the
dashboards' are. Being an ordinary synthetic event in both stores, reconciliation finds
it on both sides and flags nothing; dashboards leave synthetic events out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from django.conf import settings

from events import supabase_client

DOCTOR_SOURCE = "supabase_doctor"
PROBE_EVENT_TYPE = "monitor.probe"
EVENTS_TOPIC = getattr(supabase_client, "EVENTS_TOPIC", "monitor:events")
EVENTS_EVENT = getattr(supabase_client, "EVENTS_EVENT", "events")
DOCTOR_USER_ID = "monitor-supabase-doctor"
JOIN_TIMEOUT_SECONDS = 10.0
BROADCAST_TIMEOUT_SECONDS = 10.0
ROUND_TRIP_FIX = (
    "check the signing key above, the migrations (RLS policy and trigger) and Realtime's "
    "settings; then run the doctor again"
)
PUBLIC_FIX = (
    "Realtime settings → turn off 'Allow public access', so only private channels "
    "authorised by RLS can be joined"
)
LEAK_FIX = (
    "SUPABASE_PUBLISHABLE_KEY reads as the service role: it holds a secret key. Give "
    "browsers the publishable key (sb_publishable_…) and rotate the exposed secret key"
)
MIGRATIONS_FIX = (
    "apply the migrations in supabase/migrations: `supabase link --project-ref <ref>` then "
    "`supabase db push` (docs/supabase.md)"
)


@dataclass
class DoctorCheck:
    name: str
    passed: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorReport:
    checks: list[DoctorCheck]
    round_trip_ms: float | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "round_trip_ms": self.round_trip_ms,
            "checks": [check.as_dict() for check in self.checks],
        }


def _headers(key: str, token: str | None = None) -> dict[str, str]:
    headers = {"apikey": key}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _check_url(http: httpx.Client, config) -> DoctorCheck:
    try:
        response = http.get(f"{config.url}/rest/v1/", headers=_headers(config.browser_key))
    except httpx.HTTPError as exc:
        return DoctorCheck(
            "url reachable", False, f"{config.url}: {type(exc).__name__}: {exc}",
            "check SUPABASE_URL (Project Settings → API → Project URL) and the network",
        )  # fmt: skip
    if response.status_code >= 500:
        return DoctorCheck(
            "url reachable", False, f"{config.url}/rest/v1/ answered {response.status_code}",
            "the project is unhealthy or paused: see its dashboard",
        )  # fmt: skip
    return DoctorCheck("url reachable", True, f"{config.url} answered {response.status_code}")


def _schema_report(http: httpx.Client, config) -> tuple[dict[str, Any] | None, str]:
    response = http.post(
        f"{config.url}/rest/v1/rpc/monitor_doctor_schema_report",
        headers={**_headers(config.server_key), "Content-Type": "application/json"},
        json={},
    )
    if response.status_code != 200:
        return None, f"rpc/monitor_doctor_schema_report answered {response.status_code}: " + (
            response.text[:200]
        )
    return response.json(), ""


SCHEMA_ITEMS = (
    ("table", "table public.monitoring_events"),
    ("checksum_constraint", "checksum check constraint"),
    ("rls_monitoring_events", "RLS on public.monitoring_events"),
    ("rls_realtime_messages", "RLS on realtime.messages"),
    ("receive_policy", "policy: authenticated receive monitor:events / monitor:control"),
    ("send_guard_policy", "policy: only the service role sends on them"),
    ("trigger", "trigger monitoring_events_broadcast"),
)


def _check_schema(report: dict[str, Any] | None, error: str) -> DoctorCheck:
    if report is None:
        return DoctorCheck(
            "migrations applied", False,
            f"the schema report is not available ({error})", MIGRATIONS_FIX,
        )  # fmt: skip
    missing = [label for key, label in SCHEMA_ITEMS if not report.get(key)]
    if missing:
        return DoctorCheck(
            "migrations applied", False, "missing: " + "; ".join(missing), MIGRATIONS_FIX
        )
    return DoctorCheck(
        "migrations applied", True, "table, checksum constraint, RLS on both tables, "
        f"receive/send policies, broadcast trigger (payload limit "
        f"{report.get('broadcast_payload_kb')} KB)",
    )  # fmt: skip


def _check_jwks(http: httpx.Client, config) -> DoctorCheck:
    signing_key = supabase_client.user_token_signing_key()
    if signing_key is None:
        return DoctorCheck(
            "signing key published", True,
            "user tokens are HS256 with the legacy JWT secret (no kid; deprecated at the end "
            "of 2026: import a signing key, docs/supabase.md)",
        )  # fmt: skip
    url = f"{config.url}/auth/v1/.well-known/jwks.json"
    try:
        response = http.get(url)
        kids = [key.get("kid") for key in response.json().get("keys", [])]
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return DoctorCheck(
            "signing key published", False, f"{url}: {type(exc).__name__}: {exc}",
            "the project's JWKS must be reachable: check SUPABASE_URL",
        )  # fmt: skip
    if signing_key.kid not in kids:
        return DoctorCheck(
            "signing key published", False,
            f"the JWKS does not publish kid {signing_key.kid!r} ({signing_key.alg}); it lists "
            f"{', '.join(map(str, kids)) or 'nothing'}",
            "import SUPABASE_JWT_SIGNING_KEY into the project (Settings → JWT Keys → import a "
            "private key, docs/supabase.md) or set "
            "SUPABASE_JWT_SIGNING_KEY_ID to the kid the project gave it",
        )  # fmt: skip
    return DoctorCheck(
        "signing key published", True, f"kid {signing_key.kid} ({signing_key.alg}) is in the JWKS"
    )


def _read_as_anon(http: httpx.Client, config, seq: int) -> httpx.Response:
    return http.get(
        f"{config.url}/rest/v1/{supabase_client.MONITORING_EVENTS_TABLE}",
        params={"select": "seq", "seq": f"eq.{seq}"},
        headers=_headers(config.browser_key),
    )


async def _join_and_wait(*, token: str, seq_box: dict, publish) -> tuple[str, float | None]:
    """Join the private topic as a user, publish the probe, wait for its broadcast.

    Returns (problem, round-trip ms): problem "" when the probe arrived."""
    from realtime.types import RealtimeSubscribeStates

    client = await supabase_client.async_client(access_token=token)
    subscribed, ended = asyncio.Event(), asyncio.Event()
    arrived = asyncio.Event()
    errors: list[str] = []
    received: dict[str, float] = {}

    def on_state(state, error=None):
        if state == RealtimeSubscribeStates.SUBSCRIBED:
            subscribed.set()
        else:
            if error is not None:
                errors.append(str(error))
            ended.set()

    def on_broadcast(message: dict) -> None:
        # Every seq is kept with its arrival: the broadcast may come before the publish
        # call has returned the probe's seq.
        body = message.get("payload") or {}
        seqs = [row.get("seq") for row in body.get("events") or [] if isinstance(row, dict)]
        seqs += list(body.get("announced") or [])
        now = time.perf_counter()
        for seq in seqs:
            received.setdefault(seq, now)
        arrived.set()

    channel = client.channel(EVENTS_TOPIC, {"config": {"private": True}})
    channel.on_broadcast(EVENTS_EVENT, on_broadcast)
    try:
        await asyncio.wait_for(channel.subscribe(on_state), JOIN_TIMEOUT_SECONDS)
        waiters = [asyncio.ensure_future(subscribed.wait()), asyncio.ensure_future(ended.wait())]
        await asyncio.wait(
            waiters, timeout=JOIN_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in waiters:
            waiter.cancel()
        if not subscribed.is_set():
            return f"join refused: {'; '.join(errors) or 'no answer'}", None
        started = time.perf_counter()
        await publish()
        deadline = started + BROADCAST_TIMEOUT_SECONDS
        while seq_box.get("seq") not in received:
            arrived.clear()
            left = deadline - time.perf_counter()
            if left <= 0 or "seq" not in seq_box:
                return f"no broadcast of seq {seq_box.get('seq')} within " + (
                    f"{BROADCAST_TIMEOUT_SECONDS:.0f} s"
                ), None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), left)
        return "", (received[seq_box["seq"]] - started) * 1000
    finally:
        try:
            await asyncio.wait_for(client.remove_channel(channel), 5)
            await asyncio.wait_for(client.realtime.close(), 5)
        except Exception:  # noqa: S110 closing is best effort
            pass


async def _public_join_allowed() -> bool:
    """Whether the publishable key alone (no user) may join a public channel."""
    from realtime.types import RealtimeSubscribeStates

    client = await supabase_client.async_client()
    subscribed, ended = asyncio.Event(), asyncio.Event()

    def on_state(state, error=None):
        (subscribed if state == RealtimeSubscribeStates.SUBSCRIBED else ended).set()

    channel = client.channel(f"{EVENTS_TOPIC}:doctor-public")
    try:
        await asyncio.wait_for(channel.subscribe(on_state), JOIN_TIMEOUT_SECONDS)
        for _ in range(int(JOIN_TIMEOUT_SECONDS * 20)):
            if subscribed.is_set() or ended.is_set():
                break
            await asyncio.sleep(0.05)
        return subscribed.is_set()
    finally:
        try:
            await asyncio.wait_for(client.remove_channel(channel), 5)
            await asyncio.wait_for(client.realtime.close(), 5)
        except Exception:
            pass


def _probe_publish() -> tuple[int, str]:
    """Publish the probe event and write it with the sink; (seq, problem)."""
    from events.services import event_publish
    from events.supabase_sink import supabase_sink_flush

    result = event_publish(
        event_type=PROBE_EVENT_TYPE, source=DOCTOR_SOURCE, payload={"doctor": time.time()}
    )
    for _ in range(20):  # everything pending before it goes first, in seq order
        flushed = supabase_sink_flush()
        from events.models import Delivery, DeliveryStatus, Sink

        delivery = Delivery.objects.get(event_id=result.seq, sink=Sink.SUPABASE)
        if delivery.status == DeliveryStatus.SENT:
            return result.seq, ""
        if delivery.status == DeliveryStatus.SKIPPED:
            return result.seq, "monitor.probe is routed away from Supabase (admin: routes)"
        if flushed.outcome == "idle":
            # Nothing to claim: a running stack's own writer (in-process or Celery) has
            # the probe's row in hand. Give it a moment, then look again.
            time.sleep(0.25)
            continue
        if flushed.outcome != "sent":
            return result.seq, f"the sink's write failed ({flushed.outcome}): " + (
                delivery.last_error or "see the breaker's state on /metrics"
            )
    return result.seq, "the sink did not reach the probe after 20 batches"


def _check_quotas(schema: dict[str, Any] | None = None) -> DoctorCheck:
    from events.supabase_plan import PlanError, supabase_plan
    from rollout.quotas import quota_outlook

    try:
        plan = supabase_plan()
    except PlanError as exc:
        return DoctorCheck("plan against the load", False, str(exc), "fix SUPABASE_PLAN")
    outlook = quota_outlook()
    current = outlook.current
    seen = (
        f"plan {plan.name}: stage {current.stage} projects {current.connections} connections, "
        f"{current.messages_per_second:g} messages/s (window {current.window_ms} ms)"
    )
    packed_kb = (schema or {}).get("broadcast_payload_kb")
    if isinstance(packed_kb, int) and packed_kb > plan.payload_kb:
        return DoctorCheck(
            "plan against the load", False,
            f"the trigger packs broadcasts up to {packed_kb} KB, over the plan's "
            f"{plan.payload_kb} KB ({plan.name}): Realtime would refuse the larger ones",
            "update public.monitoring_broadcast_settings set max_payload_kb = "
            f"{plan.payload_kb};  (SQL editor), or fix SUPABASE_PLAN",
        )  # fmt: skip
    if not plan.limited:
        return DoctorCheck(
            "plan against the load", True,
            seen + "; no quota known (SUPABASE_PLAN unset): set it for a real project",
        )  # fmt: skip
    if current.exceeded:
        return DoctorCheck(
            "plan against the load", False, seen + "; " + "; ".join(current.exceeded),
            "upgrade the plan (and set SUPABASE_PLAN), or lower the rollout stage "
            "(`manage.py rollout stage <lower>`)",
        )  # fmt: skip
    following = outlook.following
    if following is not None and following.exceeded:
        seen += f"; the next stage would not fit: {'; '.join(following.exceeded)}"
    return DoctorCheck("plan against the load", True, seen)


def supabase_doctor_run() -> DoctorReport:
    """Run every check against the configured project; see the module docstring."""
    from asgiref.sync import async_to_sync, sync_to_async

    checks: list[DoctorCheck] = []
    report = DoctorReport(checks=checks)
    try:
        config = supabase_client.supabase_settings()
    except Exception as exc:
        checks.append(DoctorCheck("configured", False, str(exc), "set the Supabase settings"))
        return report
    with httpx.Client(timeout=settings.SUPABASE_TIMEOUT_SECONDS) as http:
        checks.append(_check_url(http, config))
        if not checks[-1].passed:
            return report
        schema, error = _schema_report(http, config)
        if schema is None and error.split(" answered ")[-1][:3] in ("401", "403"):
            checks.append(
                DoctorCheck(
                    "secret key",
                    False,
                    f"the secret key was refused ({error})",
                    "SUPABASE_SECRET_KEY must be the project's secret key (sb_secret_…, "
                    "Settings → API Keys), not the publishable one",
                )  # fmt: skip
            )
        checks.append(_check_schema(schema, error))
        checks.append(_check_jwks(http, config))

        seq_box: dict[str, int] = {}
        problems: dict[str, str] = {}

        async def publish() -> None:
            seq, problem = await sync_to_async(_probe_publish)()
            seq_box["seq"] = seq
            if problem:
                problems["write"] = problem

        try:
            token = supabase_client.user_access_token_mint(user_id=DOCTOR_USER_ID)
            problem, round_trip = async_to_sync(_join_and_wait)(
                token=token, seq_box=seq_box, publish=publish
            )
        except Exception as exc:
            problem, round_trip = f"{type(exc).__name__}: {exc}", None
        if "seq" in seq_box:
            write_problem = problems.get("write", "")
            checks.append(
                DoctorCheck(
                    "secret key can write",
                    not write_problem,
                    write_problem or f"the sink wrote probe seq {seq_box['seq']}",
                    "SUPABASE_SECRET_KEY must be the project's secret key (sb_secret_…); "
                    "a publishable key cannot write"
                    if write_problem
                    else "",
                )  # fmt: skip
            )
            if not write_problem:
                anon = _read_as_anon(http, config, seq_box["seq"])
                rows = len(anon.json()) if anon.status_code == 200 else 0
                seen = f"as anon the table answered {anon.status_code} with {rows} row(s)"
                checks.append(
                    DoctorCheck(
                        "publishable key cannot read", not rows, seen, LEAK_FIX if rows else ""
                    )
                )
        report.round_trip_ms = round(round_trip, 1) if round_trip is not None else None
        if problem:
            checks.append(
                DoctorCheck("private broadcast round trip", False, problem, ROUND_TRIP_FIX)
            )
        else:
            seen = f"a user token joined {EVENTS_TOPIC}; the probe arrived in "
            checks.append(
                DoctorCheck(
                    "private broadcast round trip", True, f"{seen}{report.round_trip_ms} ms"
                )
            )
    try:
        public = async_to_sync(_public_join_allowed)()
    except Exception as exc:
        checks.append(
            DoctorCheck("public channels off", False, f"{type(exc).__name__}: {exc}", PUBLIC_FIX)
        )
    else:
        if public:
            seen = "a public channel was joined with the publishable key alone"
            checks.append(DoctorCheck("public channels off", False, seen, PUBLIC_FIX))
        else:
            checks.append(DoctorCheck("public channels off", True, "public channels are refused"))
    checks.append(_check_quotas(schema))
    return report
