"""API keys and access tokens: HS256 JWTs signed with the server's JWT secret.

Invariants: only HS256 is accepted; the ``role`` claim must be one of the three
Supabase roles; ``exp`` is required and must lie in the future. A token that fails any
check raises ``AuthError`` whose text is a message fit for the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

ROLES = ("anon", "authenticated", "service_role")


@dataclass(frozen=True)
class Claims:
    role: str
    sub: str | None
    exp: int | None
    raw: dict[str, Any]


class AuthError(Exception):
    """A token was refused; ``str(error)`` is the human message, ``code`` PostgREST's."""

    def __init__(self, message: str, *, code: str = "PGRST301") -> None:
        super().__init__(message)
        self.code = code


def verify_token(token: str, *, secret: str) -> Claims:
    try:
        raw = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as error:
        raise AuthError("JWT expired", code="PGRST303") from error
    except jwt.MissingRequiredClaimError as error:
        raise AuthError("JWT has no exp claim", code="PGRST303") from error
    except jwt.InvalidSignatureError as error:
        raise AuthError("JWSError JWSInvalidSignature") from error
    except jwt.InvalidTokenError as error:
        raise AuthError(f"Invalid JWT: {error}") from error
    role = raw.get("role")
    if role not in ROLES:
        raise AuthError(f"JWT role must be one of {', '.join(ROLES)}, got {role!r}")
    exp = raw.get("exp")
    sub = raw.get("sub")
    return Claims(role=role, sub=None if sub is None else str(sub), exp=exp, raw=raw)


def mint_token(
    *,
    secret: str,
    role: str,
    sub: str | None = None,
    expires_in: int = 3600,
    **extra: Any,
) -> str:
    """Sign a token like Supabase's: ``iss``, ``role``, ``iat``, ``exp`` and ``sub``."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": "supabase_local", "role": role, "iat": now}
    payload["exp"] = now + expires_in
    if sub is not None:
        payload["sub"] = sub
    payload.update(extra)
    return jwt.encode(payload, secret, algorithm="HS256")
