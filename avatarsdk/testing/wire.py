"""Bytes on the wire, built by hand: protobuf fields, server-to-client WebSocket frames, animation frames.

For tests that write their own server messages or frames (e.g. through :meth:`FakeConnection.send_wire
<avatarsdk.testing.FakeConnection.send_wire>`, or from a server of their own), and for the stand-in itself.
Everything here is written from the encodings' specifications (protobuf's wire format, RFC 6455 section 5.2),
independently of the generated protobuf module and of the SDK's own framing, and imports no third-party
package.

Example::

    from avatarsdk.testing.wire import OP_BINARY, field_bytes, field_varint, ws_frame

    error = field_varint(1, 4) + field_bytes(5, field_varint(3, 4001))  # a SERVER_ERROR, code 4001
    conn.send_wire(ws_frame(error, OP_BINARY))
"""

from __future__ import annotations

import struct
from typing import Dict, List, Tuple, Union

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MESSAGE_SERVER_RESPONSE_ANIMATION = 5  # Message.type (field 1) of a v2 animation message
V1_MESSAGE_SERVER_RESPONSE_ANIMATION = 1004  # the same in v1
UNDECLARED_FIELD = 15  # field number of the filler in animation frames (not in the public schema)

FieldValue = Union[int, bytes]  # of a field read: see read_fields
Mask = Union[bool, bytes]  # the masking key of a frame: see ws_frame

_MASK64 = (1 << 64) - 1

# ---------------------------------------------------------------------------------------------- protobuf


def varint(value: int) -> bytes:
    """A protobuf varint. A negative value (an ``int32``/``int64`` below zero) is written as its 64-bit two's
    complement, in 10 bytes, as protobuf writes it.

    Raises:
        ValueError: ``value`` fits in neither ``int64`` nor ``uint64``.
    """
    if not -(1 << 63) <= value <= _MASK64:
        raise ValueError(f"{value} does not fit in 64 bits")
    value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    """A varint field (wire type 0): ``int32``, ``int64``, ``uint32``, ``uint64``, ``bool``, enums."""
    return varint(number << 3) + varint(value)


