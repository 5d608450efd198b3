"""avatarsdk.testing.wire, the hand-built wire bytes: against hand-written bytes (protobuf's encoding guide, RFC
6455 section 5.2) and against what the generated protobuf modules write and read."""

from __future__ import annotations

import struct
from typing import Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatarsdk._frames import FrameParser
from avatarsdk._proto import ingress_v1_pb2 as pb1
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.testing.wire import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    UNDECLARED_FIELD,
    animation_fields,
    animation_frame,
    field_bytes,
    field_fixed64,
    field_varint,
    parse_fields,
    read_fields,
    read_varint,
    v1_animation_frame,
    varint,
    ws_frame,
    ws_frame_header,
)

BASE = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
UINT32 = st.integers(0, (1 << 32) - 1)

# ---------------------------------------------------------------------------------------------- protobuf


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (150, b"\x96\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        ((1 << 64) - 1, b"\xff" * 9 + b"\x01"),
        (-1, b"\xff" * 9 + b"\x01"),  # int32/int64 below zero: 64-bit two's complement, 10 bytes
        (-2, b"\xfe" + b"\xff" * 8 + b"\x01"),
        (-(1 << 63), b"\x80" * 9 + b"\x01"),
    ],
)
def test_varint_by_hand(value: int, expected: bytes) -> None:
    assert varint(value) == expected
    assert read_varint(b"\x00" + expected, 1) == (value & ((1 << 64) - 1), len(expected) + 1)


@pytest.mark.parametrize("value", [1 << 64, -(1 << 63) - 1])
def test_varint_refuses_what_64_bits_cannot_hold(value: int) -> None:
    with pytest.raises(ValueError):
        varint(value)


def test_fields_by_hand() -> None:
    assert field_varint(1, 5) == b"\x08\x05"
    assert field_varint(3, 1) == b"\x18\x01"
    assert field_varint(16, 1) == b"\x80\x01\x01"  # field numbers from 16 on take a two-byte key
    assert field_bytes(2, b"testing") == b"\x12\x07testing"
    assert field_bytes(6, b"") == b"\x32\x00"
    assert field_bytes(15, bytes(200)) == b"\x7a\xc8\x01" + bytes(200)
    assert field_fixed64(13, 1) == b"\x69\x01" + bytes(7)
    assert field_fixed64(14, (1 << 64) - 1) == b"\x71" + b"\xff" * 8


@settings(BASE, max_examples=200)
@given(code=INT32, req_id=st.text(max_size=40), message=st.text(max_size=300), connection_id=st.text(max_size=20))
def test_fields_are_what_protobuf_writes(code: int, req_id: str, message: str, connection_id: str) -> None:
    """A SERVER_ERROR (int32 and string fields, a nested message) built field by field is protobuf's own."""
    msg = pb.Message(type=pb.MESSAGE_SERVER_ERROR)
    msg.server_error.connection_id = connection_id
    msg.server_error.req_id = req_id
    msg.server_error.code = code
    msg.server_error.message = message
    inner = field_bytes(1, connection_id.encode("utf-8")) if connection_id else b""  # proto3 leaves out defaults
    inner += field_bytes(2, req_id.encode("utf-8")) if req_id else b""
    inner += field_varint(3, code) if code else b""
    inner += field_bytes(4, message.encode("utf-8")) if message else b""
    assert field_varint(1, pb.MESSAGE_SERVER_ERROR) + field_bytes(5, inner) == msg.SerializeToString()


@settings(BASE, max_examples=200)
@given(played_ms=INT64, state=st.sampled_from([1, 2, 3, 4]))
def test_int64_fields_are_what_protobuf_writes(played_ms: int, state: int) -> None:
    expected = pb.ServerPlaybackState(state=state, played_ms=played_ms).SerializeToString()
    assert field_varint(3, state) + (field_varint(4, played_ms) if played_ms else b"") == expected


