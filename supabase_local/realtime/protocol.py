"""Phoenix channel frames as Supabase Realtime clients speak them.

Two serialisations share one message model:

* ``vsn=1.0.0``: a JSON object ``{"topic", "event", "payload", "ref", "join_ref"}``
  (the Python ``realtime`` client).
* ``vsn=2.0.0``: a JSON array ``[join_ref, ref, topic, event, payload]`` (supabase-js's
  default), plus binary frames for user broadcasts: the client pushes kind 3
  (``userBroadcastPush``) and the server sends kind 4 (``userBroadcast``).

Invariants:

* Every encoded frame carries ``ref`` and ``join_ref`` (``null`` where there is none).
* An :class:`Outgoing` message is encoded at most once per serialisation, however many
  sockets it is sent to; fan-out reuses the cached text or bytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from . import wire

VSN_1 = "1.0.0"
VSN_2 = "2.0.0"
SUPPORTED_VSNS = (VSN_1, VSN_2)

KIND_USER_BROADCAST_PUSH = 3
KIND_USER_BROADCAST = 4
ENCODING_BINARY = 0
ENCODING_JSON = 1

Frame = str | bytes


class ProtocolError(ValueError):
    """A frame that is not a Phoenix message in the negotiated serialisation."""


@dataclass(slots=True)
class Message:
    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


def _json_default(value: Any) -> Any:
    # A binary broadcast relayed to a JSON-only (vsn 1.0.0) receiver: a list of bytes.
    if isinstance(value, bytes | bytearray | memoryview):
        return list(bytes(value))
    return str(value)


def _dumps(value: Any) -> str:
    # Compact separators: fan-out sends the same text thousands of times.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def decode(data: Frame, vsn: str) -> Message:
    """Parse one incoming frame; raises :class:`ProtocolError` when it is malformed."""
    if isinstance(data, bytes):
        if vsn != VSN_2:
            raise ProtocolError("binary frames need vsn=2.0.0")
        return _decode_binary(data)
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from exc
    if vsn == VSN_2:
        if not isinstance(raw, list) or len(raw) != 5:
            raise ProtocolError("vsn 2.0.0 frames are [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = raw
    else:
        if not isinstance(raw, dict):
            raise ProtocolError("vsn 1.0.0 frames are JSON objects")
        topic, event = raw.get("topic"), raw.get("event")
        payload, ref, join_ref = raw.get("payload"), raw.get("ref"), raw.get("join_ref")
    if not isinstance(topic, str) or not isinstance(event, str):
        raise ProtocolError("topic and event must be strings")
    if payload is None:
        payload = {}
    return Message(topic, event, payload, _ref(ref), _ref(join_ref))


def _ref(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _decode_binary(data: bytes) -> Message:
    """Decode realtime-js's ``userBroadcastPush`` frame.

    Layout: kind(1) join_ref_len(1) ref_len(1) topic_len(1) event_len(1) meta_len(1)
    encoding(1), then join_ref, ref, topic, user event, metadata JSON, payload.
    """
    if len(data) < 7 or data[0] != KIND_USER_BROADCAST_PUSH:
        raise ProtocolError("unsupported binary frame kind")
    jr_len, ref_len, topic_len, event_len, meta_len, encoding = struct.unpack_from("6B", data, 1)
    offset = 7
    parts: list[str] = []
    for size in (jr_len, ref_len, topic_len, event_len, meta_len):
        if offset + size > len(data):
            raise ProtocolError("truncated binary frame")
        try:
            parts.append(data[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"binary frame field is not UTF-8: {exc}") from exc
        offset += size
    join_ref, ref, topic, user_event, meta = parts
    body = data[offset:]
    user_payload: Any
    if encoding == ENCODING_JSON:
        try:
            user_payload = json.loads(body) if body else {}
        except ValueError as exc:
            raise ProtocolError("binary broadcast payload is not JSON") from exc
    else:
        user_payload = bytes(body)
    payload: dict[str, Any] = {"type": "broadcast", "event": user_event, "payload": user_payload}
    if meta:
        try:
            payload["meta"] = json.loads(meta)
        except ValueError as exc:
            raise ProtocolError("binary broadcast metadata is not JSON") from exc
    return Message(topic, "broadcast", payload, _ref(ref), _ref(join_ref))


@dataclass(slots=True, eq=False)
class Outgoing:
    """A server message with its encodings cached per serialisation."""

    message: Message
    # Droppable messages are the ones the fault injector may lose (data, not replies).
    droppable: bool = False
    _cache: dict[str, Frame] = field(default_factory=dict)
    _wire: dict[str, bytes] = field(default_factory=dict)

    def frame(self, vsn: str) -> Frame:
        cached = self._cache.get(vsn)
        if cached is None:
            cached = encode(self.message, vsn)
            self._cache[vsn] = cached
        return cached

    def wire(self, vsn: str) -> bytes:
        """The complete WebSocket frame, built once per serialisation."""
        cached = self._wire.get(vsn)
        if cached is None:
            cached = wire.frame(self.frame(vsn))
            self._wire[vsn] = cached
        return cached


def encode(msg: Message, vsn: str) -> Frame:
    if vsn == VSN_2:
        binary = _maybe_binary_broadcast(msg)
        if binary is not None:
            return binary
        return _dumps([msg.join_ref, msg.ref, msg.topic, msg.event, msg.payload])
    return _dumps(
        {
            "topic": msg.topic,
            "event": msg.event,
            "payload": msg.payload,
            "ref": msg.ref,
            "join_ref": msg.join_ref,
        }
    )


def _maybe_binary_broadcast(msg: Message) -> bytes | None:
    """Encode a user broadcast as realtime-js's ``userBroadcast`` (kind 4) frame.

    Layout: kind(1) topic_len(1) event_len(1) meta_len(1) encoding(1), then topic,
    user event, metadata JSON and the payload (JSON text or raw bytes).
    Returns ``None`` when the message does not fit the frame (names over 255 bytes), so
    the caller falls back to the JSON array form, which realtime-js also accepts.
    """
    payload = msg.payload
    if msg.event != "broadcast" or not isinstance(payload, dict):
        return None
    user_event = payload.get("event")
    if not isinstance(user_event, str):
        return None
    topic_b = msg.topic.encode("utf-8")
    event_b = user_event.encode("utf-8")
    meta = payload.get("meta")
    meta_b = _dumps(meta).encode("utf-8") if meta else b""
    if max(len(topic_b), len(event_b), len(meta_b)) > 255:
        return None
    body = payload.get("payload")
    if isinstance(body, bytes | bytearray | memoryview):
        encoding, body_b = ENCODING_BINARY, bytes(body)
    else:
        encoding, body_b = ENCODING_JSON, _dumps(body if body is not None else {}).encode()
    header = struct.pack(
        "5B", KIND_USER_BROADCAST, len(topic_b), len(event_b), len(meta_b), encoding
    )
    return header + topic_b + event_b + meta_b + body_b


def reply(msg: Message, status: str, response: Any = None) -> Outgoing:
    """A ``phx_reply`` to ``msg``; replies are never dropped by fault injection."""
    return Outgoing(
        Message(
            msg.topic,
            "phx_reply",
            {"status": status, "response": response if response is not None else {}},
            msg.ref,
            msg.join_ref,
        )
    )


def push(
    topic: str,
    event: str,
    payload: Any,
    *,
    join_ref: str | None = None,
    droppable: bool = False,
) -> Outgoing:
    """A server-initiated message (``ref`` is always ``null``)."""
    return Outgoing(Message(topic, event, payload, None, join_ref), droppable=droppable)
