"""Configuration of one supabase_local server.

The dataclass is the contract between the server's parts (REST, Realtime, faults):
every part reads its settings from the one frozen ``ServerConfig`` built at start.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from functools import cached_property

from supabase_local.api_keys import (
    PUBLISHABLE_PREFIX,
    SECRET_PREFIX,
    ApiKeys,
    api_key_derive,
)
from supabase_local.auth import Gateway, TokenVerifier
from supabase_local.signing_keys import SigningKey

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_MIGRATIONS_DIR = REPO_ROOT / "supabase" / "migrations"

# The JWT secret the Supabase CLI uses for its local stack; public by design, so it is
# only ever a development default (the server binds loopback only).
DEV_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"

DATABASE_URL_ENV = "SUPABASE_LOCAL_DATABASE_URL"

DB_TX_END_CHOICES = ("commit", "commit-allow-override", "rollback", "rollback-allow-override")


# Realtime quotas per plan (supabase.com/docs/guides/realtime/limits). "unlimited" is the
# default of supabase_local: no quota on connections, messages or joins.
PLAN_QUOTAS: dict[str, dict[str, int | None]] = {
    "free": {"max_concurrent_users": 200, "max_events_per_second": 100,
             "max_joins_per_second": 100, "max_payload_size_in_kb": 256},
    "pro": {"max_concurrent_users": 500, "max_events_per_second": 500,
            "max_joins_per_second": 500, "max_payload_size_in_kb": 3000},
    "pro-no-cap": {"max_concurrent_users": 10_000, "max_events_per_second": 2500,
                   "max_joins_per_second": 2500, "max_payload_size_in_kb": 3000},
    "team": {"max_concurrent_users": 10_000, "max_events_per_second": 2500,
             "max_joins_per_second": 2500, "max_payload_size_in_kb": 3000},
    "unlimited": {"max_concurrent_users": None, "max_events_per_second": None,
                  "max_joins_per_second": None, "max_payload_size_in_kb": 3000},
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class RealtimeLimits:
    """Realtime's limits and the plan's quotas, at real Realtime's defaults (its env
    variable or tenant field in brackets). The one place for Realtime limits; a limit
    reached is refused with Realtime's own reply (``realtime/quotas.py``)."""

    plan: str = "unlimited"
    # Sockets with a joined channel [max_concurrent_users]; the next socket's join is
    # refused "ConnectionRateLimitReached: Too many connected users". None: no quota.
    max_concurrent_users: int | None = None
    # Messages per second, averaged as Realtime does (``rate_tick_ms`` buckets, the last
    # 12) [max_events_per_second]; every delivery to a channel counts, and every
    # broadcast sent. Over it: a channel that receives a message is shut down "Too many
    # messages per second", and database broadcasts are dropped. None: no quota.
    max_events_per_second: int | None = None
    # Channel joins per second, averaged the same way [max_joins_per_second]; over it a
    # join is refused "ClientJoinRateLimitReached: Too many joins per second" and its
    # socket disconnected. None: no quota.
    max_joins_per_second: int | None = None
    # Realtime's RateCounter tick (5 s) and bucket count (12): averages cover one minute.
    rate_tick_ms: int = 5000
    rate_buckets: int = 12
    # Channels joined on one socket [TENANT_MAX_CHANNELS_PER_CLIENT]; the next join is
    # refused "ChannelRateLimitReached: Too many channels".
    max_channels_per_client: int = 100
    # Largest broadcast or presence payload [tenant max_payload_size_in_kb]; a presence
    # track gets 500 bytes more, as Realtime pads it: "Track message size exceeded" and
    # the channel closes. A larger broadcast is not sent.
    max_payload_size_in_kb: int = 3000
    # Presence events per channel per window [CLIENT_PRESENCE_MAX_CALLS,
    # CLIENT_PRESENCE_WINDOW_MS]; beyond: "Client presence rate limit exceeded", closed.
    client_presence_max_calls: int = 5
    client_presence_window_ms: int = 30_000

    @classmethod
    def for_plan(cls, plan: str, **overrides: int | None) -> RealtimeLimits:
        """A plan's quotas; an override that is not None replaces the plan's value."""
        values = {**PLAN_QUOTAS[plan], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(plan=plan, **values)

    @property
    def max_presence_payload_bytes(self) -> int:
        return self.max_payload_size_in_kb * 1000 + 500

    @property
    def max_broadcast_payload_bytes(self) -> int:
        return self.max_payload_size_in_kb * 1000


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    database_url: str
    host: str = "127.0.0.1"
    port: int = 54321
    # The legacy HS256 secret: signs the legacy anon/service_role keys and still verifies
    # HS256 user tokens; None once a project has moved off it (``--jwt-secret off``).
    jwt_secret: str | None = DEV_JWT_SECRET
    # New API keys; when none is given, one of each kind is derived from the JWT secret.
    publishable_keys: tuple[str, ...] = ()
    secret_keys: tuple[str, ...] = ()
    legacy_keys_enabled: bool = True
    # Asymmetric JWT signing keys (ES256 / RS256), published at /auth/v1/.well-known/jwks.json.
    signing_keys: tuple[SigningKey, ...] = ()
    faults_enabled: bool = False
    # Realtime refuses public channels (a project's "Allow public access" turned off).
    private_only: bool = False
    migrations_dir: pathlib.Path = field(default=DEFAULT_MIGRATIONS_DIR)
    # Schemas PostgREST would expose (db-schemas); the first one is the default profile.
    exposed_schemas: tuple[str, ...] = ("public",)
    # Size of the REST connection pool; PostgreSQL here allows 100 connections in all.
    pool_max_size: int = 10
    # PostgREST's db-tx-end: commit (a hosted project's setting: Prefer: tx=... is
    # ignored), commit-allow-override, rollback, rollback-allow-override.
    db_tx_end: str = "commit"
    realtime_limits: RealtimeLimits = field(default_factory=RealtimeLimits)

    @property
    def tx_override_allowed(self) -> bool:
        return self.db_tx_end.endswith("-allow-override")

    @cached_property
    def api_keys(self) -> ApiKeys:
        seed = self.jwt_secret or self.database_url
        return ApiKeys(
            publishable=self.publishable_keys
            or (api_key_derive(prefix=PUBLISHABLE_PREFIX, seed=seed),),
            secret=self.secret_keys or (api_key_derive(prefix=SECRET_PREFIX, seed=seed),),
            legacy_enabled=self.legacy_keys_enabled and self.jwt_secret is not None,
        )

    @cached_property
    def gateway(self) -> Gateway:
        return Gateway(
            api_keys=self.api_keys,
            verifier=TokenVerifier(hs256_secret=self.jwt_secret, signing_keys=self.signing_keys),
        )