@settings(BASE, max_examples=200)
@given(uid=UINT32, sample_rate=INT32, bitrate=INT32)
def test_fields_read_back_what_protobuf_wrote(uid: int, sample_rate: int, bitrate: int) -> None:
    data = pb.ClientConfigureSession(sample_rate=sample_rate, bitrate=bitrate).SerializeToString()
    fields = parse_fields(data)
    assert fields.get(1, 0) == sample_rate & ((1 << 64) - 1)  # int32 below zero: read as the 64-bit varint
    assert fields.get(2, 0) == bitrate & ((1 << 64) - 1)
    assert parse_fields(pb.AgoraEgressConfig(uid=uid).SerializeToString()).get(3, 0) == uid


def test_read_fields_keeps_order_and_repeats_parse_fields_keeps_the_last() -> None:
    confirm = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
    confirm.server_confirm_session.connection_id = "c1"
    confirm.server_confirm_session.capabilities.extend(["playback_control", "playback_state"])
    envelope = read_fields(confirm.SerializeToString())
    assert [number for number, _ in envelope] == [1, 3]
    inner = envelope[1][1]
    assert isinstance(inner, bytes)
    assert read_fields(inner) == [(1, b"c1"), (2, b"playback_control"), (2, b"playback_state")]
    assert parse_fields(inner) == {1: b"c1", 2: b"playback_state"}


def test_read_fields_reads_every_wire_type_it_knows() -> None:
    data = field_varint(1, 300) + field_fixed64(2, 7) + field_bytes(3, b"ab") + b"\x25" + struct.pack("<I", 9)
    assert read_fields(data) == [(1, 300), (2, 7), (3, b"ab"), (4, 9)]


@pytest.mark.parametrize(
    "data",
    [
        b"\x08",  # a varint field without its value
        b"\x08\x80",  # a varint that never ends
        b"\x12\x05abc",  # length past the end
        b"\x09\x00\x00",  # a 64-bit field cut short
        b"\x0b",  # a group (wire type 3)
        b"\x0f",  # wire type 7
    ],
)
def test_read_fields_refuses_what_it_cannot_read(data: bytes) -> None:
    with pytest.raises(ValueError):
        read_fields(data)


# --------------------------------------------------------------------------------------------- WebSocket


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_ws_frame_lengths_by_hand(size: int, header: bytes) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert ws_frame(payload) == header + payload
    assert ws_frame_header(size) == header


def test_ws_frame_bits_by_hand() -> None:
    assert ws_frame(b"hi", OP_TEXT) == b"\x81\x02hi"
    assert ws_frame(b"ab", fin=False) == b"\x02\x02ab"
    assert ws_frame(b"cd", OP_CONTINUATION) == b"\x80\x02cd"
    assert ws_frame(b"\x03\xe8", OP_CLOSE) == b"\x88\x02\x03\xe8"
    assert ws_frame(b"x", mask=True) == b"\x82\x81\x00\x00\x00\x00x"  # zero key: the payload reads the same
    assert ws_frame(b"x" * 126, mask=True) == b"\x82\xfe\x00\x7e\x00\x00\x00\x00" + b"x" * 126
    assert ws_frame(b"x", rsv=4) == b"\xc2\x01x"  # RSV1
    assert ws_frame(b"x", rsv=1) == b"\x92\x01x"  # RSV3
    assert ws_frame(b"", 0xF) == b"\x8f\x00"


def test_ws_frame_masked_with_a_key_is_rfc_6455s_example() -> None:
    """RFC 6455 section 5.7: "A single-frame masked text message" ("Hello")."""
    key = b"\x37\xfa\x21\x3d"
    assert ws_frame(b"Hello", OP_TEXT, mask=key) == b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert ws_frame_header(5, OP_TEXT, mask=key) == b"\x81\x85" + key


