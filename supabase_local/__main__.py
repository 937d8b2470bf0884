"""``python -m supabase_local``: start the server on loopback and print its keys.

Prints ``publishable key: sb_publishable_...``, ``secret key: sb_secret_...``, the legacy
``anon key: ...`` and ``service_role key: ...`` while legacy keys are enabled, one
``signing key: <kid> <alg>`` line per asymmetric signing key and, once the socket is
listening, ``supabase_local ready on http://HOST:PORT`` (test fixtures wait for that line).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import re
import sys
from pathlib import Path

import asyncpg
import uvicorn

from supabase_local import db
from supabase_local.api_keys import PUBLISHABLE_PREFIX, SECRET_PREFIX, ApiKeyError, api_key_check
from supabase_local.app import create_app
from supabase_local.auth import mint_token
from supabase_local.config import (
    DATABASE_URL_ENV,
    DB_TX_END_CHOICES,
    DEV_JWT_SECRET,
    PLAN_QUOTAS,
    RealtimeLimits,
    ServerConfig,
)
from supabase_local.signing_keys import SigningKey, SigningKeyError, signing_key_load

# Printed keys last ten years, like the Supabase CLI's local keys.
KEY_LIFETIME_SECONDS = 10 * 365 * 24 * 3600


_SECRET_PARAMETER = re.compile(r"(?i)\b(apikey|access_token)=[^&\s\"']+")


class RedactSecrets(logging.Filter):
    """Blanks the values of ``apikey=`` and ``access_token=`` in a log line: uvicorn logs
    each WebSocket's path with its query string, where the clients put their key."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_PARAMETER.sub(r"\1=[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _redact_logs() -> None:
    """Install :class:`RedactSecrets` on every handler that prints our or uvicorn's logs."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that says so once its socket accepts connections."""

    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self._ready_line = ready_line

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(self._ready_line, flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m supabase_local",
        description="A Supabase-compatible server (REST + Realtime) for development and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=54321)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        help=f"PostgreSQL URL, superuser (default: ${DATABASE_URL_ENV}); created if missing",
    )
    parser.add_argument(
        "--jwt-secret",
        default=DEV_JWT_SECRET,
        help="legacy HS256 secret of the anon/service_role keys and of HS256 user tokens "
        "(default: the Supabase CLI's public dev secret); 'off': no HS256 at all",
    )
    parser.add_argument(
        "--publishable-key",
        action="append",
        default=[],
        metavar="sb_publishable_...",
        help="a publishable API key (repeatable; default: one derived from the JWT secret)",
    )
    parser.add_argument(
        "--secret-key",
        action="append",
        default=[],
        metavar="sb_secret_...",
        help="a secret API key (repeatable; default: one derived from the JWT secret)",
    )
    parser.add_argument(
        "--legacy-keys",
        choices=("on", "off"),
        default="on",
        help="whether the JWT anon/service_role API keys are accepted (default: on)",
    )
    parser.add_argument(
        "--signing-key",
        action="append",
        default=[],
        type=Path,
        metavar="PEM_FILE",
        help="an ES256 (P-256) or RS256 key, private or public, to verify user tokens by its "
        "kid (repeatable)",
    )
    parser.add_argument(
        "--signing-key-id",
        action="append",
        default=[],
        metavar="KID",
        help="the kid of the --signing-key in the same position (default: its RFC 7638 thumbprint)",
    )
    parser.add_argument(
        "--db-tx-end",
        choices=DB_TX_END_CHOICES,
        default="commit",
        help="PostgREST's db-tx-end (default commit, as on a hosted project: Prefer: tx= is"
        " ignored; *-allow-override honours it)",
    )
    limits = RealtimeLimits()
    parser.add_argument(
        "--plan",
        choices=tuple(PLAN_QUOTAS),
        default="unlimited",
        help="the project's Realtime quotas: connections, messages/s, joins/s, payload size "
        "(default: unlimited); the --max-* options below override one quota",
    )
    for option, what in (
        ("--max-concurrent-users", "sockets with a joined channel"),
        ("--max-events-per-second", "messages per second, every delivery counted"),
        ("--max-joins-per-second", "channel joins per second"),
    ):
        parser.add_argument(option, type=_positive_int, default=None, help=f"{what} (plan's)")
    parser.add_argument(
        "--rate-tick-ms",
        type=_positive_int,
        default=limits.rate_tick_ms,
        help="the per-second rates' averaging tick (Realtime's: 5000; averages keep 12)",
    )
    parser.add_argument(
        "--max-channels-per-client",
        type=_positive_int,
        default=limits.max_channels_per_client,
        help="Realtime channels one socket may join (Realtime's default: 100)",
    )
    parser.add_argument(
        "--max-payload-size-kb",
        type=_positive_int,
        default=None,
        help="largest broadcast or presence payload in kB (plan's: 256 on free, else 3000)",
    )
    parser.add_argument(
        "--client-presence-max-calls",
        type=_positive_int,
        default=limits.client_presence_max_calls,
        help="presence events per channel per window (Realtime's default: 5)",
    )
    parser.add_argument(
        "--client-presence-window-ms",
        type=_positive_int,
        default=limits.client_presence_window_ms,
        help="the window of --client-presence-max-calls (Realtime's default: 30000)",
    )
    parser.add_argument("--faults", action="store_true", help="enable POST /__faults")
    parser.add_argument(
        "--private-only",
        action="store_true",
        help="Realtime refuses public channels, as a project without public access does",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error(f"--database-url or ${DATABASE_URL_ENV} is required")
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        parser.error("supabase_local binds loopback addresses only (it is a dev/test server)")
    if args.jwt_secret == "off":
        args.jwt_secret = None
    elif len(args.jwt_secret) < 32:
        parser.error("--jwt-secret must be at least 32 characters (or 'off')")
    for option, prefix, keys in (
        ("--publishable-key", PUBLISHABLE_PREFIX, args.publishable_key),
        ("--secret-key", SECRET_PREFIX, args.secret_key),
    ):
        for key in keys:
            try:
                api_key_check(key, prefix=prefix)
            except ApiKeyError as error:
                parser.error(f"{option}: {error}")
    if len(args.signing_key_id) > len(args.signing_key):
        parser.error("--signing-key-id names more keys than --signing-key gives")
    try:
        args.signing_keys = _signing_keys(args.signing_key, args.signing_key_id)
    except SigningKeyError as error:
        parser.error(f"--signing-key {error}")
    if args.jwt_secret is None and not args.signing_keys:
        parser.error("--jwt-secret off needs at least one --signing-key to verify tokens")
    return args


def _signing_keys(paths: list[Path], kids: list[str]) -> tuple[SigningKey, ...]:
    keys = tuple(
        signing_key_load(path, kid=kids[index] if index < len(kids) else None)
        for index, path in enumerate(paths)
    )
    seen = [key.kid for key in keys]
    duplicates = sorted({kid for kid in seen if seen.count(kid) > 1})
    if duplicates:
        raise SigningKeyError(f"two keys have the kid {duplicates[0]}")
    return keys


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        jwt_secret=args.jwt_secret,
        publishable_keys=tuple(args.publishable_key),
        secret_keys=tuple(args.secret_key),
        legacy_keys_enabled=args.legacy_keys == "on",
        signing_keys=args.signing_keys,
        faults_enabled=args.faults,
        private_only=args.private_only,
        db_tx_end=args.db_tx_end,
        realtime_limits=RealtimeLimits.for_plan(
            args.plan,
            max_concurrent_users=args.max_concurrent_users,
            max_events_per_second=args.max_events_per_second,
            max_joins_per_second=args.max_joins_per_second,
            max_payload_size_in_kb=args.max_payload_size_kb,
            rate_tick_ms=args.rate_tick_ms,
            max_channels_per_client=args.max_channels_per_client,
            client_presence_max_calls=args.client_presence_max_calls,
            client_presence_window_ms=args.client_presence_window_ms,
        ),
    )
    try:
        # Fail with one clear line rather than a lifespan traceback.
        asyncio.run(db.ensure_database(config.database_url))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        print(f"supabase_local: cannot use PostgreSQL ({error})", file=sys.stderr)
        return 1
    api_keys = config.api_keys
    for key in api_keys.publishable:
        print(f"publishable key: {key}", flush=True)
    for key in api_keys.secret:
        print(f"secret key: {key}", flush=True)
    if api_keys.legacy_enabled:
        for role in ("anon", "service_role"):
            key = mint_token(secret=config.jwt_secret, role=role, expires_in=KEY_LIFETIME_SECONDS)
            print(f"{role} key: {key}", flush=True)
    for signing_key in config.signing_keys:
        print(f"signing key: {signing_key.kid} {signing_key.alg}", flush=True)
    limits = config.realtime_limits
    print(
        f"realtime plan: {limits.plan} (connections {limits.max_concurrent_users or 'unlimited'}"
        f", messages/s {limits.max_events_per_second or 'unlimited'}, joins/s "
        f"{limits.max_joins_per_second or 'unlimited'}, payload {limits.max_payload_size_in_kb}"
        " kB)",
        flush=True,
    )
    uvicorn_config = uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        ws="websockets-sansio",
    )
    _redact_logs()  # after uvicorn.Config, which configures uvicorn's own handlers
    server = _AnnouncingServer(
        uvicorn_config, f"supabase_local ready on http://{config.host}:{config.port}"
    )
    server.run()  # uvicorn picks the loop: uvloop from uvicorn[standard]
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
