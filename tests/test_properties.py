"""Property-based tests (hypothesis) of the code that reads what the network sends: the WebSocket frame decoder
(avatarsdk/_frames.py), the protobuf-level decoders (avatarsdk/_protocol.py: peek_animation, decode), the
error classifier (avatarsdk/errors.py: classify, CLASSIFICATION_RULES) and the token-response parser
(avatarsdk/_token.py: parse_token_response).

Each property comes from documented behaviour (the modules' docstrings, PROTOCOL.md, docs/GUIDE.md), and the
inputs are built independently of the code under test: frames by hand (RFC 6455 section 5.2, with
avatarsdk.testing.wire), protobuf messages with the generated module or from raw tags and varints. Bugs these
properties found are pinned by their minimal examples as regression tests.
"""

from __future__ import annotations

import json
import string
from typing import Any, List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from avatarsdk import AvatarSDKErrorCode, SessionTokenError
from avatarsdk._frames import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    Message,
)
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk._protocol import (
    Animation,
    Confirm,
    Malformed,
    PlaybackStateMessage,
    ServerErrorMessage,
    Unknown,
    decode,
    peek_animation,
    peek_animation_wire,
)
from avatarsdk._token import _worth_retrying, parse_token_response
from avatarsdk.errors import (
    CLASSIFICATION_RULES,
    PHASE_SESSION_TOKEN,
    PHASE_WEBSOCKET_CONNECT,
    PHASE_WEBSOCKET_HANDSHAKE,
    PHASE_WEBSOCKET_RUNTIME,
    PHASE_WEBSOCKET_SEND,
    classify,
)
from avatarsdk.testing.wire import varint, ws_frame, ws_frame_header

C = AvatarSDKErrorCode

# No example database (nothing written to disk), no per-example deadline (large frames, a loaded CI machine).
BASE = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# ==================================================================================================
# 1. WebSocket frames (avatarsdk/_frames.py)
# ==================================================================================================

Frame = Tuple[bool, int, bytes]  # (fin, opcode, payload)
Norm = Tuple[int, bytes]  # a message as (opcode, payload); binary messages get OP_BINARY

BOUNDARY_SIZES = [0, 1, 124, 125, 126, 127, 65535, 65536, 65537]


def encode_frame(fin: bool, opcode: int, payload: bytes, *, mask: Optional[bytes] = None, rsv: int = 0) -> bytes:
    """A frame as a server would send it, encoded by hand (arguments in ``Frame`` order)."""
    return ws_frame(payload, opcode, fin=fin, mask=mask or False, rsv=rsv)


def encode_frames(frames: Sequence[Frame]) -> bytes:
    return b"".join(encode_frame(*f) for f in frames)


def norm(message: Message) -> Norm:
    return (OP_BINARY, message) if isinstance(message, bytes) else (message.opcode, message.payload)


