"""Who is calling: API keys and access tokens, checked as Supabase's gateway and services do.

``TokenVerifier`` checks a JWT: HS256 with the legacy JWT secret (while one is
configured), or ES256 / RS256 with the signing key its ``kid`` names, the algorithm
pinned by that key (so a token cannot pick another algorithm than its key's: no ``none``,
no HS256 signed with a public key). Claims: ``role`` is one of the three Supabase roles;
``exp`` is required and lies in the future; ``exp``, ``iat`` and ``nbf``, when present,
are JSON numbers (PostgREST's rule: a string such as ``"1e10"`` is refused, not coerced),
checked once the signature holds. ``Gateway`` decides the claims of a request from its
``apikey`` and ``Authorization`` (``supabase_local/api_keys.py`` maps key kinds to roles).
A refusal raises ``AuthError`` whose text is a message fit for the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from supabase_local.api_keys import ApiKeys, is_api_key, is_browser
from supabase_local.signing_keys import ASYMMETRIC_ALGORITHMS, SigningKey

ROLES = ("anon", "authenticated", "service_role")
NUMERIC_CLAIMS = ("exp", "iat", "nbf")
NO_SUITABLE_KEY = "No suitable key or wrong key type"


@dataclass(frozen=True)
class Claims:
    role: str
    sub: str | None
    exp: int | float | None
    raw: dict[str, Any]


class AuthError(Exception):
    """A key or token was refused; ``str(error)`` is the message, ``code`` PostgREST's;
    ``malformed_claims`` when a time claim is not a number."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "PGRST301",
        hint: str | None = None,
        malformed_claims: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint
        self.malformed_claims = malformed_claims


def _check_numeric_claims(raw: Any) -> None:
    if not isinstance(raw, dict):
        raise AuthError("Invalid JWT: the claims are not a JSON object")
    for name in NUMERIC_CLAIMS:
        value = raw.get(name)
        # bool is an int subclass, and JSON true is no time.
        if name in raw and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise AuthError(
                f"The JWT '{name}' claim must be a number", code="PGRST303", malformed_claims=True
            )


def _claims(raw: dict[str, Any]) -> Claims:
    role = raw.get("role")
    if role not in ROLES:
        raise AuthError(f"JWT role must be one of {', '.join(ROLES)}, got {role!r}")
    sub = raw.get("sub")
    return Claims(role=role, sub=None if sub is None else str(sub), exp=raw.get("exp"), raw=raw)


@dataclass(frozen=True)
class TokenVerifier:
    hs256_secret: str | None
    signing_keys: tuple[SigningKey, ...] = ()
    _by_kid: dict[str, SigningKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_kid", {key.kid: key for key in self.signing_keys})

    def _key_for(self, header: dict[str, Any]) -> tuple[str, Any]:
        alg, kid = header.get("alg"), header.get("kid")
        if alg == "HS256" and self.hs256_secret is not None and kid not in self._by_kid:
            return alg, self.hs256_secret
        if alg in ASYMMETRIC_ALGORITHMS and isinstance(kid, str):
            signing_key = self._by_kid.get(kid)
            if signing_key is not None and signing_key.alg == alg:
                return alg, signing_key.public_key
        raise AuthError(NO_SUITABLE_KEY)

    def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise AuthError(f"Invalid JWT: {error}") from error
        alg, key = self._key_for(header)
        try:
            # The signature first, then the time claims' types before PyJWT reads them:
            # it would coerce "exp": "9999999999" with int().
            unchecked = jwt.decode(
                token, key, algorithms=[alg],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                         "verify_aud": False},
            )  # fmt: skip
        except jwt.InvalidSignatureError as error:
            raise AuthError("JWSError JWSInvalidSignature") from error
        except jwt.InvalidTokenError as error:
            raise AuthError(f"Invalid JWT: {error}") from error
        _check_numeric_claims(unchecked)
        try:
            raw = jwt.decode(
                token, key, algorithms=[alg], options={"require": ["exp"], "verify_aud": False}
            )
        except jwt.ExpiredSignatureError as error:
            raise AuthError("JWT expired", code="PGRST303") from error
        except jwt.MissingRequiredClaimError as error:
            raise AuthError("JWT has no exp claim", code="PGRST303") from error
        except jwt.InvalidSignatureError as error:
            raise AuthError("JWSError JWSInvalidSignature") from error
        except jwt.InvalidTokenError as error:
            raise AuthError(f"Invalid JWT: {error}") from error
        return _claims(raw)


