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


@dataclass(frozen=True, kw_only=True)
class RealtimeLimits:
    """Realtime's per-connection and presence limits, at real Realtime's defaults (its
    env variable or tenant field in brackets). The one place for Realtime limits: plan
    quotas add theirs here. A limit reached is refused with Realtime's own reply."""

    # Channels joined on one socket [TENANT_MAX_CHANNELS_PER_CLIENT]; the next join is
    # refused "ChannelRateLimitReached: Too many channels".
    max_channels_per_client: int = 100
    # Largest presence track payload [tenant max_payload_size_in_kb] (+500 bytes, as
    # Realtime pads it); beyond: "Track message size exceeded" and the channel closes.
    max_payload_size_in_kb: int = 3000
    # Presence events per channel per window [CLIENT_PRESENCE_MAX_CALLS,
    # CLIENT_PRESENCE_WINDOW_MS]; beyond: "Client presence rate limit exceeded", closed.
    client_presence_max_calls: int = 5
    client_presence_window_ms: int = 30_000

    @property
    def max_presence_payload_bytes(self) -> int:
        return self.max_payload_size_in_kb * 1000 + 500


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