def fill(size: int, pattern: bytes) -> bytes:
    """``size`` bytes repeating ``pattern``: large payloads without drawing every byte."""
    return (pattern * (size // len(pattern) + 1))[:size]


def sized_payloads(sizes: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    return st.builds(fill, sizes, st.binary(min_size=1, max_size=7))


SMALL_PAYLOADS = st.binary(max_size=150)
PAYLOADS = st.one_of(
    st.binary(max_size=200),
    sized_payloads(st.sampled_from(BOUNDARY_SIZES)),
    sized_payloads(st.integers(0, 70_000)),
)
CONTROL_PAYLOADS = st.one_of(st.binary(max_size=125), sized_payloads(st.just(125)))
CONTROL_OPCODES = st.sampled_from([OP_PING, OP_PONG, OP_CLOSE])
# Close codes an endpoint may send (RFC 6455 section 7.4): a close body is empty, or one of them and a UTF-8 reason.
SENDABLE_CLOSE_CODES = st.one_of(st.integers(1000, 1003), st.integers(1007, 1014), st.integers(3000, 4999))
UNSENDABLE_CLOSE_CODES = st.one_of(
    st.integers(0, 999), st.sampled_from([1004, 1005, 1006, 1015]), st.integers(1016, 2999), st.integers(5000, 65535)
)
CLOSE_PAYLOADS = st.one_of(
    st.just(b""),
    st.builds(
        lambda code, reason: code.to_bytes(2, "big") + reason.encode(), SENDABLE_CLOSE_CODES, st.text(max_size=30)
    ),
)
CONTROL_FRAMES = st.one_of(
    st.tuples(st.sampled_from([OP_PING, OP_PONG]), CONTROL_PAYLOADS), st.tuples(st.just(OP_CLOSE), CLOSE_PAYLOADS)
)


@st.composite
def valid_streams(
    draw: st.DrawFn, payloads: st.SearchStrategy[bytes] = PAYLOADS, max_messages: int = 6
) -> Tuple[List[Frame], List[Norm]]:
    """Frames of whole messages (binary or text, whole or fragmented, with control frames between fragments)
    and standalone control frames; and the messages a receiver gets from them, in order."""
    frames: List[Frame] = []
    expected: List[Norm] = []
    for _ in range(draw(st.integers(0, max_messages))):
        if draw(st.integers(0, 3)) == 0:
            op, payload = draw(CONTROL_FRAMES)
            frames.append((True, op, payload))
            expected.append((op, payload))
            continue
        op = draw(st.sampled_from([OP_BINARY, OP_TEXT]))
        payload = draw(payloads)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            frames.append((last, op if i == 0 else OP_CONTINUATION, piece))
            if not last and draw(st.booleans()):  # a control frame may come between fragments
                cop, cpayload = draw(CONTROL_FRAMES)
                frames.append((True, cop, cpayload))
                expected.append((cop, cpayload))
        expected.append((op, payload))
    return frames, expected


def quiet_offsets(frames: Sequence[Frame]) -> List[int]:
    """Stream offsets at which every message so far is complete (no frame, no fragmented message open)."""
    offsets = [0]
    pos = 0
    open_message = False
    for fin, op, payload in frames:
        pos += len(ws_frame_header(len(payload), op, fin=fin)) + len(payload)
        if op in (OP_TEXT, OP_BINARY):
            open_message = not fin
        elif op == OP_CONTINUATION and fin:
            open_message = False
        if not open_message:
            offsets.append(pos)
    return offsets


def cut_lists(size: int) -> st.SearchStrategy[List[int]]:
    """Where to cut a stream of ``size`` bytes (duplicates give empty chunks); byte by byte when small."""
    lists = st.lists(st.integers(0, size), max_size=40)
    if size <= 4096:
        return st.one_of(lists, st.just(list(range(size + 1))))
    return lists


def feed_chunks(
    parser: FrameParser, data: bytes, cuts: Sequence[int], quiet: Sequence[int] = ()
) -> Tuple[List[Norm], Optional[FrameError]]:
    """Feed ``data`` cut at ``cuts``; every message received (also those a FrameError carries) and the error.

    Anything but a FrameError escapes and fails the test. Checks ``buffered`` on the way: never more than was
    fed, and 0 at each offset of ``quiet``.
    """
    out: List[Norm] = []
    bounds = [0, *sorted(cuts), len(data)]
    quiet_set = set(quiet)
    for a, b in zip(bounds, bounds[1:]):
        try:
            out += [norm(m) for m in parser.feed(data[a:b])]
        except FrameError as exc:
            out += [norm(m) for m in exc.messages]
            return out, exc
        assert 0 <= parser.buffered <= b
        if b in quiet_set:
            assert parser.buffered == 0, (b, parser.buffered)
    return out, None


def close_code(err: Optional[FrameError]) -> Optional[int]:
    return None if err is None else err.close_code


@settings(BASE, max_examples=120)
@given(valid_streams(), st.data())
def test_frames_any_split_parses_like_the_whole_stream(stream: Tuple[List[Frame], List[Norm]], data: Any) -> None:
    """Valid frames of any payload length (125/126/65535/65536 length-form boundaries included), fragmented or
    not, cut at any byte boundaries (also byte by byte, also empty chunks): the same messages as fed whole."""
    frames, expected = stream
    wire = encode_frames(frames)
    whole = FrameParser()
    assert [norm(m) for m in whole.feed(wire)] == expected
    assert whole.buffered == 0
    assert whole.saw_control == any(op != OP_BINARY for op, _ in expected)

    parser = FrameParser()
    got, err = feed_chunks(parser, wire, data.draw(cut_lists(len(wire)), "cuts"), quiet_offsets(frames))
    assert err is None
    assert got == expected
    assert parser.buffered == 0


@st.composite
def frame_like(draw: st.DrawFn) -> bytes:
    """Something shaped like a frame, with any first byte (FIN, RSV bits, opcode), masked or not, any length
    form (also non-minimal, and lying), possibly cut short."""
    b0 = draw(st.integers(0, 255))
    masked = draw(st.integers(0, 4)) == 0
    payload = draw(st.binary(max_size=140))
    n = len(payload)
    form = draw(st.sampled_from(["minimal", "16", "64", "lie"]))
    if form == "lie":
        n = draw(st.one_of(st.integers(0, 300), st.integers(0, (1 << 64) - 1)))
        form = "64" if n >= 1 << 16 else "16" if n >= 126 else "minimal"
    if form == "minimal" and n < 126:
        head = bytes([b0, n])
    elif form != "64" and n < 1 << 16:
        head = bytes([b0, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 127]) + n.to_bytes(8, "big")
    if masked:
        head = head[:1] + bytes([head[1] | 0x80]) + head[2:] + draw(st.binary(min_size=4, max_size=4))
    data = head + payload
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


GARBAGE = st.one_of(
    st.binary(max_size=300),
    st.lists(frame_like(), max_size=5).map(b"".join),
    st.tuples(valid_streams(SMALL_PAYLOADS, 3), st.lists(frame_like(), max_size=3)).map(
        lambda t: encode_frames(t[0][0]) + b"".join(t[1])
    ),
)


@settings(BASE, max_examples=300)
@given(GARBAGE, st.one_of(st.none(), st.integers(0, 300)), st.data())
def test_frames_garbage_raises_only_frame_error_whatever_the_split(
    wire: bytes, limit: Optional[int], data: Any
) -> None:
    """Arbitrary bytes: feed() returns or raises FrameError (close code 1002 or 1009), never anything else, and
    how the bytes are cut never changes the messages delivered (those a FrameError carries included) nor the
    error."""
    whole, whole_err = feed_chunks(FrameParser(limit), wire, [])
    chunked, chunked_err = feed_chunks(FrameParser(limit), wire, data.draw(cut_lists(len(wire)), "cuts"))
    assert chunked == whole
    assert close_code(chunked_err) == close_code(whole_err)
    if whole_err is not None:
        assert whole_err.close_code in (CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_TOO_BIG)
        assert str(whole_err)


@settings(BASE, max_examples=150)
@given(valid_streams(SMALL_PAYLOADS, 4), GARBAGE, st.data())
def test_frames_messages_completed_before_a_fault_are_kept(
    stream: Tuple[List[Frame], List[Norm]], garbage: bytes, data: Any
) -> None:
    """Whatever follows a run of whole messages, those messages are delivered (by feed() or on the
    FrameError), however the bytes are cut."""
    frames, expected = stream
    wire = encode_frames(frames) + garbage
    got, _ = feed_chunks(FrameParser(), wire, data.draw(cut_lists(len(wire)), "cuts"))
    assert got[: len(expected)] == expected


def limited_model(frames: Sequence[Frame], limit: int) -> Tuple[List[Norm], bool]:
    """What a receiver with ``max_message_size=limit`` delivers from valid ``frames``, and whether it refuses
    one: a frame larger than the limit, or a fragmented message growing past it."""
    out: List[Norm] = []
    parts: List[bytes] = []
    kind = OP_BINARY
    for fin, op, payload in frames:
        if len(payload) > limit:
            return out, True
        if op >= OP_CLOSE:
            out.append((op, payload))
            continue
        if op != OP_CONTINUATION:
            kind, parts = op, []
        parts.append(payload)
        if sum(map(len, parts)) > limit:
            return out, True
        if fin:
            out.append((kind, b"".join(parts)))
    return out, False


@settings(BASE, max_examples=120)
@given(valid_streams(st.one_of(SMALL_PAYLOADS, sized_payloads(st.sampled_from(BOUNDARY_SIZES))), 5), st.data())
def test_frames_max_message_size_is_enforced(stream: Tuple[List[Frame], List[Norm]], data: Any) -> None:
    """A message (fragments reassembled) or control frame over ``max_message_size`` raises FrameError with
    close code 1009, delivering the messages before it; a message of exactly the limit is accepted."""
    frames, expected = stream
    sizes = [len(p) for _, p in expected] or [0]
    limit = data.draw(st.one_of(st.sampled_from(sizes), st.integers(0, max(sizes) + 1)), "limit")
    wire = encode_frames(frames)
    got, err = feed_chunks(FrameParser(limit), wire, data.draw(cut_lists(len(wire)), "cuts"))
    delivered, refused = limited_model(frames, limit)
    assert got == delivered
    assert close_code(err) == (CLOSE_TOO_BIG if refused else None)
    if not refused:
        assert got == expected


@settings(BASE, max_examples=100)
@given(
    valid_streams(SMALL_PAYLOADS, 3),
    st.integers(0, 70_000),
    st.integers(1, 1 << 20),
    st.sampled_from([OP_BINARY, OP_TEXT, OP_CONTINUATION, OP_PING]),
)
def test_frames_oversized_message_is_refused_from_its_header(
    stream: Tuple[List[Frame], List[Norm]], limit: int, excess: int, opcode: int
) -> None:
    """'A larger one raises FrameError with close code 1009 as soon as its header says so': the header alone,
    in any length form, is enough (a continuation continues an unfinished message). A ping announcing more
    than 125 bytes breaks a rule its first two bytes already show: a protocol error (1002) before any size."""
    frames, expected = stream
    assume(all(len(p) <= limit for _, p in expected))
    size = limit + excess
    opening = ws_frame(b"", OP_BINARY, fin=False) if opcode == OP_CONTINUATION else b""
    header = ws_frame_header(size, opcode)
    with pytest.raises(FrameError) as info:
        FrameParser(limit).feed(encode_frames(frames) + opening + header)
    assert info.value.close_code == (CLOSE_PROTOCOL_ERROR if opcode == OP_PING and size > 125 else CLOSE_TOO_BIG)
    assert [norm(m) for m in info.value.messages] == expected


@st.composite
def violations(draw: st.DrawFn) -> bytes:
    """One frame (or two) breaking RFC 6455 as a server must not."""
    kind = draw(
        st.sampled_from(
            [
                "masked",
                "rsv",
                "data-opcode",
                "control-opcode",
                "fragmented-control",
                "long-control",
                "orphan",
                "new",
                "close-1-byte",
                "close-code",
            ]
        )
    )
    payload = draw(st.binary(max_size=40))
    if kind == "masked":  # a server never masks (RFC 6455 section 5.1)
        opcode = draw(st.sampled_from([OP_BINARY, OP_TEXT, OP_PING, OP_PONG, OP_CLOSE]))
        return encode_frame(True, opcode, payload, mask=draw(st.binary(min_size=4, max_size=4)))
    if kind == "rsv":  # no extension was negotiated
        opcode = draw(st.sampled_from([OP_BINARY, OP_TEXT, OP_PING]))
        return encode_frame(True, opcode, payload, rsv=draw(st.integers(1, 7)))
    if kind == "data-opcode":
        return encode_frame(draw(st.booleans()), draw(st.integers(3, 7)), payload)
    if kind == "control-opcode":
        return encode_frame(True, draw(st.integers(0xB, 0xF)), payload)
    if kind == "fragmented-control":
        return encode_frame(False, draw(CONTROL_OPCODES), payload)
    if kind == "long-control":
        return encode_frame(True, draw(CONTROL_OPCODES), draw(sized_payloads(st.integers(126, 70_000))))
    if kind == "close-1-byte":  # a close body starts with a 2-byte code (RFC 6455 section 5.5.1)
        return encode_frame(True, OP_CLOSE, draw(st.binary(min_size=1, max_size=1)))
    if kind == "close-code":  # a code no endpoint may send (RFC 6455 section 7.4)
        return encode_frame(True, OP_CLOSE, draw(UNSENDABLE_CLOSE_CODES).to_bytes(2, "big") + payload[:100])
    if kind == "orphan":  # a continuation with no message to continue
        return encode_frame(draw(st.booleans()), OP_CONTINUATION, payload)
    # a new data message while a fragmented one is open
    first = encode_frame(False, draw(st.sampled_from([OP_BINARY, OP_TEXT])), payload)
    return first + encode_frame(draw(st.booleans()), draw(st.sampled_from([OP_BINARY, OP_TEXT])), payload)


@settings(BASE, max_examples=200)
@given(valid_streams(SMALL_PAYLOADS, 3), violations(), st.binary(max_size=30), st.data())
def test_frames_protocol_violations_raise_1002_after_the_earlier_messages(
    stream: Tuple[List[Frame], List[Norm]], bad: bytes, tail: bytes, data: Any
) -> None:
    """Masked frames, reserved bits, unknown opcodes, fragmented or >125-byte control frames, a continuation
    without a message, a new message inside a fragmented one, a close frame with a 1-byte body or a code no
    endpoint may send: FrameError 1002, earlier messages kept, however the bytes are cut."""
    frames, expected = stream
    wire = encode_frames(frames) + bad + tail
    splits: List[List[int]] = [[], data.draw(cut_lists(len(wire)), "cuts")]
    for cuts in splits:
        got, err = feed_chunks(FrameParser(), wire, cuts)
        assert err is not None and err.close_code == CLOSE_PROTOCOL_ERROR
        assert got == expected


# ==================================================================================================
# 2. Protobuf-level decoders (avatarsdk/_protocol.py)
# ==================================================================================================


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def protobuf_answer(data: bytes) -> Optional[Tuple[str, bool]]:
    """``(req_id, end)`` as protobuf itself reads ``data`` (None: not an animation message, or not parseable)."""
    try:
        msg = pb.Message.FromString(data)
    except Exception:
        return None
    if msg.type != pb.MESSAGE_SERVER_RESPONSE_ANIMATION:
        return None
    return msg.server_response_animation.req_id, msg.server_response_animation.end


@st.composite
def unknown_fields(draw: st.DrawFn, taken: Sequence[int]) -> bytes:
    """One well-formed field whose number the schema does not declare (``taken`` are the declared ones)."""
    number = draw(st.one_of(st.integers(1, 20), st.integers(1, (1 << 29) - 1)).filter(lambda n: n not in taken))
    wire_type = draw(st.sampled_from([0, 1, 2, 5]))
    if wire_type == 0:
        return tag(number, 0) + varint(draw(st.integers(0, (1 << 64) - 1)))
    if wire_type == 1:
        return tag(number, 1) + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return tag(number, 5) + draw(st.binary(min_size=4, max_size=4))
    payload = draw(st.one_of(st.binary(max_size=300), sized_payloads(st.sampled_from([127, 128, 16383, 16384]))))
    return tag(number, 2) + varint(len(payload)) + payload


ANIMATION_DECLARED = [1, 2, 3]  # ServerResponseAnimation: connection_id, req_id, end
MESSAGE_DECLARED = [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]  # Message: type and the members of the oneof


@st.composite
def animation_messages(draw: st.DrawFn) -> Tuple[bytes, str, bool]:
    """A SERVER_RESPONSE_ANIMATION as the service may send it: the declared fields (set with the generated
    module) and undeclared ones (animation data, avatar id, ...) in any order, also the envelope's."""
    req_id, end = draw(st.text(max_size=40)), draw(st.booleans())
    known = [
        pb.ServerResponseAnimation(connection_id=draw(st.text(max_size=20))).SerializeToString(),
        pb.ServerResponseAnimation(req_id=req_id).SerializeToString(),
        pb.ServerResponseAnimation(end=end).SerializeToString(),
    ]
    inner = draw(st.permutations(known + draw(st.lists(unknown_fields(ANIMATION_DECLARED), max_size=4))))
    body = b"".join(inner)
    envelope = [
        pb.Message(type=pb.MESSAGE_SERVER_RESPONSE_ANIMATION).SerializeToString(),
        tag(6, 2) + varint(len(body)) + body,
    ]
    outer = draw(st.permutations(envelope + draw(st.lists(unknown_fields(MESSAGE_DECLARED), max_size=3))))
    return b"".join(outer), req_id, end


@settings(BASE, max_examples=200)
@given(animation_messages())
def test_peek_and_decode_read_any_animation_message(built: Tuple[bytes, str, bool]) -> None:
    """Any animation message (any req_id, undeclared fields anywhere): both peeks give protobuf's
    (req_id, end), and decode() keeps the exact bytes received."""
    data, req_id, end = built
    assert protobuf_answer(data) == (req_id, end)
    assert peek_animation(data) == (req_id, end)
    assert peek_animation_wire(data) == (req_id, end)
    decoded = decode(data)
    assert decoded == Animation(data=data, req_id=req_id, end=end)


@st.composite
def wire_messages(draw: st.DrawFn, depth: int = 2) -> bytes:
    """Protobuf-ish bytes: fields of declared and undeclared numbers (0 and 2**29 too), every wire type,
    non-minimal varints, length prefixes that lie, nested messages, invalid UTF-8, truncation."""
    fields = []
    if draw(st.booleans()):
        fields.append(tag(1, 0) + varint(pb.MESSAGE_SERVER_RESPONSE_ANIMATION))
    for _ in range(draw(st.integers(0, 4))):
        number = draw(st.sampled_from([0, 1, 1, 2, 3, 4, 5, 6, 6, 6, 7, 11, 12, 15, (1 << 29) - 1, 1 << 29]))
        wire_type = draw(st.sampled_from([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7]))
        head = tag(number, wire_type)
        if wire_type == 0:
            value = varint(draw(st.one_of(st.integers(0, 6), st.integers(0, (1 << 49) - 1))))
            pad = draw(st.integers(0, 2))  # a non-minimal encoding of the same value
            if pad:
                value = value[:-1] + bytes([value[-1] | 0x80]) + b"\x80" * (pad - 1) + b"\x00"
            fields.append(head + value)
        elif wire_type == 1:
            fields.append(head + draw(st.binary(min_size=8, max_size=8)))
        elif wire_type == 5:
            fields.append(head + draw(st.binary(min_size=4, max_size=4)))
        elif wire_type == 2:
            if depth and draw(st.booleans()):
                payload = draw(wire_messages(depth - 1))
            else:
                payload = draw(st.one_of(st.text(max_size=12).map(str.encode), st.binary(max_size=30)))
            size = max(0, len(payload) + draw(st.sampled_from([0, 0, 0, 0, -2, -1, 1, 3])))
            fields.append(head + varint(size) + payload)
        else:
            fields.append(head)
    data = b"".join(draw(st.permutations(fields)))
    if depth == 2 and draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def mutated_animations(draw: st.DrawFn) -> bytes:
    """An animation message with a few bytes overwritten, inserted or cut off."""
    data = bytearray(draw(animation_messages())[0])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["set", "insert", "cut"]))
        if how == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data.insert(at, draw(st.integers(0, 255)))
        else:
            del data[at:]
    return bytes(data)


HOSTILE_MESSAGES = st.one_of(wire_messages(), mutated_animations(), st.binary(max_size=200))


@settings(BASE, max_examples=600)
@given(HOSTILE_MESSAGES)
def test_peeks_never_contradict_protobuf(data: bytes) -> None:
    """Hostile bytes: neither peek raises, and whenever one answers, protobuf parses the same message to the same
    (req_id, end); on anything unusual it returns None and decode() has the last word (its docstring)."""
    reference = protobuf_answer(data)
    for peek in (peek_animation, peek_animation_wire):
        got = peek(data)
        assert got is None or got == reference, (peek.__name__, got, reference)


@settings(BASE, max_examples=500)
@given(st.one_of(HOSTILE_MESSAGES, st.binary(max_size=300), animation_messages().map(lambda t: t[0])))
def test_decode_never_raises_and_agrees_with_protobuf(data: bytes) -> None:
    """decode() of any bytes: Malformed (with their size) exactly when protobuf cannot parse them, an Animation
    holding the very bytes, or another documented result; never an exception."""
    decoded = decode(data)
    try:
        msg: Any = pb.Message.FromString(data)
    except Exception:
        msg = None
    if msg is None:
        assert isinstance(decoded, Malformed)
        assert decoded.size == len(data)
        assert decoded.reason
        return
    if msg.type == pb.MESSAGE_SERVER_RESPONSE_ANIMATION:
        assert isinstance(decoded, Animation)
        assert decoded.data == data
        assert (decoded.req_id, decoded.end) == protobuf_answer(data)
    elif msg.type == pb.MESSAGE_SERVER_CONFIRM_SESSION:
        assert isinstance(decoded, Confirm)
    elif msg.type == pb.MESSAGE_SERVER_ERROR:
        assert isinstance(decoded, ServerErrorMessage)
    elif msg.type == pb.MESSAGE_SERVER_PLAYBACK_STATE:
        assert isinstance(decoded, PlaybackStateMessage)
    else:
        assert decoded == Unknown(type=msg.type)


INT32 = st.integers(-(1 << 31), (1 << 31) - 1)


@st.composite
def other_server_messages(draw: st.DrawFn) -> Tuple[bytes, object]:
    """A server message of another type, built with the generated module, and what decode() must return."""
    kind = draw(st.sampled_from(["confirm", "error", "playback", "unknown"]))
    cid, req_id = draw(st.text(max_size=20)), draw(st.text(max_size=20))
    if kind == "confirm":
        caps = draw(st.lists(st.text(max_size=16), max_size=3))
        msg = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
        msg.server_confirm_session.connection_id = cid
        msg.server_confirm_session.capabilities.extend(caps)
        return msg.SerializeToString(), Confirm(connection_id=cid, capabilities=tuple(caps))
    if kind == "error":
        code, text = draw(INT32), draw(st.text(max_size=40))
        msg = pb.Message(type=pb.MESSAGE_SERVER_ERROR)
        err = msg.server_error
        err.code, err.message, err.connection_id, err.req_id = code, text, cid, req_id
        return msg.SerializeToString(), ServerErrorMessage(code=code, message=text, connection_id=cid, req_id=req_id)
    if kind == "playback":
        state, played, reason = draw(st.integers(0, 4)), draw(st.integers(-(1 << 63), (1 << 63) - 1)), draw(st.text())
        msg = pb.Message(type=pb.MESSAGE_SERVER_PLAYBACK_STATE)
        ps: Any = msg.server_playback_state  # State is an open enum: any int is valid
        ps.state, ps.played_ms, ps.reason, ps.req_id, ps.connection_id = state, played, reason, req_id, cid
        expected = PlaybackStateMessage(req_id=req_id, state=state, played_ms=played, reason=reason, connection_id=cid)
        return msg.SerializeToString(), expected
    known = {pb.MESSAGE_SERVER_CONFIRM_SESSION, pb.MESSAGE_SERVER_ERROR, pb.MESSAGE_SERVER_RESPONSE_ANIMATION}
    known.add(pb.MESSAGE_SERVER_PLAYBACK_STATE)
    number = draw(INT32.filter(lambda n: n not in known))
    unknown: Any = pb.Message()
    unknown.type = number  # MessageType is an open enum: newer servers add types
    return unknown.SerializeToString(), Unknown(type=number)


@settings(BASE, max_examples=150)
@given(other_server_messages())
def test_decode_reads_the_other_server_messages(built: Tuple[bytes, object]) -> None:
    """Confirm, ServerError, PlaybackState and types this SDK does not know (newer servers add them) decode to
    exactly what the generated module put in; the peeks leave them alone."""
    data, expected = built
    assert decode(data) == expected
    assert peek_animation(data) is None
    assert peek_animation_wire(data) is None


@pytest.mark.parametrize(
    "data",
    [
        # An undeclared varint field of 11 bytes: protobuf rejects the message (varints have at most 10
        # bytes); the wire peek's _skip() had no length limit and answered ("r", False).
        b"\x08\x05" + b"\x32\x03\x12\x01r" + b"\x38" + b"\x80" * 10 + b"\x00",
        # end = a 10-byte varint with only bit 64 set: protobuf keeps the low 64 bits (end=False); the wire
        # peek's _varint() kept every bit and answered end=True.
        b"\x08\x05" + b"\x32\x0e\x12\x01r\x18" + b"\x80" * 9 + b"\x02",
    ],
    ids=["11-byte-unknown-varint", "end-flag-bit-64"],
)
def test_wire_peek_never_contradicts_protobuf_on_long_varints(data: bytes) -> None:
    """The contract of peek_animation_wire: an answer is protobuf's answer; unusual bytes give None."""
    got = peek_animation_wire(data)
    assert got is None or got == protobuf_answer(data), (got, protobuf_answer(data))


# ==================================================================================================
# 3. The error classifier (avatarsdk/errors.py)
# ==================================================================================================

PHASES = [
    PHASE_SESSION_TOKEN,
    PHASE_WEBSOCKET_CONNECT,
    PHASE_WEBSOCKET_HANDSHAKE,
    PHASE_WEBSOCKET_SEND,
    PHASE_WEBSOCKET_RUNTIME,
]
WS_PHASES = PHASES[1:]
KNOWN_TEXTS = sorted({t for rule in CLASSIFICATION_RULES for t in rule.texts})
TABLE_CODES = sorted({c for rule in CLASSIFICATION_RULES if len(rule.codes) < 100 for c in rule.codes})
CLOSE_CODES = [1000, 1001, 1002, 1006, 1008, 1011, 1012, 4001, 4002, 4003, 4010, 4503]


@st.composite
def random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(ch.swapcase() if flip and ch.isascii() else ch for ch, flip in zip(text, flips))


@st.composite
def service_texts(draw: st.DrawFn) -> str:
    """Free text, or one of the service's known texts (PROTOCOL.md section 5) in any case, inside free text."""
    if draw(st.booleans()):
        return draw(st.text(max_size=30))
    phrase = draw(random_case(draw(st.sampled_from(KNOWN_TEXTS))))
    return draw(st.text(max_size=8)) + phrase + draw(st.text(max_size=8))


SERVER_CODES = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(TABLE_CODES),
    st.integers(-5, 70_000).map(str),
    st.sampled_from(["INVALID_ARGUMENT", "UNAUTHENTICATED", "UNAVAILABLE", "RESOURCE_EXHAUSTED"]),
    st.text(max_size=12),
)
CLOSE_CODE_VALUES = st.one_of(st.none(), st.sampled_from(CLOSE_CODES), st.integers(0, 70_000))
STATUSES = st.one_of(st.none(), st.integers(100, 599), st.integers(-1000, 10**6))
ANY_PHASE = st.one_of(st.sampled_from(PHASES), st.text(max_size=12))