@pytest.mark.parametrize(("opcode", "rsv", "mask"), [(16, 0, False), (-1, 0, False), (2, 8, False), (2, 0, b"abc")])
def test_ws_frame_refuses_bits_out_of_range(opcode: int, rsv: int, mask: Union[bool, bytes]) -> None:
    with pytest.raises(ValueError):
        ws_frame(b"x", opcode, rsv=rsv, mask=mask)


def test_ws_frames_are_what_the_sdk_parser_reads() -> None:
    payloads = [b"", b"a", b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536]
    parser = FrameParser()
    assert parser.feed(b"".join(ws_frame(p) for p in payloads)) == payloads
    fragmented = ws_frame(b"ab", fin=False) + ws_frame(b"!", OP_PING) + ws_frame(b"cd", OP_CONTINUATION)
    assert parser.feed(fragmented)[-1] == b"abcd"


# ------------------------------------------------------------------------------------- animation frames


def reference_animation_frame(connection_id: str, req_id: str, end: bool, size: int, seq: int) -> bytes:
    """animation_frame as protobuf would write it: the declared fields by the generated module."""
    known = pb.ServerResponseAnimation(connection_id=connection_id, req_id=req_id, end=end).SerializeToString()
    filler = struct.pack(">I", seq) + bytes((seq + i) & 0xFF for i in range(max(0, size - len(known) - 20)))
    inner = field_bytes(UNDECLARED_FIELD, filler) + known
    return field_bytes(6, inner) + pb.Message(type=pb.MESSAGE_SERVER_RESPONSE_ANIMATION).SerializeToString()


@settings(BASE, max_examples=300)
@given(
    connection_id=st.text(max_size=30),
    req_id=st.text(max_size=40),
    end=st.booleans(),
    size=st.integers(0, 3000),
    seq=st.integers(0, (1 << 32) - 1),
)
def test_animation_frame_is_what_protobuf_writes(
    connection_id: str, req_id: str, end: bool, size: int, seq: int
) -> None:
    assert (
        animation_fields(connection_id, req_id, end)
        == pb.ServerResponseAnimation(connection_id=connection_id, req_id=req_id, end=end).SerializeToString()
    )
    data = animation_frame(connection_id, req_id, end, size, seq)
    assert data == reference_animation_frame(connection_id, req_id, end, size, seq)
    msg = pb.Message.FromString(data)
    assert msg.type == pb.MESSAGE_SERVER_RESPONSE_ANIMATION
    animation = msg.server_response_animation
    assert (animation.connection_id, animation.req_id, animation.end) == (connection_id, req_id, end)
    assert data.endswith(b"\x08\x05")  # the envelope's type comes last


@pytest.mark.parametrize("size", [0, 40, 300, 1200, 20_000])
def test_animation_frame_has_about_the_size_asked_for(size: int) -> None:
    data = animation_frame("conn-1", "20261126055603_ab_IxHPUhrA", False, size, 7)
    if size >= 300:
        assert size - 16 <= len(data) <= size
    animation = parse_fields(data)[6]
    assert isinstance(animation, bytes)
    filler = parse_fields(animation)[UNDECLARED_FIELD]
    assert isinstance(filler, bytes) and filler[:4] == b"\x00\x00\x00\x07"


@settings(BASE, max_examples=100)
@given(size=st.integers(0, 3000), seq=st.integers(0, (1 << 32) - 1))
def test_v1_animation_frame_is_what_protobuf_reads(size: int, seq: int) -> None:
    data = v1_animation_frame(size, seq)
    assert pb1.Message.FromString(data).type == pb1.MESSAGE_SERVER_RESPONSE_ANIMATION
    assert data.endswith(pb1.Message(type=pb1.MESSAGE_SERVER_RESPONSE_ANIMATION).SerializeToString())
    assert [number for number, _ in read_fields(data)] == [UNDECLARED_FIELD, 1]
    if size >= 300:
        assert size - 16 <= len(data) <= size
