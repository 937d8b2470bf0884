"""The canonical form of an event and its SHA-256 checksum.

The canonical form is the UTF-8 encoding of a JSON object with exactly the keys
``seq, event_type, source, criticality, occurred_at, received_at, payload``, keys sorted
(at every level), no insignificant white space, non-ASCII characters written as
themselves. Timestamps are UTC in the form ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The payload is
the normalised payload (see ``events.validation.normalise_payload``), and every number in
it is written exactly as PostgreSQL's ``jsonb`` prints it: plain decimal notation with no
exponent (``1e-05`` is ``0.00001``) and no negative zero. So the checksum can be recomputed
from either copy of the event by anyone who reads ``payload::text``, keeps each number's
text as it is, and sorts the keys. ``docs/architecture.md`` documents the same form for
other implementations; ``tests/events/test_checksums.py`` holds it against PostgreSQL.
"""

import hashlib
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

# The last timestamp written and its text: a batch's events share their received_at (and
# mostly their occurred_at), so most calls are for the instant just written.
_last_timestamp: tuple[datetime, str] | None = None


def format_timestamp(value: datetime) -> str:
    global _last_timestamp
    last = _last_timestamp
    # Equal instants have the same UTC text (an aware and a naive value are never equal).
    # Two values of one zone compare equal by wall time, fold ignored (01:30 on the night
    # clocks go back is two instants): the offset must match too.
    if last is not None and last[0] == value and last[0].utcoffset() == value.utcoffset():
        return last[1]
    # Spelled out rather than strftime("%Y…"), which does not pad years below 1000.
    v = value.astimezone(UTC)
    text = (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond:06d}Z"
    )
    _last_timestamp = (value, text)
    return text


# json.dumps with these options builds an encoder per call, a third of its time on an
# event's few fields; one encoder, built once, is stateless and safe across threads.
_PLAIN_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
    if _plain(payload):
        # The common case, at C speed: json.dumps writes exactly the canonical form when
        # every number prints the same both ways (no exponent, no negative zero, no Decimal).
        return _PLAIN_ENCODER.encode(document).encode("utf-8")
    parts: list[str] = []
    _write_canonical(document, parts)
    return "".join(parts).encode("utf-8")


def _plain(value: Any) -> bool:
    """Whether ``json.dumps`` prints ``value`` as ``_write_canonical`` does.

    True for strings, ints, booleans, null, finite floats whose ``repr`` has no exponent and
    is not ``-0.0``, and objects (string keys only) and arrays of those. Anything else takes
    the canonical writer, which also raises on what has no canonical form.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        text = repr(value)
        return "e" not in text and text not in ("-0.0", "nan", "inf", "-inf")
    if kind is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    return False


def canonical_number(value: int | float | Decimal) -> str:
    """A JSON number as PostgreSQL's ``jsonb`` prints it (its ``numeric`` output).

    A float is stored as Python's shortest round-trip text (``repr``), which ``numeric``
    reads with as many fraction digits as that text denotes and prints in plain decimal
    notation: ``1e-05`` → ``0.00001``, ``1.5e+16`` → ``15000000000000000``, ``2.5`` and
    ``100.0`` as they are. ``numeric`` has no negative zero, so ``-0.0`` is ``0.0``.
    """
    if isinstance(value, bool):
        raise TypeError("a bool is not a number here")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no JSON form")
        value = Decimal(repr(value))
    elif not value.is_finite():
        raise ValueError(f"{value!r} has no JSON form")
    return format(value.copy_abs() if value.is_zero() else value, "f")


def _write_canonical(value: Any, parts: list[str]) -> None:
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, str):
        parts.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int | float | Decimal):
        parts.append(canonical_number(value))
    elif isinstance(value, dict):
        parts.append("{")
        for index, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            if index:
                parts.append(",")
            parts.append(json.dumps(key, ensure_ascii=False))
            parts.append(":")
            _write_canonical(value[key], parts)
        parts.append("}")
    elif isinstance(value, list | tuple):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write_canonical(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"{type(value).__name__} has no canonical JSON form")


def event_checksum(**fields: Any) -> str:
    return hashlib.sha256(canonical_event_bytes(**fields)).hexdigest()


def _canonical_fields(event: Any, *, seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_type": event.event_type,
        "source": event.source,
        "criticality": event.criticality,
        "occurred_at": event.occurred_at,
        "received_at": event.received_at,
        "payload": event.payload,
    }


def event_checksum_of(event: Any) -> str:
    """The checksum an event (or any object with the event's fields) should carry."""
    return event_checksum(**_canonical_fields(event, seq=event.seq))


# In the canonical form the top-level "seq" is followed by "source", the last key; a string
# value cannot hold these bytes (its quotes would be escaped), and the payload comes first.
_SEQ_HOLE = b',"seq":0,"source":'


def canonical_event_bytes_around_seq(event: Any) -> tuple[bytes, bytes]:
    """An event's canonical form split where its seq goes: for any seq, the canonical form
    is ``head + str(seq) + tail``. Lets PostgreSQL finish the checksum of an event whose
    seq it allocates (``events.services``)."""
    canonical = canonical_event_bytes(**_canonical_fields(event, seq=0))
    head, hole, tail = canonical.rpartition(_SEQ_HOLE)
    if not hole:  # pragma: no cover - canonical_event_bytes always writes both keys
        raise AssertionError("the canonical form has no top-level seq")
    return head + b',"seq":', b',"source":' + tail