def lowered_codes(server_code: Optional[str], close_code: Optional[int]) -> Tuple[str, ...]:
    """The codes a rule compares with: both, as strings (ClassificationRule's docstring), absent ones left out."""
    return tuple(str(c) for c in (server_code, close_code) if c is not None and str(c) != "")


@settings(BASE, max_examples=800)
@given(ANY_PHASE, STATUSES, SERVER_CODES, CLOSE_CODE_VALUES, service_texts(), st.booleans())
def test_classify_returns_the_first_matching_row(
    phase: str,
    status: Optional[int],
    server_code: Optional[str],
    close_code: Optional[int],
    text: str,
    transport: bool,
) -> None:
    """For any inputs classify() returns (code, retryable, row) of the FIRST row of CLASSIFICATION_RULES that
    matches (codes compared as strings, text lowercase), or (unknown, False, None) when none does; the code
    is never ``timeout`` (the SDK's own, not the service's)."""
    code, retryable, row = classify(
        phase=phase, http_status=status, server_code=server_code, close_code=close_code, text=text, transport=transport
    )
    assert isinstance(code, AvatarSDKErrorCode)
    assert isinstance(retryable, bool)
    assert code is not C.timeout
    codes = lowered_codes(server_code, close_code)
    matching = [
        i
        for i, rule in enumerate(CLASSIFICATION_RULES)
        if rule.matches(phase=phase, http_status=status, codes=codes, text=text.lower(), transport=transport)
    ]
    if not matching:
        assert (code, retryable, row) == (C.unknown, False, None)
    else:
        assert row == matching[0]
        assert (code, retryable) == (CLASSIFICATION_RULES[row].code, CLASSIFICATION_RULES[row].retryable)
    if transport:  # a network failure is a network failure, whatever else is known
        assert (code, retryable) == (C.connectionFailed, True)
    if phase in (PHASE_WEBSOCKET_HANDSHAKE, PHASE_WEBSOCKET_RUNTIME):  # anything the server said has a code
        assert code is not C.unknown