def verify_token(token: str, *, secret: str) -> Claims:
    """Verify an HS256 token with ``secret`` (the legacy JWT secret)."""
    return TokenVerifier(hs256_secret=secret).verify(token)


def mint_token(
    *,
    role: str,
    secret: str | None = None,
    signing_key: SigningKey | None = None,
    sub: str | None = None,
    expires_in: int = 3600,
    **extra: Any,
) -> str:
    """Sign a token like Supabase Auth's (``iss``, ``role``, ``iat``, ``exp``, ``sub``): with a
    signing key (its ``kid`` in the header) or, the legacy way, with the HS256 secret."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": "supabase_local", "role": role, "iat": now}
    payload["exp"] = now + expires_in
    if sub is not None:
        payload["sub"] = sub
    payload.update(extra)
    if signing_key is not None:
        return jwt.encode(
            payload,
            signing_key.private_pem(),
            algorithm=signing_key.alg,
            headers={"kid": signing_key.kid},
        )
    if secret is None:
        raise ValueError("mint_token needs a signing_key or a secret")
    return jwt.encode(payload, secret, algorithm="HS256")


# --- The gateway --------------------------------------------------------------------------

INVALID_API_KEY_HINT = "Double check your Supabase `anon` or `service_role` API key."


@dataclass(frozen=True)
class Gateway:
    """What Supabase's API gateway decides before a request reaches PostgREST or Realtime."""

    api_keys: ApiKeys
    verifier: TokenVerifier

    def key_claims(self, apikey: str, *, user_agent: str | None = None) -> Claims:
        """The claims an API key alone gives: a new key's role, or a legacy key's JWT."""
        if is_api_key(apikey):
            role = self.api_keys.role_of(apikey)
            if role is None:
                raise AuthError("Invalid API key", hint=INVALID_API_KEY_HINT)
            if role == "service_role" and is_browser(user_agent):
                raise AuthError(
                    "Forbidden use of secret API key in browser",
                    hint="Secret API keys can only be used in a protected environment and "
                    "should never be used in a browser.",
                )
            return Claims(role=role, sub=None, exp=None, raw={"role": role})
        if not self.api_keys.legacy_enabled:
            raise AuthError(
                "Legacy API keys are disabled",
                hint="Your legacy API keys (anon, service_role) were disabled. Use the "
                "publishable and secret API keys instead.",
            )
        try:
            return self.verifier.verify(apikey)
        except AuthError as error:
            raise AuthError("Invalid API key", hint=INVALID_API_KEY_HINT) from error

    def authenticate(
        self, *, apikey: str | None, bearer: str | None, user_agent: str | None = None
    ) -> Claims:
        """The claims of a request: the user's token when one rides in ``Authorization``,
        else the API key's."""
        if apikey is None:
            if bearer is None or is_api_key(bearer):
                raise AuthError(
                    "No API key found in request",
                    hint="No `apikey` request header or url param was found.",
                )
            return self.verifier.verify(bearer)  # PostgREST alone accepts a bare token
        key_claims = self.key_claims(apikey, user_agent=user_agent)
        if bearer is None or bearer == apikey:
            return key_claims
        if is_api_key(bearer):
            raise AuthError("Invalid JWT: an API key in Authorization must equal the apikey header")
        return self.verifier.verify(bearer)

    def token_claims(self, token: str, *, apikey: str | None = None) -> Claims:
        """An access token given later (Realtime's join or ``access_token``): an API key
        stands for itself, anything else must be a valid JWT."""
        if is_api_key(token) or (apikey is not None and token == apikey):
            return self.key_claims(token)
        return self.verifier.verify(token)
