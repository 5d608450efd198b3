"""Protobuf and WebSocket wire helpers shared by the benchmark server and clients (no protobuf runtime).

Animation frames have the service's field numbers (``Message.type`` = 5 at field 1,
``server_response_animation`` at field 6 with ``connection_id`` 1, ``req_id`` 2, ``end`` 3) and, like the
service's frames, carry fields the public schema does not declare: two ``fixed64`` timestamps
(:data:`SCHEDULED_FIELD`, :data:`SENT_FIELD`, ``time.monotonic_ns()`` of the server process, comparable across
processes on Linux) and a filler (:data:`FILLER_FIELD`) that brings the message to the requested size. The
envelope puts ``type`` last, as ``avatarsdk.testing.animation_frame`` does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Tuple, Union

MESSAGE_CLIENT_CONFIGURE_SESSION = 1
MESSAGE_SERVER_CONFIRM_SESSION = 2
MESSAGE_CLIENT_AUDIO_INPUT = 3
MESSAGE_SERVER_RESPONSE_ANIMATION = 5

SCHEDULED_FIELD = 13  # fixed64: when the server meant to send the frame (paced streams)
SENT_FIELD = 14  # fixed64: when the server sent it
FILLER_FIELD = 15  # bytes: stands for the animation data

_TIMES = struct.Struct("<xQxQ")  # tag, scheduled, tag, sent
_TIMES_TAGS = (SCHEDULED_FIELD << 3 | 1, SENT_FIELD << 3 | 1)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_fixed64(number: int, value: int) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<Q", value)


def parse_fields(data: bytes) -> Dict[int, Union[int, bytes]]:
    """The top-level fields of a protobuf message (the last occurrence of each wins)."""
    fields: Dict[int, Union[int, bytes]] = {}
    pos, size = 0, len(data)
    while pos < size:
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: Union[int, bytes]
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            value, pos = bytes(data[pos : pos + length]), pos + length
        elif wire_type == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire_type == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        fields[number] = value
    return fields


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


@dataclass(frozen=True)
class Frame:
    """An encoded SERVER_RESPONSE_ANIMATION message; the timestamps' tags and values start at ``times_offset``."""

    data: bytes
    times_offset: int


def animation_frame(connection_id: str, req_id: str, end: bool, size: int, *, timestamps: bool = True) -> Frame:
    """An animation frame of exactly ``size`` bytes (or the smallest possible one).

    With ``timestamps`` it starts with the two (zero) timestamps for the server to fill in; without, its
    layout is that of ``avatarsdk.testing.animation_frame`` (filler, then the declared fields) and
    ``times_offset`` is -1.
    """
    known = field_bytes(1, connection_id.encode()) + field_bytes(2, req_id.encode())
    if end:
        known += field_varint(3, 1)
    times = field_fixed64(SCHEDULED_FIELD, 0) + field_fixed64(SENT_FIELD, 0) if timestamps else b""
    envelope_type = field_varint(1, MESSAGE_SERVER_RESPONSE_ANIMATION)
    filler_len = max(0, size - len(known) - len(times) - len(envelope_type) - 6)
    while True:
        inner = times + field_bytes(FILLER_FIELD, bytes(filler_len)) + known
        outer = field_bytes(6, inner) + envelope_type
        if len(outer) <= size or filler_len == 0:
            break
        filler_len -= len(outer) - size
        filler_len = max(0, filler_len)
    if len(outer) < size:  # a varint got shorter: pad again (converges in one step)
        filler_len += size - len(outer)
        inner = times + field_bytes(FILLER_FIELD, bytes(filler_len)) + known
        outer = field_bytes(6, inner) + envelope_type
    offset = 1 + len(varint(len(inner))) if timestamps else -1
    return Frame(outer, offset)


def frame_times(frame: bytes) -> Tuple[int, int]:
    """``(scheduled_ns, sent_ns)`` from an animation frame made by :func:`animation_frame`."""
    pos = 1
    while frame[pos] & 0x80:
        pos += 1
    return _TIMES.unpack_from(frame, pos + 1)  # type: ignore[return-value]


def check_frame_times_layout(frame: bytes) -> None:
    """Raise ``ValueError`` unless ``frame`` carries the timestamps where :func:`frame_times` reads them."""
    pos = 1
    while frame[pos] & 0x80:
        pos += 1
    pos += 1
    if frame[0] != (6 << 3 | 2) or frame[pos] != _TIMES_TAGS[0] or frame[pos + 9] != _TIMES_TAGS[1]:
        raise ValueError("not a benchmark animation frame with timestamps")


def server_frame_header(length: int, opcode: int = 0x2) -> bytes:
    """The header of an unmasked, final WebSocket frame (server to client)."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + struct.pack(">H", length)
    return bytes((first, 127)) + struct.pack(">Q", length)