@settings(BASE, max_examples=400)
@given(ANY_PHASE, STATUSES, SERVER_CODES, CLOSE_CODE_VALUES, service_texts(), st.data())
def test_classify_matches_text_case_insensitively(
    phase: str, status: Optional[int], server_code: Optional[str], close_code: Optional[int], text: str, data: Any
) -> None:
    """The server's text is matched lowercase: changing the case of its letters never changes the result."""
    recased = data.draw(random_case(text), "recased")
    for variant in (recased, text.upper(), text.lower()):
        if variant.lower() != text.lower():
            continue  # str.upper() is not reversible beyond ASCII ("ß" -> "SS"): only same-lowercase variants
        assert classify(
            phase=phase, http_status=status, server_code=server_code, close_code=close_code, text=variant
        ) == classify(phase=phase, http_status=status, server_code=server_code, close_code=close_code, text=text)


@settings(BASE, max_examples=300)
@given(ANY_PHASE, STATUSES, st.integers(-10, 70_000), service_texts(), st.booleans())
def test_classify_compares_codes_as_strings(
    phase: str, status: Optional[int], number: int, text: str, transport: bool
) -> None:
    """A code given as ServerError.code (string) or as a close code (int) classifies the same; an empty
    server code is no code."""
    as_server = classify(phase=phase, http_status=status, server_code=str(number), text=text, transport=transport)
    as_close = classify(phase=phase, http_status=status, close_code=number, text=text, transport=transport)
    assert as_server == as_close
    assert classify(phase=phase, http_status=status, server_code="", text=text) == classify(
        phase=phase, http_status=status, text=text
    )


