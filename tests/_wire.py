"""Bytes on the wire, built by hand for tests (independently of the generated protobuf module and of the SDK's
own framing): protobuf varints and fields, and server-to-client WebSocket frames."""

from __future__ import annotations

import struct


def varint(value: int) -> bytes:
    """A protobuf varint; a negative value is taken as its 64-bit two's complement (10 bytes), as for int32."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def vfield(number: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return varint(number << 3) + varint(value)


def lfield(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """An unmasked server-to-client WebSocket frame."""
    head = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        return bytes([head, size]) + payload
    if size < 1 << 16:
        return bytes([head, 126]) + struct.pack(">H", size) + payload
    return bytes([head, 127]) + struct.pack(">Q", size) + payload
