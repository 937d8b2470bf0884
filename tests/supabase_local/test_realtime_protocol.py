"""The frame layouts of realtime-js's serializer, checked byte by byte.

The conformance tests run real clients; these pin the binary layouts so that a change in
``protocol.py`` fails here with a readable diff rather than as a silent client timeout.
"""

from __future__ import annotations

import json
import struct

import pytest

from supabase_local.realtime import protocol


def user_broadcast_push(
    join_ref: str,
    ref: str,
    topic: str,
    event: str,
    body: bytes,
    *,
    encoding: int = 1,
    meta: str = "",
) -> bytes:
    """Built exactly as realtime-js's ``_encodeUserBroadcastPush`` does."""
    header = struct.pack(
        "7B", 3, len(join_ref), len(ref), len(topic), len(event), len(meta), encoding
    )
    return header + (join_ref + ref + topic + event + meta).encode() + body


def test_a_json_user_broadcast_push_decodes_to_a_broadcast_message():
    frame = user_broadcast_push("1", "2", "realtime:room", "ping", b'{"x":1}')
    msg = protocol.decode(frame, protocol.VSN_2)
    assert (msg.topic, msg.event, msg.ref, msg.join_ref) == ("realtime:room", "broadcast", "2", "1")
    assert msg.payload == {"type": "broadcast", "event": "ping", "payload": {"x": 1}}


def test_a_binary_user_broadcast_push_keeps_its_bytes_and_metadata():
    frame = user_broadcast_push(
        "1", "", "realtime:room", "blob", b"\x00\xff", encoding=0, meta='{"id":"m1"}'
    )
    msg = protocol.decode(frame, protocol.VSN_2)
    assert msg.ref is None
    assert msg.payload["payload"] == b"\x00\xff" and msg.payload["meta"] == {"id": "m1"}


def test_broadcasts_to_vsn2_receivers_use_the_user_broadcast_frame():
    out = protocol.push(
        "realtime:room", "broadcast", {"type": "broadcast", "event": "ping", "payload": {"x": 1}}
    )
    frame = out.frame(protocol.VSN_2)
    assert isinstance(frame, bytes)
    kind, topic_len, event_len, meta_len, encoding = struct.unpack_from("5B", frame)
    assert (kind, topic_len, event_len, meta_len, encoding) == (4, 13, 4, 0, 1)
    assert frame[5:22] == b"realtime:roomping"
    assert json.loads(frame[22:]) == {"x": 1}
    assert out.frame(protocol.VSN_2) is frame  # encoded once, reused


def test_other_messages_are_json_arrays_or_objects_with_null_refs():
    out = protocol.push("realtime:room", "system", {"status": "ok"})
    assert json.loads(out.frame(protocol.VSN_2)) == [
        None,
        None,
        "realtime:room",
        "system",
        {"status": "ok"},
    ]
    assert json.loads(out.frame(protocol.VSN_1)) == {
        "topic": "realtime:room",
        "event": "system",
        "payload": {"status": "ok"},
        "ref": None,
        "join_ref": None,
    }


def test_a_reply_echoes_ref_and_join_ref():
    msg = protocol.decode('["3","7","realtime:room","phx_leave",{}]', protocol.VSN_2)
    reply = json.loads(protocol.reply(msg, "ok").frame(protocol.VSN_2))
    assert reply == ["3", "7", "realtime:room", "phx_reply", {"status": "ok", "response": {}}]


@pytest.mark.parametrize("frame", ['{"topic": 1}', "[1, 2]", "not json", b"\x09\x00"])
def test_malformed_frames_are_refused(frame):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(
            frame, protocol.VSN_2 if isinstance(frame, bytes) or "[" in frame else protocol.VSN_1
        )


def test_a_binary_frame_whose_topic_is_not_utf8_is_a_protocol_error():
    frame = user_broadcast_push("1", "2", "realtime:room", "ping", b"{}")
    frame = frame.replace(b"realtime:room", b"realtime:\xff\xfeom")

    with pytest.raises(protocol.ProtocolError, match="not UTF-8"):
        protocol.decode(frame, protocol.VSN_2)
