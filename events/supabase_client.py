"""The one place that talks to the official Supabase clients.

Everything else asks this module for a client or a token. Keys as a project created today
has them: the secret key (``SUPABASE_SECRET_KEY``, ``sb_secret_…``) for the server's own
writes, the publishable key (``SUPABASE_PUBLISHABLE_KEY``) for browsers, and user tokens
signed with the project's imported signing key (``SUPABASE_JWT_SIGNING_KEY``, ES256 or
RS256, ``kid`` in the header). The legacy ``SUPABASE_SERVICE_ROLE_KEY``,
``SUPABASE_ANON_KEY`` and ``SUPABASE_JWT_SECRET`` (HS256) are used only where the new
setting is absent (system check ``events.W002`` says so). The server key and the signing
key are read here and never leave: no template, log line or API answer carries them.
Clients are cached per process (and rebuilt when the settings change, which tests do).
"""

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from supabase import AsyncClient, Client, ClientOptions, acreate_client, create_client
from supabase import PostgrestAPIError as SupabaseAPIError  # re-exported for callers

from events.supabase_keys import JwtSigningKey, SigningKeyError, signing_key_load

MONITORING_EVENTS_TABLE = "monitoring_events"
# Each role a key plays: the new setting first, then the legacy one it replaces.
SERVER_KEY_SETTINGS = ("SUPABASE_SECRET_KEY", "SUPABASE_SERVICE_ROLE_KEY")
BROWSER_KEY_SETTINGS = ("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_ANON_KEY")
NEW_KEY_SETTINGS = (
    "SUPABASE_PUBLISHABLE_KEY",
    "SUPABASE_SECRET_KEY",
    "SUPABASE_JWT_SIGNING_KEY",
    "SUPABASE_JWT_SIGNING_KEY_ID",
)
LEGACY_KEY_SETTINGS = ("SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET")


def _setting(name: str) -> str:
    return (getattr(settings, name, "") or "").strip()


def _first_set(names: tuple[str, ...]) -> str:
    return next((value for value in map(_setting, names) if value), "")


@dataclass(frozen=True)
class SupabaseSettings:
    url: str
    browser_key: str  # the publishable key (or the legacy anon key): public by design
    server_key: str = field(repr=False)  # the secret key (or the legacy service_role key)
    timeout_seconds: float

    def __repr__(self) -> str:  # keep keys out of tracebacks and logs
        return f"SupabaseSettings(url={self.url!r})"


def supabase_settings() -> SupabaseSettings:
    missing = [
        label
        for label, value in (
            ("SUPABASE_URL", _setting("SUPABASE_URL")),
            ("SUPABASE_SECRET_KEY", _first_set(SERVER_KEY_SETTINGS)),
        )
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"Supabase is not configured: set {', '.join(missing)} "
            "(while make run runs, manage.py in its checkout gets supabase_local's; "
            "see docs/supabase.md)"
        )
    return SupabaseSettings(
        url=_setting("SUPABASE_URL").rstrip("/"),
        browser_key=_first_set(BROWSER_KEY_SETTINGS),
        server_key=_first_set(SERVER_KEY_SETTINGS),
        timeout_seconds=settings.SUPABASE_TIMEOUT_SECONDS,
    )


def supabase_configured() -> bool:
    """Whether the server can write to Supabase (a URL and a server key)."""
    return bool(_setting("SUPABASE_URL") and _first_set(SERVER_KEY_SETTINGS))


def user_tokens_available() -> bool:
    """Whether browsers can be sent to Supabase: a browser key, and a way to sign tokens."""
    signer = _setting("SUPABASE_JWT_SIGNING_KEY") or _setting("SUPABASE_JWT_SECRET")
    return supabase_configured() and bool(_first_set(BROWSER_KEY_SETTINGS) and signer)


def browser_key() -> str:
    """The API key a page may hold: the publishable key (or the legacy anon key)."""
    return supabase_settings().browser_key


def user_token_signing_key() -> JwtSigningKey | None:
    """The configured asymmetric signing key, or None when only the legacy secret is set."""
    value = _setting("SUPABASE_JWT_SIGNING_KEY")
    if not value:
        return None
    try:
        return signing_key_load(value, kid=_setting("SUPABASE_JWT_SIGNING_KEY_ID"))
    except SigningKeyError as error:
        raise ImproperlyConfigured(str(error)) from None


