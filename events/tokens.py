"""Producer tokens: ``mon_<prefix>_<secret>``.

The prefix identifies the producer row; only a SHA-256 of the whole token is stored. The
secret has 256 bits of entropy, so a fast hash is enough, and the comparison is constant
time.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_SCHEME = "mon"


@dataclass(frozen=True)
class NewToken:
    prefix: str
    token: str


def token_new() -> NewToken:
    prefix = secrets.token_hex(6)
    return NewToken(prefix=prefix, token=f"{TOKEN_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_prefix(token: str) -> str | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_SCHEME or not parts[1] or not parts[2]:
        return None
    return parts[1]


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)
