"""Configuration of one supabase_local server.

The dataclass is the contract between the server's parts (REST, Realtime, faults):
every part reads its settings from the one frozen ``ServerConfig`` built at start.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_MIGRATIONS_DIR = REPO_ROOT / "supabase" / "migrations"

# The JWT secret the Supabase CLI uses for its local stack; public by design, so it is
# only ever a development default (the server binds loopback only).
DEV_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"

DATABASE_URL_ENV = "SUPABASE_LOCAL_DATABASE_URL"

DB_TX_END_CHOICES = ("commit", "commit-allow-override", "rollback", "rollback-allow-override")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    database_url: str
    host: str = "127.0.0.1"
    port: int = 54321
    jwt_secret: str = DEV_JWT_SECRET
    faults_enabled: bool = False
    migrations_dir: pathlib.Path = field(default=DEFAULT_MIGRATIONS_DIR)
    # Schemas PostgREST would expose (db-schemas); the first one is the default profile.
    exposed_schemas: tuple[str, ...] = ("public",)
    # Size of the REST connection pool; PostgreSQL here allows 100 connections in all.
    pool_max_size: int = 10
    # PostgREST's db-tx-end: commit (a hosted project's setting: Prefer: tx=... is
    # ignored), commit-allow-override, rollback, rollback-allow-override.
    db_tx_end: str = "commit"

    @property
    def tx_override_allowed(self) -> bool:
        return self.db_tx_end.endswith("-allow-override")