@settings(BASE, max_examples=300)
@given(STATUSES, SERVER_CODES, CLOSE_CODE_VALUES, service_texts())
def test_classify_ignores_websocket_codes_on_the_token_call(
    status: Optional[int], server_code: Optional[str], close_code: Optional[int], text: str
) -> None:
    """Close codes and ServerError/gRPC codes belong to the WebSocket (PROTOCOL.md sections 2 and 4): on the
    token call they never change the classification."""
    assert classify(
        phase=PHASE_SESSION_TOKEN, http_status=status, server_code=server_code, close_code=close_code, text=text
    ) == classify(phase=PHASE_SESSION_TOKEN, http_status=status, text=text)


def letterless_texts(max_size: int = 30) -> st.SearchStrategy[str]:
    """Text that cannot hold any of the service's known texts, in any case: no cased letters (digits,
    punctuation, spaces, caseless scripts)."""
    return st.text(st.characters(categories=["Nd", "P", "S", "Zs", "Lo"]), max_size=max_size)


@settings(BASE, max_examples=300)
@given(
    st.sampled_from([PHASE_SESSION_TOKEN, PHASE_WEBSOCKET_CONNECT]),
    st.integers(400, 599),
    letterless_texts(),
)
def test_classify_http_statuses(phase: str, status: int, plain: str) -> None:
    """Token call and WebSocket upgrade rejections (docs/GUIDE.md 'Retries', PROTOCOL.md sections 1, 2 and 4): with
    nothing more specific said, 5xx is a retryable serverError and 429 a retryable concurrencyLimit; any other
    4xx is a final answer, never retryable, never a server error."""
    code, retryable, _ = classify(phase=phase, http_status=status, text=plain)
    if status >= 500:
        assert (code, retryable) == (C.serverError, True)
    elif status == 429:
        assert (code, retryable) == (C.concurrencyLimit, True)
    else:
        assert retryable is False
        assert code not in (C.serverError, C.unknown, C.connectionFailed)