def field_fixed64(number: int, value: int) -> bytes:
    """A 64-bit field (wire type 1), little-endian: ``fixed64`` (``value`` from 0 to 2**64 - 1)."""
    return varint(number << 3 | 1) + struct.pack("<Q", value)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): ``bytes``, a UTF-8 ``string``, or an embedded message."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it.

    Raises:
        ValueError: the varint runs past the end of ``data``.
    """
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def read_fields(data: bytes) -> List[Tuple[int, FieldValue]]:
    """The top-level fields of a protobuf message, in order, as ``(number, value)``: an int for wire types 0
    (varint), 1 (64-bit) and 5 (32-bit), the bytes for wire type 2 (nested messages are not decoded).

    Raises:
        ValueError: a field runs past the end of ``data``, or has wire type 3 or 4 (groups), 6 or 7.
    """
    fields: List[Tuple[int, FieldValue]] = []
    pos, size = 0, len(data)
    while pos < size:
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: FieldValue
        if wire_type == 0:
            value, pos = read_varint(data, pos)
        else:
            if wire_type == 2:
                length, pos = read_varint(data, pos)
            elif wire_type in (1, 5):
                length = 8 if wire_type == 1 else 4
            else:
                raise ValueError(f"field {number}: unsupported wire type {wire_type}")
            if pos + length > size:
                raise ValueError(f"field {number}: {length} bytes past the end")
            chunk = bytes(data[pos : pos + length])
            value = chunk if wire_type == 2 else int.from_bytes(chunk, "little")
            pos += length
        fields.append((number, value))
    return fields


def parse_fields(data: bytes) -> Dict[int, FieldValue]:
    """The top-level fields of a protobuf message by number; of a repeated one, the last (see :func:`read_fields`)."""
    return dict(read_fields(data))


# --------------------------------------------------------------------------------------------- WebSocket


def ws_frame_header(
    length: int, opcode: int = OP_BINARY, *, fin: bool = True, mask: Mask = False, rsv: int = 0
) -> bytes:
    """The header of a WebSocket frame whose payload has ``length`` bytes, with the masking key if ``mask``
    (see :func:`ws_frame`)."""
    key = _mask_key(mask)
    if not 0 <= opcode <= 0xF or not 0 <= rsv <= 7:
        raise ValueError(f"opcode {opcode} or rsv {rsv} out of range")
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if key else 0
    if length < 126:
        head = bytes((first, mask_bit | length))
    elif length < 1 << 16:
        head = bytes((first, mask_bit | 126)) + struct.pack(">H", length)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack(">Q", length)
    return head + key


def ws_frame(payload: bytes, opcode: int = OP_BINARY, *, fin: bool = True, mask: Mask = False, rsv: int = 0) -> bytes:
    """One WebSocket frame as a server writes it (RFC 6455 section 5.2): unmasked, its length in 7, 16 or 64 bits.

    ``fin=False`` makes a fragment (continue with ``opcode=OP_CONTINUATION``). For framing faults, what a
    server must never send: ``mask`` sets the mask bit, with ``True`` an all-zero masking key (the payload reads
    the same), with 4 bytes that key (the payload masked with it, RFC 6455 section 5.3); ``rsv`` sets the
    reserved bits (1, 2, 4: RSV3, RSV2, RSV1).
    """
    head = ws_frame_header(len(payload), opcode, fin=fin, mask=mask, rsv=rsv)
    key = _mask_key(mask)
    return head + (bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if key else payload)


def _mask_key(mask: Mask) -> bytes:
    if isinstance(mask, bytes):
        if len(mask) != 4:
            raise ValueError(f"a masking key has 4 bytes, not {len(mask)}")
        return mask
    return bytes(4) if mask else b""


# ------------------------------------------------------------------------------------- animation frames


def animation_fields(connection_id: str, req_id: str, end: bool) -> bytes:
    """The declared fields of a ServerResponseAnimation, as protobuf writes them (empty and false ones left out)."""
    known = field_bytes(1, connection_id.encode("utf-8")) if connection_id else b""
    if req_id:
        known += field_bytes(2, req_id.encode("utf-8"))
    if end:
        known += field_varint(3, 1)
    return known


def animation_frame(connection_id: str, req_id: str, end: bool, size: int, seq: int) -> bytes:
    """One SERVER_RESPONSE_ANIMATION message of about ``size`` bytes; ``seq`` varies its filler.

    The message carries a field the public schema does not declare (:data:`UNDECLARED_FIELD`, like the
    service's animation data) before the declared ones, and the envelope puts its ``type`` last: a client that
    re-serialises the message instead of forwarding the received bytes produces different bytes.
    """
    known = animation_fields(connection_id, req_id, end)
    filler = _filler(seq, size - len(known) - 16)
    inner = field_bytes(UNDECLARED_FIELD, filler) + known
    return field_bytes(6, inner) + field_varint(1, MESSAGE_SERVER_RESPONSE_ANIMATION)


def v1_animation_frame(size: int, seq: int) -> bytes:
    """One v1 animation message (type 1004) of about ``size`` bytes: no req_id, no end, and a payload field
    the public schema does not declare (so byte-exact forwarding is checkable)."""
    return field_bytes(UNDECLARED_FIELD, _filler(seq, size - 8)) + field_varint(1, V1_MESSAGE_SERVER_RESPONSE_ANIMATION)


def _filler(seq: int, size: int) -> bytes:
    """``size`` bytes (at least 4): ``seq`` (big-endian, 4 bytes), then bytes counting up from it."""
    return struct.pack(">I", seq) + bytes((seq + i) & 0xFF for i in range(max(0, size - 4)))
