"""Validation of producer input into ``EventInput``.

Everything that PostgreSQL would refuse later (NUL characters, lone surrogates, non-finite
numbers) is refused here with the offending field named, so a bad event never gets as far
as a transaction. Payload numbers are normalised to what ``jsonb`` returns, so a payload
read back from either database equals the one that was checksummed.
"""

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings

EVENT_TYPE_PATTERN = re.compile(r"[a-z0-9_.:-]{1,64}")
ALLOWED_FIELDS = frozenset({"event_type", "source", "payload", "occurred_at", "idempotency_key"})
MAX_PAYLOAD_DEPTH = 32
MAX_SOURCE_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 200
# Built once: json.dumps with options builds an encoder per call (stateless, thread-safe).
_COMPACT_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class EventInputError(Exception):
    """Bad producer input. ``status`` is the HTTP status an API should answer."""

    def __init__(self, *, field: str, message: str, status: int = 400, code: str = "invalid"):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status
        self.code = code


@dataclass(frozen=True)
class EventInput:
    event_type: str
    source: str
    payload: dict[str, Any]
    occurred_at: datetime | None = None
    idempotency_key: str | None = None


def _check_text(value: str, *, field: str) -> None:
    if "\x00" in value:
        raise EventInputError(field=field, message="must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EventInputError(field=field, message="must be valid Unicode text") from None


def normalise_payload(value: Any, *, field: str = "payload", depth: int = 0) -> Any:
    """Check a JSON value and return it as PostgreSQL ``jsonb`` will give it back."""
    if depth > MAX_PAYLOAD_DEPTH:
        raise EventInputError(
            field=field, message=f"is nested deeper than {MAX_PAYLOAD_DEPTH} levels"
        )
    if isinstance(value, dict):
        normalised = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EventInputError(field=field, message="object keys must be strings")
            _check_text(key, field=f"{field}.{key!r}")
            normalised[key] = normalise_payload(item, field=f"{field}.{key}", depth=depth + 1)
        return normalised
    if isinstance(value, list):
        return [
            normalise_payload(item, field=f"{field}[{index}]", depth=depth + 1)
            for index, item in enumerate(value)
        ]
    if isinstance(value, str):
        _check_text(value, field=field)
        return value
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EventInputError(field=field, message="numbers must be finite")
        if value == 0:
            return 0.0  # jsonb (numeric) has no negative zero: -0.0 reads back as 0.0
        # jsonb prints exponent-form numbers in full, which reads back as an integer when
        # it has no fractional part (1e16 -> 10000000000000000).
        text = repr(value)
        if "e" in text and value == math.floor(value):
            return int(Decimal(text))
        return value
    raise EventInputError(field=field, message=f"unsupported JSON value {type(value).__name__}")


def _parse_occurred_at(value: Any, *, field: str) -> datetime:
    if not isinstance(value, str):
        raise EventInputError(field=field, message="must be an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EventInputError(field=field, message="must be an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise EventInputError(field=field, message="must include a UTC offset (e.g. Z)")
    try:
        # In UTC: the checksum writes it so, and PostgreSQL refuses an offset with a
        # fraction of a second (+05:30:15.5), which Python accepts.
        return parsed.astimezone(UTC)
    except OverflowError:
        raise EventInputError(
            field=field, message="must fall within the years 1-9999 in UTC"
        ) from None


def parse_event_input(data: Any, *, field_prefix: str = "") -> EventInput:
    def name(field: str) -> str:
        return f"{field_prefix}{field}"

    if not isinstance(data, dict):
        raise EventInputError(field=field_prefix.rstrip(".") or "body", message="must be an object")
    unknown = sorted(set(data) - ALLOWED_FIELDS)
    if unknown:
        raise EventInputError(field=name(unknown[0]), message="is not a known field")

    event_type = data.get("event_type")
    if not isinstance(event_type, str) or not EVENT_TYPE_PATTERN.fullmatch(event_type):
        raise EventInputError(
            field=name("event_type"), message="must be 1-64 characters of a-z 0-9 _ . : -"
        )

    source = data.get("source")
    if not isinstance(source, str) or not (1 <= len(source) <= MAX_SOURCE_LENGTH):
        raise EventInputError(
            field=name("source"), message=f"must be a string of 1-{MAX_SOURCE_LENGTH} characters"
        )
    _check_text(source, field=name("source"))

    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        raise EventInputError(field=name("payload"), message="must be a JSON object")
    payload = normalise_payload(payload, field=name("payload"))
    encoded_size = len(_COMPACT_ENCODER.encode(payload).encode("utf-8"))
    if encoded_size > settings.EVENTS_MAX_PAYLOAD_BYTES:
        raise EventInputError(
            field=name("payload"),
            message=f"is {encoded_size} bytes encoded; the limit is "
            f"{settings.EVENTS_MAX_PAYLOAD_BYTES}",
            status=413,
            code="payload_too_large",
        )

    occurred_at = None
    if data.get("occurred_at") is not None:
        occurred_at = _parse_occurred_at(data["occurred_at"], field=name("occurred_at"))

    idempotency_key = data.get("idempotency_key")
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not (
            1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
        ):
            raise EventInputError(
                field=name("idempotency_key"),
                message=f"must be a string of 1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters",
            )
        _check_text(idempotency_key, field=name("idempotency_key"))

    return EventInput(
        event_type=event_type,
        source=source,
        payload=payload,
        occurred_at=occurred_at,
        idempotency_key=idempotency_key,
    )