CLOSE_MEANINGS = {  # PROTOCOL.md section 4
    4001: (C.creditsExhausted, False),
    4002: (C.sessionDurationExceeded, True),
    4003: (C.concurrencyLimit, False),
    4503: (C.upstreamError, True),
}


@settings(BASE, max_examples=300)
@given(
    st.sampled_from(WS_PHASES),
    st.sampled_from([4001, 4002, 4003, 4010, 4503]),
    st.booleans(),
    STATUSES,
    service_texts(),
)
def test_classify_service_close_codes(
    phase: str, number: int, as_server_code: bool, status: Optional[int], text: str
) -> None:
    """The newer generation's close codes (also sent as ServerError.code) mean the same whatever else is said:
    4002 and 4503 are worth retrying with a new session, the other 40xx are not (PROTOCOL.md section 4), but
    for 4003 refusing a start (before the confirmation): a session ending frees a slot, as after a 429."""
    kwargs: Any = {"server_code": str(number)} if as_server_code else {"close_code": number}
    code, retryable, _ = classify(phase=phase, http_status=status, text=text, **kwargs)
    if number == 4010:  # auth failed: the token expired or is invalid
        assert code in (C.sessionTokenExpired, C.sessionTokenInvalid)
        assert retryable is False
        assert (code is C.sessionTokenExpired) == ("expired" in text.lower())
    elif number == 4003 and phase in ("websocket_connect", "websocket_handshake"):
        assert (code, retryable) == (C.concurrencyLimit, True)
    else:
        assert (code, retryable) == CLOSE_MEANINGS[number]


@settings(BASE, max_examples=300)
@given(st.sampled_from(WS_PHASES), st.integers(1000, 4999), letterless_texts())
def test_classify_connection_closes(phase: str, number: int, plain: str) -> None:
    """A WebSocket close with nothing more specific said is never ``unknown``; 1006/1011 drops are worth
    retrying (PROTOCOL.md section 4), a normal close (1000) is not."""
    code, retryable, _ = classify(phase=phase, close_code=number, text=plain)
    assert code is not C.unknown
    if number in (1006, 1011):
        assert (code, retryable) == (C.connectionClosed, True)
    if number == 1000:
        assert (code, retryable) == (C.connectionClosed, False)


