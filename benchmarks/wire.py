"""The benchmark's animation frames, and the wire helpers its server and clients use (no protobuf runtime).

The encoders and the field reader are ``avatarsdk.testing.wire``'s, loaded from the SDK's file without
importing the SDK (:func:`sdk_module`): a benchmark process imports only the client it measures, and the server
needs no protobuf runtime.

Animation frames have the service's field numbers (``Message.type`` = 5 at field 1,
``server_response_animation`` at field 6 with ``connection_id`` 1, ``req_id`` 2, ``end`` 3) and, like the
service's frames, carry fields the public schema does not declare: two ``fixed64`` timestamps
(:data:`SCHEDULED_FIELD`, :data:`SENT_FIELD`, ``time.monotonic_ns()`` of the server process, comparable across
processes on Linux) and a filler (:data:`FILLER_FIELD`) that brings the message to the requested size. The
envelope puts ``type`` last, as ``avatarsdk.testing.animation_frame`` does.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Tuple


def sdk_module(path: str, name: str) -> ModuleType:
    """The module at ``path`` (relative to the ``avatarsdk`` package that an import would find), loaded from its
    file as ``name`` without importing ``avatarsdk``; it may import nothing of the SDK."""
    spec = importlib.util.find_spec("avatarsdk")
    assert spec is not None and spec.origin is not None
    module_spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(spec.origin), path))
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


_sdk = sdk_module(os.path.join("testing", "wire.py"), "bench_avatarsdk_wire")
varint = _sdk.varint
field_bytes = _sdk.field_bytes
field_varint = _sdk.field_varint
field_fixed64 = _sdk.field_fixed64
parse_fields = _sdk.parse_fields
ws_frame_header = _sdk.ws_frame_header  # (length, opcode=OP_BINARY): a server's (unmasked) frame header
OP_CLOSE = _sdk.OP_CLOSE
OP_PONG = _sdk.OP_PONG

MESSAGE_CLIENT_CONFIGURE_SESSION = 1
MESSAGE_SERVER_CONFIRM_SESSION = 2
MESSAGE_CLIENT_AUDIO_INPUT = 3
MESSAGE_SERVER_RESPONSE_ANIMATION = _sdk.MESSAGE_SERVER_RESPONSE_ANIMATION

SCHEDULED_FIELD = 13  # fixed64: when the server meant to send the frame (paced streams)
SENT_FIELD = 14  # fixed64: when the server sent it
FILLER_FIELD = _sdk.UNDECLARED_FIELD  # bytes: stands for the animation data

_TIMES = struct.Struct("<xQxQ")  # tag, scheduled, tag, sent
_TIMES_TAGS = (SCHEDULED_FIELD << 3 | 1, SENT_FIELD << 3 | 1)


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
    known = _sdk.animation_fields(connection_id, req_id, end)
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