_lock = threading.Lock()
_service_clients: dict[tuple[str, str, float], Client] = {}


def service_client() -> Client:
    """A sync client on the server key, acting as ``service_role`` (server-side writes only)."""
    config = supabase_settings()
    key = (config.url, config.server_key, config.timeout_seconds)
    with _lock:
        client = _service_clients.get(key)
        if client is None:
            options = ClientOptions(
                httpx_client=httpx.Client(timeout=config.timeout_seconds),
                # Retries are ours (the drain, the breaker), not the client's.
                postgrest_client_retry=False,
                auto_refresh_token=False,
                persist_session=False,
            )
            client = create_client(config.url, config.server_key, options=options)
            _service_clients.clear()
            _service_clients[key] = client
        return client


async def async_client(*, access_token: str | None = None, service: bool = False) -> AsyncClient:
    """An async client for Realtime subscriptions (the prober).

    With ``service`` it acts as service_role (the server key); otherwise it holds the
    browser's key and acts as anon, or as the user the ``access_token`` was minted for.
    """
    config = supabase_settings()
    key = config.server_key if service else config.browser_key
    client = await acreate_client(config.url, key)
    if access_token is not None:
        await client.realtime.set_auth(access_token)
        client.postgrest.auth(access_token)
    return client


def user_access_token_mint(*, user_id: int | str, expires_in: int = 900, **claims: Any) -> str:
    """A short-lived token for a browser: role ``authenticated``, ``sub`` = the user id."""
    return user_access_token_issue(user_id=user_id, expires_in=expires_in, **claims)[0]


def user_access_token_issue(
    *, user_id: int | str, expires_in: int = 900, **claims: Any
) -> tuple[str, int]:
    """``user_access_token_mint`` with the expiry (epoch seconds) the token carries.

    Signed with ``SUPABASE_JWT_SIGNING_KEY`` (ES256 or RS256 by the key's type, its ``kid``
    in the header) or, on a project still on the legacy secret, HS256 with
    ``SUPABASE_JWT_SECRET``.
    """
    supabase_settings()
    signing_key = user_token_signing_key()
    legacy_secret = _setting("SUPABASE_JWT_SECRET")
    if signing_key is None and not legacy_secret:
        raise ImproperlyConfigured("SUPABASE_JWT_SIGNING_KEY is needed to mint user tokens")
    now = int(time.time())
    payload = {
        "role": "authenticated",
        "sub": str(user_id),
        "aud": "authenticated",
        "iat": now,
        "exp": now + expires_in,
        **claims,
    }
    if signing_key is not None:
        return signing_key.sign(payload), payload["exp"]
    return jwt.encode(payload, legacy_secret, algorithm="HS256"), payload["exp"]


__all__ = [
    "CONTROL_EVENT",
    "CONTROL_TOPIC",
    "EVENTS_EVENT",
    "EVENTS_TOPIC",
    "MONITORING_EVENTS_TABLE",
    "SupabaseAPIError",
    "async_client",
    "realtime_broadcast",
    "browser_key",
    "service_client",
    "supabase_configured",
    "supabase_settings",
    "user_access_token_issue",
    "user_access_token_mint",
    "user_tokens_available",
]


# Private Realtime topics (supabase/migrations/20261129000000_private_broadcast.sql): the
# database broadcasts monitoring_events inserts on EVENTS_TOPIC; the server sends rollout
# control messages on CONTROL_TOPIC. Signed-in users may receive both; only the service
# role may send on either, so a page never acts on a message a browser key could forge.
EVENTS_TOPIC = "monitor:events"
EVENTS_EVENT = "events"
CONTROL_TOPIC = "monitor:control"
CONTROL_EVENT = "control"


async def realtime_broadcast(*, topic: str, event: str, payload: dict[str, Any]) -> None:
    """Broadcast on a private Realtime topic through the REST endpoint (no subscription
    needed), with the official client's ``http_send``, as service_role (the secret key):
    the only role the topics' RLS lets send."""
    client = await async_client(service=True)
    channel = client.channel(topic, {"config": {"private": True}})
    try:
        await channel.http_send(event, payload, timeout=settings.SUPABASE_TIMEOUT_SECONDS)
    finally:
        await client.remove_channel(channel)