# ==================================================================================================
# 4. The token response (avatarsdk/_token.py: parse_token_response)
# ==================================================================================================

RAW_BODY_LIMIT = 64 * 1024
MiB = 1 << 20

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
STATUS_VALUES = st.one_of(
    st.sampled_from([400, 401, 402, 403, 404, 409, 429, 500, 502, 503, "429", "503", "400", "4O4", " 500 ", True]),
    st.integers(),
    JSON_VALUES,
)
ERROR_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "status": STATUS_VALUES,
        "code": st.one_of(st.sampled_from(["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"]), JSON_VALUES),
        "id": JSON_VALUES,
        "error": JSON_VALUES,
        "title": JSON_VALUES,
        "detail": st.one_of(service_texts(), JSON_VALUES),
        "message": st.one_of(service_texts(), JSON_VALUES),
    },
)
ERROR_DOCUMENTS = st.fixed_dictionaries(
    {"errors": st.one_of(st.lists(st.one_of(ERROR_OBJECTS, JSON_VALUES), max_size=3), JSON_VALUES)},
    optional={"sessionToken": st.one_of(st.text(max_size=20), JSON_VALUES)},
)
TOKEN_DOCUMENTS = st.fixed_dictionaries(
    {"sessionToken": st.one_of(st.text(max_size=40), st.text(string.ascii_letters + "-_.", min_size=1), JSON_VALUES)},
    optional={"errors": st.one_of(st.just([]), st.lists(ERROR_OBJECTS, max_size=2), JSON_VALUES), "x": JSON_VALUES},
)


def serialise(value: object, ensure_ascii: bool, tail: bytes) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode() + tail


def json_bodies(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """JSON of ``values``, ASCII-escaped or not, sometimes followed by junk (invalid UTF-8, a second value)."""
    return st.builds(serialise, values, st.booleans(), st.sampled_from([b"", b"", b"", b"\xff", b" {}", b"\n"]))


BODIES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    service_texts().map(str.encode),
    json_bodies(JSON_VALUES),
    json_bodies(ERROR_DOCUMENTS),
    json_bodies(TOKEN_DOCUMENTS),
    st.builds(fill, st.integers(RAW_BODY_LIMIT - 3, RAW_BODY_LIMIT + 3), st.sampled_from([b"x", b"\xc3\xa9", b"\xff"])),
)
HTTP_STATUSES = st.one_of(st.just(200), st.sampled_from([400, 401, 403, 404, 429, 500, 503]), st.integers(100, 599))


