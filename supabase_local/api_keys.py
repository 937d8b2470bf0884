"""API keys as a Supabase project issues them at the end of 2026.

- ``sb_publishable_…`` keys are for browsers and apps: the request runs as ``anon``
  (or as the signed-in user whose token rides in ``Authorization``).
- ``sb_secret_…`` keys are for servers: the request runs as ``service_role``. A request
  from a browser (its ``User-Agent``) carrying one is refused with 401, as Supabase does.
- The legacy ``anon`` / ``service_role`` keys are long-lived HS256 JWTs. They work beside
  the new keys until they are disabled (``--legacy-keys off``), after which using one as
  an API key answers 401 "Legacy API keys are disabled".

The new keys are opaque strings, never JWTs. When no key is given at start, one of each
kind is derived from the JWT secret, so a development stack keeps the same keys from one
start to the next without configuring any.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

PUBLISHABLE_PREFIX = "sb_publishable_"
SECRET_PREFIX = "sb_secret_"
KEY_PREFIXES = (PUBLISHABLE_PREFIX, SECRET_PREFIX)
ROLE_OF_PREFIX = {PUBLISHABLE_PREFIX: "anon", SECRET_PREFIX: "service_role"}
# Every browser engine's User-Agent starts with this (curl, Python and Node's do not).
BROWSER_USER_AGENT_PREFIX = "Mozilla/"


class ApiKeyError(ValueError):
    pass


def is_api_key(value: str | None) -> bool:
    """Whether ``value`` has the form of a new (opaque) API key."""
    return bool(value) and value.startswith(KEY_PREFIXES)  # type: ignore[union-attr]


def api_key_derive(*, prefix: str, seed: str) -> str:
    """A stable key of the given kind from a seed (the JWT secret), for development."""
    digest = hmac.new(seed.encode("utf-8"), prefix.encode("ascii"), hashlib.sha256).digest()
    body = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii").replace("-", "x")
    return f"{prefix}{body[:22].replace('_', 'y')}_{body[22:30].replace('_', 'y')}"


def api_key_check(value: str, *, prefix: str) -> str:
    """A key given at start: its prefix right, and long enough to be a secret."""
    if not value.startswith(prefix) or len(value) < len(prefix) + 16:
        raise ApiKeyError(f"must start with {prefix} and have at least 16 more characters")
    if not value.isascii() or not value.replace("_", "").replace("-", "").isalnum():
        raise ApiKeyError("may hold only letters, digits, '_' and '-'")
    return value


def is_browser(user_agent: str | None) -> bool:
    return bool(user_agent) and user_agent.startswith(BROWSER_USER_AGENT_PREFIX)  # type: ignore[union-attr]


@dataclass(frozen=True)
class ApiKeys:
    publishable: tuple[str, ...] = ()
    secret: tuple[str, ...] = ()
    legacy_enabled: bool = True

    def role_of(self, key: str) -> str | None:
        """``anon`` / ``service_role`` for a known new key, else None (compared in constant
        time, so a caller cannot find a key one character at a time)."""
        for role, keys in (("anon", self.publishable), ("service_role", self.secret)):
            for known in keys:
                if hmac.compare_digest(known.encode("utf-8"), key.encode("utf-8")):
                    return role
        return None
