"""The canonical form of an event and its SHA-256 checksum.

The canonical form is the UTF-8 encoding of a JSON object with exactly the keys
``seq, event_type, source, criticality, occurred_at, received_at, payload``, keys sorted,
no insignificant white space (``separators=(",", ":")``), non-ASCII characters written as
themselves. Timestamps are UTC in the form ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The payload is
the normalised payload (see ``events.validation.normalise_payload``), which is exactly what
PostgreSQL's ``jsonb`` gives back, so the checksum can be recomputed from either copy of
the event. ``docs/architecture.md`` documents the same form for other implementations.
"""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any


def format_timestamp(value: datetime) -> str:
    # Spelled out rather than strftime("%Y…"), which does not pad years below 1000.
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond:06d}Z"
    )


def canonical_event_bytes(
    *,
    seq: int,
    event_type: str,
    source: str,
    criticality: str,
    occurred_at: datetime,
    received_at: datetime,
    payload: dict[str, Any],
) -> bytes:
    document = {
        "seq": seq,
        "event_type": event_type,
        "source": source,
        "criticality": criticality,
        "occurred_at": format_timestamp(occurred_at),
        "received_at": format_timestamp(received_at),
        "payload": payload,
    }
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def event_checksum(**fields: Any) -> str:
    return hashlib.sha256(canonical_event_bytes(**fields)).hexdigest()


def event_checksum_of(event: Any) -> str:
    """The checksum an event (or any object with the event's fields) should carry."""
    return event_checksum(
        seq=event.seq,
        event_type=event.event_type,
        source=event.source,
        criticality=event.criticality,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        payload=event.payload,
    )
