"""The one place that talks to the official Supabase clients.

Everything else asks this module for a client or a token. The service-role key is read
from settings here and never leaves: no template, log line or API answer carries it.
Clients are cached per process (and rebuilt when the settings change, which tests do).
"""

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from supabase import AsyncClient, Client, ClientOptions, acreate_client, create_client
from supabase import PostgrestAPIError as SupabaseAPIError  # re-exported for callers

MONITORING_EVENTS_TABLE = "monitoring_events"
REQUIRED_SETTINGS = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY")


@dataclass(frozen=True)
class SupabaseSettings:
    url: str
    anon_key: str
    service_role_key: str
    jwt_secret: str
    timeout_seconds: float

    def __repr__(self) -> str:  # keep keys out of tracebacks and logs
        return f"SupabaseSettings(url={self.url!r})"


def supabase_settings() -> SupabaseSettings:
    missing = [name for name in REQUIRED_SETTINGS if not getattr(settings, name, "")]
    if missing:
        raise ImproperlyConfigured(
            f"Supabase is not configured: set {', '.join(missing)} "
            "(while make run runs, manage.py in its checkout gets supabase_local's; "
            "see docs/supabase.md)"
        )
    return SupabaseSettings(
        url=settings.SUPABASE_URL.rstrip("/"),
        anon_key=settings.SUPABASE_ANON_KEY,
        service_role_key=settings.SUPABASE_SERVICE_ROLE_KEY,
        jwt_secret=settings.SUPABASE_JWT_SECRET,
        timeout_seconds=settings.SUPABASE_TIMEOUT_SECONDS,
    )


def supabase_configured() -> bool:
    return all(getattr(settings, name, "") for name in REQUIRED_SETTINGS)


_lock = threading.Lock()
_service_clients: dict[tuple[str, str, float], Client] = {}


def service_client() -> Client:
    """A sync client acting as ``service_role`` (server-side writes only)."""
    config = supabase_settings()
    key = (config.url, config.service_role_key, config.timeout_seconds)
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
            client = create_client(config.url, config.service_role_key, options=options)
            _service_clients.clear()
            _service_clients[key] = client
        return client


async def async_client(*, access_token: str | None = None, service: bool = False) -> AsyncClient:
    """An async client for Realtime subscriptions (the prober).

    With ``service`` it acts as service_role; otherwise as anon, or as the user the
    ``access_token`` was minted for.
    """
    config = supabase_settings()
    key = config.service_role_key if service else config.anon_key
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
    """``user_access_token_mint`` with the expiry (epoch seconds) the token carries."""
    config = supabase_settings()
    if not config.jwt_secret:
        raise ImproperlyConfigured("SUPABASE_JWT_SECRET is needed to mint user tokens")
    now = int(time.time())
    payload = {
        "role": "authenticated",
        "sub": str(user_id),
        "aud": "authenticated",
        "iat": now,
        "exp": now + expires_in,
        **claims,
    }
    return jwt.encode(payload, config.jwt_secret, algorithm="HS256"), payload["exp"]


__all__ = [
    "CONTROL_TOPIC",
    "realtime_broadcast",
    "MONITORING_EVENTS_TABLE",
    "SupabaseAPIError",
    "async_client",
    "service_client",
    "supabase_configured",
    "supabase_settings",
    "user_access_token_mint",
]


CONTROL_TOPIC = "monitor-control"


async def realtime_broadcast(*, topic: str, event: str, payload: dict[str, Any]) -> None:
    """Broadcast on a Realtime topic through the REST endpoint (no subscription needed),
    with the official client's ``http_send``, as service_role."""
    client = await async_client(service=True)
    channel = client.channel(topic)
    try:
        await channel.http_send(event, payload, timeout=settings.SUPABASE_TIMEOUT_SECONDS)
    finally:
        await client.remove_channel(channel)
