"""API keys and access tokens: HS256 JWTs signed with the server's JWT secret.

Invariants: only HS256 is accepted; the ``role`` claim must be one of the three
Supabase roles; ``exp`` is required and must lie in the future; ``exp``, ``iat`` and
``nbf``, when present, are JSON numbers (PostgREST's rule: a string such as ``"1e10"``
is refused, not coerced). A token that fails any check raises ``AuthError`` whose text
is a message fit for the client.
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


TIME_CLAIMS = ("exp", "iat", "nbf")


class AuthError(Exception):
    """A token was refused; ``str(error)`` is the human message, ``code`` PostgREST's;
    ``malformed_claims`` when a time claim is not a number."""

    def __init__(
        self, message: str, *, code: str = "PGRST301", malformed_claims: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.malformed_claims = malformed_claims


def _is_number(value: Any) -> bool:
    # bool is an int subclass, and JSON true is no time.
    return isinstance(value, int | float) and not isinstance(value, bool)


def verify_token(token: str, *, secret: str) -> Claims:
    try:
        # The signature first; the time claims' types before PyJWT reads them, since it
        # would coerce a numeric string with int().
        unchecked = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                     "verify_aud": False},
        )  # fmt: skip
    except jwt.InvalidSignatureError as error:
        raise AuthError("JWSError JWSInvalidSignature") from error
    except jwt.InvalidTokenError as error:
        raise AuthError(f"Invalid JWT: {error}") from error
    if not isinstance(unchecked, dict):
        raise AuthError("Invalid JWT: the claims are not a JSON object")
    for name in TIME_CLAIMS:
        if name in unchecked and not _is_number(unchecked[name]):
            raise AuthError(
                f"The JWT '{name}' claim must be a number", code="PGRST303", malformed_claims=True
            )
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