def parsed_document(body: bytes) -> Any:
    """The body as JSON, read as docs/GUIDE.md says bodies are (UTF-8, invalid bytes replaced); None if not JSON."""
    try:
        return json.loads(body.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None


def outcome(status: int, body: bytes, secrets: Tuple[str, ...] = ()) -> Any:
    """parse_token_response's token, or its SessionTokenError; any other exception fails the test."""
    try:
        return parse_token_response(status, body, secrets=secrets)
    except SessionTokenError as err:
        return err


def error_texts(err: SessionTokenError) -> List[str]:
    """Everything of an error that reaches a log, a repr or the application."""
    fields = (err.message, err.raw_body, err.server_code, err.server_title, err.server_detail, err.close_reason)
    return [str(err), repr(err), *(f for f in fields if f is not None), *(str(a) for a in err.args)]


@settings(BASE, max_examples=400)
@given(HTTP_STATUSES, BODIES)
@example(200, b'{"sessionToken": "' + b"t" * MiB + b'"}').via("a 1 MiB token")
@example(500, b"e" * MiB).via("a 1 MiB plain-text body")
@example(200, b"[" * 100_000 + b"]" * 100_000).via("JSON nested past the recursion limit")
@example(503, b'{"errors": [{"detail": ' + b"[" * 950 + b"]" * 950 + b"}]}").via("a deeply nested detail")
@example(200, b'{"errors": [{"status": "NaN"}, 1]}').via("an unusable status")
@example(200, b'{"errors": [{"status": 1e400}]}').via("an infinite status")
def test_token_response_gives_a_token_or_a_session_token_error(status: int, body: bytes) -> None:
    """Any body (not JSON, huge, not UTF-8, JSON of any shape, JSON:API error documents): a token or a
    SessionTokenError with a code and the documented context, never another exception. A token comes only from
    a 200 whose JSON object has a non-empty sessionToken string usable in a header and no errors; a 200 that
    is not an error document but holds no usable token is a protocolError; a non-200 status is reported
    as it came."""
    got = outcome(status, body)
    document = parsed_document(body)
    is_error_document = isinstance(document, dict) and bool(document.get("errors"))
    if isinstance(got, str):
        assert status == 200
        assert isinstance(document, dict) and not is_error_document
        assert document["sessionToken"] == got != ""
        assert all(ord(ch) > 0x20 and ch != "\x7f" for ch in got)
        return
    assert isinstance(got, SessionTokenError)
    assert isinstance(got.code, AvatarSDKErrorCode)
    assert got.phase == PHASE_SESSION_TOKEN
    assert isinstance(got.http_status, int)
    assert isinstance(got.retryable, bool)
    assert str(got) == f"{got.code.value}: {got.message}"
    assert got.raw_body is None or 0 < len(got.raw_body) <= RAW_BODY_LIMIT
    for text in error_texts(got):
        assert isinstance(text, str)
    if status != 200:
        assert got.http_status == status
    elif not is_error_document:
        assert (got.code, got.retryable, got.http_status) == (C.protocolError, False, 200)
    if 400 <= got.http_status < 500 and got.http_status != 429:  # RetryPolicy: never another 4xx
        assert _worth_retrying(got) is False


# Shaped like real keys (no "*": that is the redaction mark), so no fixed text of an error can hold one.
API_KEYS = st.text(string.ascii_letters + string.digits + "-_.", min_size=12, max_size=40).map(lambda k: "sk-" + k)


@st.composite
def bodies_echoing(draw: st.DrawFn, key: str) -> bytes:
    """A response body with ``key`` in it anywhere: plain text, any JSON:API field, a JSON object key, a
    nested detail, the sessionToken itself, a body past the 64 KiB that raw_body keeps."""
    around = st.text(max_size=20)

    def echo() -> str:
        return draw(around) + key + draw(around)

    shape = draw(st.sampled_from(["plain", "jsonapi", "flat", "object-key", "nested", "token", "large"]))
    if shape == "plain":
        value: Any = echo()
    elif shape == "jsonapi":
        error = {name: echo() for name in draw(st.sets(st.sampled_from(["code", "id", "title", "detail"]), min_size=1))}
        error["status"] = draw(STATUS_VALUES)
        value = {"errors": [error]}
    elif shape == "flat":
        value = {draw(st.sampled_from(["code", "error", "message", "detail"])): echo()}
    elif shape == "object-key":
        value = {"errors": [{"detail": {echo(): draw(JSON_VALUES)}, "code": {"k": [echo()]}}]}
    elif shape == "nested":
        value = {"errors": [{"title": [echo(), {"x": echo()}], "status": draw(STATUS_VALUES)}]}
    elif shape == "token":
        value = {"sessionToken": echo(), **draw(st.fixed_dictionaries({}, optional={"errors": JSON_VALUES}))}
    else:
        text = "." * draw(st.integers(RAW_BODY_LIMIT - 2 * len(key), RAW_BODY_LIMIT - len(key))) + key
        return text.encode() + draw(st.binary(max_size=5))
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode()


@settings(BASE, max_examples=300)
@given(st.sampled_from([200, 400, 401, 403, 429, 500, 502]), API_KEYS, st.data())
def test_token_errors_never_show_the_api_key(status: int, key: str, data: Any) -> None:
    """Whatever the service echoes, the API key never appears in the error's message, str, repr, server texts
    or raw_body (docs/GUIDE.md 'Logging and secrets'); parsing is done on the body as received."""
    body = data.draw(bodies_echoing(key), "body")
    got = outcome(status, body, secrets=(key, ""))
    if isinstance(got, str):
        assert got == outcome(status, body)  # the key was not removed before parsing
        return
    for text in error_texts(got):
        assert key not in text


@pytest.mark.parametrize(
    ("prefix", "where"),
    [(1000 - 8, "message"), (RAW_BODY_LIMIT - 8, "raw_body")],
    ids=["detail-at-1000-chars", "raw-body-at-64-KiB"],
)
def test_token_errors_never_show_part_of_the_api_key(prefix: int, where: str) -> None:
    """A plain-text body is cut to 1,000 characters for server_detail (and the message), and every body to
    64 KiB for raw_body: an echoed key straddling the cut must not leave its first characters in the error
    (the key is replaced by *** before the cut)."""
    key = "AK7F3Q9ZX2M4W8P6"
    got = outcome(500, b"." * prefix + key.encode(), secrets=(key,))
    assert isinstance(got, SessionTokenError)
    for text in error_texts(got):
        assert key[:8] not in text, where


TOKENS = st.text(string.ascii_uppercase + string.digits, min_size=8, max_size=40)
HEADER_BREAKERS = st.sampled_from([" ", "\t", "\r", "\n", "\r\n", "\x00", "\x1f", "\x7f", "\x0b", "\x0c"])


@settings(BASE, max_examples=200)
@given(TOKENS, HEADER_BREAKERS, st.data(), st.booleans())
def test_a_token_unusable_in_a_header_is_refused_and_never_echoed(
    token: str, breaker: str, data: Any, ensure_ascii: bool
) -> None:
    """A 200 whose sessionToken holds whitespace or a control character: a protocolError, and the token (which
    may be valid) appears nowhere in the error."""
    at = data.draw(st.integers(0, len(token)), "at")
    bad = token[:at] + breaker + token[at:]
    body = json.dumps({"sessionToken": bad, "note": "ok"}, ensure_ascii=ensure_ascii).encode()
    got = outcome(200, body)
    assert isinstance(got, SessionTokenError)
    assert got.code is C.protocolError
    # Pieces shorter than 4 characters can occur by chance ("00" in "http_status=200"); tokens have at least 8.
    pieces = [piece for piece in (token, token[:at], token[at:]) if len(piece) >= 4]
    for text in error_texts(got):
        for piece in pieces:
            assert piece not in text


@settings(BASE, max_examples=300)
@given(
    st.sampled_from([200, 400, 401, 402, 403, 404, 409, 418, 429, 500, 502, 503, 504]),
    st.one_of(st.none(), STATUS_VALUES),
    st.one_of(service_texts(), JSON_VALUES),
)
def test_token_errors_follow_the_retry_rules(status: int, doc_status: Any, detail: Any) -> None:
    """RetryPolicy: 'connection failures, 5xx and 429 only (never another 4xx)'. An error whose status (the
    HTTP one, or a 200 error document's own) is a 4xx other than 429 is never retried, whatever the body says."""
    error: Any = {"code": "X", "detail": detail}
    if doc_status is not None:
        error["status"] = doc_status
    got = outcome(status, json.dumps({"errors": [error]}).encode())
    assert isinstance(got, SessionTokenError)
    effective = got.http_status
    assert effective is not None
    if status != 200:
        assert effective == status
    if 400 <= effective < 500 and effective != 429:
        assert _worth_retrying(got) is False


@settings(BASE, max_examples=200)
@given(st.one_of(st.just(429), st.integers(500, 599)), letterless_texts(60), st.booleans())
def test_token_5xx_and_429_are_retried_unless_the_body_says_more(status: int, text: str, as_json: bool) -> None:
    """A 5xx or a 429 whose body names none of the service's known conditions (PROTOCOL.md section 5) is
    retryable, and the retry loop retries it."""
    body = json.dumps({"errors": [{"detail": text, "status": status}]}) if as_json else text
    got = outcome(status, body.encode())
    assert isinstance(got, SessionTokenError)
    assert got.retryable is True
    assert _worth_retrying(got) is True
    assert got.code is (C.concurrencyLimit if status == 429 else C.serverError)


@settings(BASE, max_examples=100)
@given(valid_streams(SMALL_PAYLOADS, 3), SENDABLE_CLOSE_CODES, st.binary(min_size=1, max_size=60), st.data())
def test_frames_a_close_reason_that_is_not_utf8_raises_1007(
    stream: Tuple[List[Frame], List[Norm]], code: int, reason: bytes, data: Any
) -> None:
    """A close reason must be UTF-8 (RFC 6455 section 5.5.1): otherwise FrameError 1007, earlier messages kept."""
    try:
        reason.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        reason = b"\xff" + reason[:59]
    frames, expected = stream
    wire = encode_frames(frames) + encode_frame(True, OP_CLOSE, code.to_bytes(2, "big") + reason)
    got, err = feed_chunks(FrameParser(), wire, data.draw(cut_lists(len(wire)), "cuts"))
    assert err is not None and err.close_code == CLOSE_INVALID_DATA
    assert got == expected
