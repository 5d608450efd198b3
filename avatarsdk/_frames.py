"""The receive side of WebSocket framing (RFC 6455), without I/O.

The reader thread feeds whatever ``recv()`` returned; :class:`FrameParser` returns every complete message in
it. Binary messages come out as ``bytes`` (the payload, exactly as sent); text messages, pings, pongs and
close frames as :class:`Control`. Reading large blocks and parsing them here costs one system call per block
instead of the three per frame that websocket-client's own reader makes.
"""

from __future__ import annotations

from typing import List, Optional, Union

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009


class FrameError(Exception):
    """The server broke the framing rules; ``close_code`` is what to close the connection with.

    ``messages`` holds the messages completed before the fault in the same ``feed()``: they were received
    whole and are still delivered.
    """

    def __init__(self, message: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.messages: List[Message] = []


class Control:
    """A message that is not a binary one: text (``OP_TEXT``), ``OP_PING``, ``OP_PONG`` or ``OP_CLOSE``."""

    __slots__ = ("opcode", "payload")

    def __init__(self, opcode: int, payload: bytes) -> None:
        self.opcode = opcode
        self.payload = payload

    def __repr__(self) -> str:
        return f"Control(opcode={self.opcode}, {len(self.payload)} bytes)"


Message = Union[bytes, Control]


class FrameParser:
    """Incremental parser of server-to-client frames.

    Every rule is checked as soon as the bytes it needs are there: what the first two bytes decide (reserved
    bits, masking, opcode, a control frame's FIN bit and 7-bit length, a continuation without a message or a
    new message inside one) at the second byte, the length's rules once the length is complete, the rest once
    the frame is. A server that breaks a rule and then goes quiet is refused at once, not waited for.

    Args:
        max_message_size: Largest message (after reassembling fragments) accepted, in bytes; ``None`` for no
            limit. A larger one raises :class:`FrameError` with close code 1009 as soon as its header says so.
    """

    def __init__(self, max_message_size: Optional[int] = None) -> None:
        self._max = max_message_size
        self._buffer = b""  # the start of an incomplete frame
        self._chunks: List[bytes] = []  # more of it, joined only once the frame is complete
        self._buffered = 0
        self._needed = 0  # bytes the incomplete frame needs in all (0: its header is incomplete)
        self._fragments: List[bytes] = []  # a fragmented message being reassembled (empty: none is)
        self._fragments_opcode = OP_BINARY
        self._fragments_size = 0
        self.saw_control = False  # set by feed() when it returned a Control; the caller resets it

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return self._buffered + self._fragments_size

    def feed(self, data: bytes) -> List[Message]:
        """Consume ``data``; return the messages it completed, in order."""
        if self._buffered:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return []  # a large frame still arriving: keep the pieces, join them once
            data = self._buffer + b"".join(self._chunks)
            self._chunks = []
        out: List[Message] = []
        pos = 0
        end = len(data)
        needed = 0
        limit = self._max
        fragmented = bool(self._fragments)
        try:
            while end - pos >= 2:
                b0 = data[pos]
                size = data[pos + 1]
                # A whole binary frame, unmasked, outside a fragmented message: the common case, no more checks.
                other = b0 != 0x82 or size > 0x7F or fragmented
                if other:
                    self._check_start(b0, size)
                # From here on size is the 7-bit length: the mask bit is 0.
                if size < 126:
                    start = pos + 2
                elif size == 126:
                    if end - pos < 4:
                        break
                    size = data[pos + 2] << 8 | data[pos + 3]
                    start = pos + 4
                else:
                    if end - pos < 10:
                        break
                    size = int.from_bytes(data[pos + 2 : pos + 10], "big")
                    if size >> 63:
                        raise FrameError("64-bit payload length with the most significant bit set")
                    start = pos + 10
                if limit is not None:
                    if size > limit:
                        raise FrameError(f"message of {size} bytes exceeds the {limit}-byte limit", CLOSE_TOO_BIG)
                    if fragmented and not b0 & 0x0F and self._fragments_size + size > limit:
                        total = self._fragments_size + size
                        message = f"fragmented message of {total} bytes exceeds the {limit}-byte limit"
                        raise FrameError(message, CLOSE_TOO_BIG)
                stop = start + size
                if stop > end:
                    needed = stop - pos
                    break
                if other:
                    self._frame(b0, data[start:stop], out)
                    fragmented = bool(self._fragments)
                else:
                    out.append(data[start:stop])
                pos = stop
        except FrameError as exc:
            exc.messages = out
            raise
        self._needed = needed
        self._buffered = end - pos
        self._buffer = data[pos:]  # b"" when all of it was used; data itself when none was (bytes: no copy)
        return out

    def _check_start(self, b0: int, b1: int) -> None:
        """Refuse a frame that its first two bytes condemn, whatever follows them."""
        if b1 & 0x80 or b0 & 0x70:
            raise FrameError("masked frame or reserved bits from the server")
        opcode = b0 & 0x0F
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise FrameError(f"unknown control opcode {opcode:#x}")
            if not b0 & 0x80 or b1 > 125:  # 126 and 127 announce a longer payload (or encode it non-minimally)
                raise FrameError("fragmented or oversized control frame")
        elif opcode == OP_CONTINUATION:
            if not self._fragments:
                raise FrameError("continuation frame without a message to continue")
        elif opcode > OP_BINARY:
            raise FrameError(f"unknown data opcode {opcode:#x}")
        elif self._fragments:
            raise FrameError("new message before the fragmented one ended")

    def _frame(self, b0: int, payload: bytes, out: List[Message]) -> None:
        """A complete frame that passed ``_check_start`` and the length checks."""
        opcode = b0 & 0x0F
        if opcode >= OP_CLOSE:
            if opcode == OP_CLOSE:
                _check_close(payload)
            out.append(Control(opcode, payload))
            self.saw_control = True
        elif opcode == OP_CONTINUATION:
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if b0 & 0x80:
                whole = b"".join(self._fragments)
                self._fragments = []
                self._fragments_size = 0
                self._emit(self._fragments_opcode, whole, out)
        elif b0 & 0x80:
            self._emit(opcode, payload, out)
        else:
            self._fragments = [payload]
            self._fragments_opcode = opcode
            self._fragments_size = len(payload)

    def _emit(self, opcode: int, payload: bytes, out: List[Message]) -> None:
        if opcode == OP_BINARY:
            out.append(payload)
        else:
            out.append(Control(OP_TEXT, payload))
            self.saw_control = True


def _check_close(payload: bytes) -> None:
    """A close frame's body is empty, or a code an endpoint may send and a UTF-8 reason (RFC 6455 5.5.1,
    7.4)."""
    if not payload:
        return
    if len(payload) == 1:
        raise FrameError("close frame with a 1-byte body")
    code = payload[0] << 8 | payload[1]
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise FrameError(f"close code {code} may not be sent")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("close reason is not UTF-8", CLOSE_INVALID_DATA) from None
