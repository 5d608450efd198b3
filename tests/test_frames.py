"""The receive side's WebSocket frame parser (avatarsdk._frames), without sockets."""

from __future__ import annotations

import random
from typing import List, Optional, Union

import pytest

from avatarsdk._frames import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Control,
    FrameError,
    FrameParser,
)
from avatarsdk.testing.wire import ws_frame as frame  # a server-to-client frame, encoded by hand


def feed_in_pieces(parser: FrameParser, data: bytes, rng: random.Random) -> List[Union[bytes, Control]]:
    out: List[Union[bytes, Control]] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 9, 125, 126, 1400, 65536, 262144])
        out += parser.feed(data[pos : pos + step])
        pos += step
    return out


PAYLOADS = [b"", b"a", b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536, b"v" * 200_000] + [
    bytes([i]) * (i * 37) for i in range(1, 60)
]


@pytest.mark.parametrize("seed", range(20))
def test_messages_survive_any_split_of_the_stream(seed: int) -> None:
    rng = random.Random(seed)
    stream = b"".join(frame(p) for p in PAYLOADS)
    parser = FrameParser()
    assert feed_in_pieces(parser, stream, rng) == PAYLOADS
    assert parser.buffered == 0


def test_large_message_arriving_in_small_pieces_is_joined_once() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    parser = FrameParser()
    data = frame(payload)
    out = []
    for i in range(0, len(data), 1000):
        out += parser.feed(data[i : i + 1000])
        if i + 1000 < len(data):
            assert parser.buffered == i + 1000  # pieces are kept, not re-joined on every feed
    assert out == [payload]


def test_control_frames_and_text_come_out_in_order() -> None:
    parser = FrameParser()
    stream = (
        frame(b"one")
        + frame(b"hi", OP_PING)
        + frame(b"t", OP_TEXT)
        + frame(b"", OP_PONG)
        + frame(b"\x03\xe8bye", OP_CLOSE)
    )
    out = parser.feed(stream)
    assert out[0] == b"one"
    assert [(m.opcode, m.payload) for m in out[1:] if isinstance(m, Control)] == [
        (OP_PING, b"hi"),
        (OP_TEXT, b"t"),
        (OP_PONG, b""),
        (OP_CLOSE, b"\x03\xe8bye"),
    ]
    assert parser.saw_control


def test_fragmented_message_is_reassembled_around_a_ping() -> None:
    parser = FrameParser()
    stream = frame(b"ab", fin=False) + frame(b"!", OP_PING) + frame(b"cd", 0, fin=False) + frame(b"ef", 0)
    out = parser.feed(stream)
    assert isinstance(out[0], Control) and out[0].opcode == OP_PING
    assert out[1:] == [b"abcdef"]


def test_binary_fast_path_is_not_taken_while_a_message_is_fragmented() -> None:
    parser = FrameParser()
    with pytest.raises(FrameError, match="before the fragmented one ended"):
        parser.feed(frame(b"ab", fin=False) + frame(b"new"))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (frame(b"x", mask=True), "masked"),
        (frame(b"x", rsv=1), "reserved"),
        (frame(b"x", opcode=3), "unknown data opcode"),
        (frame(b"x", opcode=0xB), "unknown control opcode"),
        (frame(b"x", opcode=0), "continuation frame without"),
        (frame(b"p" * 126, OP_PING), "control frame"),
        (frame(b"p", OP_PING, fin=False), "control frame"),
    ],
)
def test_framing_violations_raise(data: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match) as info:
        FrameParser().feed(data)
    assert info.value.close_code == 1002


def test_oversized_message_is_refused_from_its_header() -> None:
    parser = FrameParser(max_message_size=1000)
    assert parser.feed(frame(b"k" * 1000)) == [b"k" * 1000]
    with pytest.raises(FrameError) as info:
        parser.feed(frame(b"k" * 1001)[:4])  # the header alone is enough to refuse it
    assert info.value.close_code == 1009


def test_oversized_fragmented_message_is_refused() -> None:
    parser = FrameParser(max_message_size=10)
    with pytest.raises(FrameError) as info:
        parser.feed(frame(b"123456", fin=False) + frame(b"789012", 0))
    assert info.value.close_code == 1009


def test_messages_before_a_fault_are_kept() -> None:
    parser = FrameParser(max_message_size=100)
    with pytest.raises(FrameError) as info:
        parser.feed(frame(b"first") + frame(b"second") + frame(b"x" * 101))
    assert info.value.messages == [b"first", b"second"]


# --------------------------------------------------------------------------------------------------
# Each check as soon as the bytes it needs are there (a server that then goes quiet must not hang us)
# --------------------------------------------------------------------------------------------------


def first_fault(parser: FrameParser, data: bytes) -> int:
    """Feed ``data`` one byte at a time; the index of the byte whose feed() raised (-1: none did)."""
    for i in range(len(data)):
        try:
            assert parser.feed(data[i : i + 1]) == []
        except FrameError:
            return i
    return -1


TOP_BIT_64 = bytes.fromhex("817f8080808080808080")  # a 64-bit length with its top bit set (RFC 6455 5.2)


@pytest.mark.parametrize("limit", [None, 1000])
def test_64_bit_length_with_the_top_bit_set_is_a_protocol_error(limit: Optional[int]) -> None:
    with pytest.raises(FrameError) as info:
        FrameParser(limit).feed(TOP_BIT_64)
    assert info.value.close_code == 1002
    assert str(info.value) == "64-bit payload length with the most significant bit set"


@pytest.mark.parametrize("length", [1 << 63, (1 << 64) - 1])
def test_64_bit_top_bit_is_refused_at_the_tenth_byte(length: int) -> None:
    header = bytes([0x82, 127]) + length.to_bytes(8, "big")
    assert first_fault(FrameParser(), header + b"payload") == 9
    assert first_fault(FrameParser(1 << 20), header + b"payload") == 9


def test_largest_64_bit_length_is_awaited_without_a_limit_and_refused_with_one() -> None:
    header = bytes([0x82, 127]) + ((1 << 63) - 1).to_bytes(8, "big")
    parser = FrameParser()
    assert parser.feed(header + b"some of it") == []
    assert parser.buffered == 20
    with pytest.raises(FrameError) as info:
        FrameParser(1 << 30).feed(header)
    assert info.value.close_code == 1009


# Headers that the first two bytes condemn, whatever follows: (bytes, what the error says).
BAD_STARTS = [
    ("ffff", "masked frame or reserved bits from the server"),
    ("c27e", "masked frame or reserved bits from the server"),  # RSV1
    ("a205", "masked frame or reserved bits from the server"),  # RSV2
    ("9205", "masked frame or reserved bits from the server"),  # RSV3
    ("82fe", "masked frame or reserved bits from the server"),
    ("8285", "masked frame or reserved bits from the server"),
    ("8f7e", "unknown control opcode 0xf"),
    ("8b05", "unknown control opcode 0xb"),
    ("837f", "unknown data opcode 0x3"),
    ("8705", "unknown data opcode 0x7"),
    ("0705", "unknown data opcode 0x7"),
    ("897e", "fragmented or oversized control frame"),  # 126: a 16-bit length follows, so > 125 (or not minimal)
    ("887f", "fragmented or oversized control frame"),
    ("8a7e", "fragmented or oversized control frame"),
    ("0900", "fragmented or oversized control frame"),
    ("087d", "fragmented or oversized control frame"),
    ("8005", "continuation frame without a message to continue"),
    ("007e", "continuation frame without a message to continue"),
    ("007f", "continuation frame without a message to continue"),
]


@pytest.mark.parametrize(("start", "message"), BAD_STARTS)
def test_a_header_condemned_by_its_first_two_bytes_is_refused_at_the_second(start: str, message: str) -> None:
    data = bytes.fromhex(start) + bytes(12)  # the rest of any header form, and some payload
    parser = FrameParser(max_message_size=4)  # a 1009 would need more bytes: the 1002 comes first
    assert first_fault(parser, data) == 1
    with pytest.raises(FrameError) as info:
        FrameParser().feed(bytes.fromhex(start))
    assert info.value.close_code == 1002
    assert str(info.value) == message


def test_the_examples_from_two_bytes() -> None:
    for start in ("ffff", "8f7e", "c27e", "82fe", "897e00c8"):
        with pytest.raises(FrameError) as info:
            FrameParser().feed(bytes.fromhex(start)[:2])
        assert info.value.close_code == 1002, start


@pytest.mark.parametrize("start", ["8205", "027e", "8105", "017f"])
def test_a_new_data_frame_inside_a_fragmented_message_is_refused_at_its_second_byte(start: str) -> None:
    parser = FrameParser()
    assert parser.feed(frame(b"ab", fin=False)) == []
    assert first_fault(parser, bytes.fromhex(start) + bytes(12)) == 1
    parser = FrameParser()
    with pytest.raises(FrameError) as info:
        parser.feed(frame(b"ab", fin=False) + bytes.fromhex(start))
    assert info.value.close_code == 1002
    assert str(info.value) == "new message before the fragmented one ended"


def test_a_continuation_after_a_finished_fragmented_message_is_refused_at_its_second_byte() -> None:
    parser = FrameParser()
    assert parser.feed(frame(b"ab", fin=False) + frame(b"cd", 0)) == [b"abcd"]
    assert first_fault(parser, frame(b"ef", 0)) == 1


@pytest.mark.parametrize(
    ("size", "fault_at"),
    [(5, 1), (125, 1), (126, 3), (65535, 3), (65536, 9)],  # the byte that completes the length
)
def test_a_continuation_growing_the_message_past_the_limit_is_refused_from_its_header(size: int, fault_at: int) -> None:
    limit = 6 + size - 1
    parser = FrameParser(max_message_size=limit)
    assert parser.feed(frame(b"123456", fin=False)) == []
    header = frame(bytes(size), 0)[: {1: 2, 3: 4, 9: 10}[fault_at]]
    assert first_fault(parser, header) == fault_at
    with pytest.raises(FrameError) as info:
        FrameParser(max_message_size=limit).feed(frame(b"123456", fin=False) + header)
    assert info.value.close_code == 1009
    assert str(info.value) == f"fragmented message of {6 + size} bytes exceeds the {limit}-byte limit"


def test_a_continuation_reaching_exactly_the_limit_is_accepted() -> None:
    parser = FrameParser(max_message_size=12)
    stream = frame(b"1234", fin=False) + frame(b"5678", 0, fin=False) + frame(b"9abc", 0)
    assert feed_in_pieces(parser, stream, random.Random(3)) == [b"123456789abc"]
    with pytest.raises(FrameError) as info:
        FrameParser(max_message_size=11).feed(stream)
    assert str(info.value) == "fragmented message of 12 bytes exceeds the 11-byte limit"


def test_oversized_message_error_says_the_size_and_the_limit() -> None:
    with pytest.raises(FrameError) as info:
        FrameParser(max_message_size=1000).feed(frame(b"k" * 1001)[:4])
    assert str(info.value) == "message of 1001 bytes exceeds the 1000-byte limit"


def test_the_length_checks_come_at_the_byte_that_completes_the_length() -> None:
    assert first_fault(FrameParser(1000), frame(b"k" * 1001)) == 3
    assert first_fault(FrameParser(70_000), frame(b"k" * 70_001)) == 9
    assert first_fault(FrameParser(100), frame(b"k" * 101)) == 1


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (bytes.fromhex("c27e"), 1002),
        (bytes.fromhex("8f"), None),  # half a header: nothing to refuse yet, nothing lost
        (TOP_BIT_64, 1002),
        (bytes.fromhex("897e00c8"), 1002),
        (frame(b"x", opcode=0)[:2], 1002),
    ],
    ids=["rsv1", "half-a-header", "64-bit-top-bit", "long-ping", "orphan-continuation"],
)
def test_messages_before_an_early_fault_are_kept(bad: bytes, code: Optional[int]) -> None:
    good = frame(b"first") + frame(b"!", OP_PING) + frame(b"second")
    expected = [b"first", b"!", b"second"]
    if code is None:
        assert [m if isinstance(m, bytes) else m.payload for m in FrameParser().feed(good + bad)] == expected
        return
    with pytest.raises(FrameError) as info:
        FrameParser().feed(good + bad)
    assert info.value.close_code == code
    assert [m if isinstance(m, bytes) else m.payload for m in info.value.messages] == expected


def test_messages_before_an_early_fault_in_a_later_feed_are_kept() -> None:
    big = frame(b"0123456789")
    parser = FrameParser(max_message_size=10)
    assert parser.feed(big[:5]) == []
    with pytest.raises(FrameError) as info:
        parser.feed(big[5:] + frame(b"next") + frame(b"12345", fin=False) + frame(b"678901", 0)[:2])
    assert info.value.close_code == 1009
    assert info.value.messages == [b"0123456789", b"next"]


# --------------------------------------------------------------------------------------------------
# State the caller sees, close frame bodies, and the boundaries of each rule
# --------------------------------------------------------------------------------------------------


def test_a_new_parser_holds_nothing_and_has_seen_no_control() -> None:
    parser = FrameParser()
    assert parser.buffered == 0
    assert parser.saw_control is False
    assert parser.feed(frame(b"bin") + frame(b"ary")) == [b"bin", b"ary"]
    assert parser.saw_control is False  # binary messages only


def test_a_text_message_alone_sets_saw_control() -> None:
    parser = FrameParser()
    out = parser.feed(frame(b"hello", OP_TEXT))
    assert [(m.opcode, m.payload) for m in out if isinstance(m, Control)] == [(OP_TEXT, b"hello")]
    assert parser.saw_control is True


def test_a_frame_error_made_elsewhere_carries_no_messages() -> None:
    err = FrameError("bad")
    assert (str(err), err.close_code, err.messages) == ("bad", 1002, [])


@pytest.mark.parametrize("opcode", [OP_TEXT, 2])
def test_a_fragmented_message_is_counted_while_open_and_released_whole(opcode: int) -> None:
    parser = FrameParser()
    assert parser.feed(frame(b"abc", opcode, fin=False)) == []
    assert parser.buffered == 3
    assert parser.feed(frame(b"de", 0, fin=False) + frame(b"f", 0)[:1]) == []
    assert parser.buffered == 6  # 5 bytes of fragments, 1 byte of the next frame's header
    out = parser.feed(frame(b"f", 0)[1:])
    assert parser.buffered == 0
    if opcode == OP_TEXT:
        assert [(m.opcode, m.payload) for m in out if isinstance(m, Control)] == [(OP_TEXT, b"abcdef")]
    else:
        assert out == [b"abcdef"]
    assert parser.feed(frame(b"gh", opcode, fin=False) + frame(b"i", 0)) != []  # a second one after it
    assert parser.buffered == 0


def test_a_control_frame_inside_a_fragmented_message_counts_against_the_limit_alone() -> None:
    parser = FrameParser(max_message_size=10)
    stream = frame(b"12345678", fin=False) + frame(b"pingpayload"[:5], OP_PING) + frame(b"90", 0)
    out = parser.feed(stream)
    assert [m.payload for m in out if isinstance(m, Control)] == [b"pingp"]
    assert out[-1] == b"1234567890"


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG])
def test_a_control_frame_of_125_bytes_is_accepted(opcode: int) -> None:
    out = FrameParser().feed(frame(b"c" * 125, opcode))
    assert [(m.opcode, m.payload) for m in out if isinstance(m, Control)] == [(opcode, b"c" * 125)]


def test_a_masked_frame_with_an_empty_payload_is_refused() -> None:
    with pytest.raises(FrameError, match="masked"):
        FrameParser().feed(bytes([0x82, 0x80]))


@pytest.mark.parametrize("size", [126, 65535, 65536, 200_000])
def test_a_frame_header_cut_right_after_an_earlier_frame(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = frame(b"first") + frame(payload)
    header_end = 7 + (4 if size < 1 << 16 else 10)
    for cut in range(7, header_end + 1):  # anywhere in the second frame's header
        parser = FrameParser()
        assert parser.feed(data[:cut]) == [b"first"]
        assert parser.feed(data[cut:]) == [payload]


def test_a_half_read_64_bit_length_is_not_acted_on() -> None:
    header = frame(bytes(1 << 20))[:10]  # its first 7 length bytes alone would read as 4096
    parser = FrameParser(max_message_size=1000)
    assert parser.feed(frame(b"ok") + header[:9]) == [b"ok"]
    with pytest.raises(FrameError) as info:
        parser.feed(header[9:])
    assert str(info.value) == f"message of {1 << 20} bytes exceeds the 1000-byte limit"


# Close codes an endpoint may send (RFC 6455 7.4): 1000-1003, 1007-1014, 3000-4999; the boundaries of each range.
SENDABLE = [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1013, 1014, 3000, 3001, 4000, 4998, 4999]
NOT_SENDABLE = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


@pytest.mark.parametrize("code", SENDABLE)
def test_a_close_frame_with_a_sendable_code_is_delivered(code: int) -> None:
    for body in (code.to_bytes(2, "big"), code.to_bytes(2, "big") + "bye ✓".encode()):
        out = FrameParser().feed(frame(body, OP_CLOSE))
        assert [(m.opcode, m.payload) for m in out if isinstance(m, Control)] == [(OP_CLOSE, body)]


@pytest.mark.parametrize("code", NOT_SENDABLE)
def test_a_close_frame_with_a_code_no_endpoint_may_send_is_refused(code: int) -> None:
    with pytest.raises(FrameError) as info:
        FrameParser().feed(frame(b"ok") + frame(code.to_bytes(2, "big") + b"reason", OP_CLOSE))
    assert (str(info.value), info.value.close_code) == (f"close code {code} may not be sent", 1002)
    assert info.value.messages == [b"ok"]


def test_an_empty_close_frame_is_delivered() -> None:
    out = FrameParser().feed(frame(b"", OP_CLOSE))
    assert [(m.opcode, m.payload) for m in out if isinstance(m, Control)] == [(OP_CLOSE, b"")]


def test_a_close_frame_with_a_1_byte_body_is_refused() -> None:
    with pytest.raises(FrameError) as info:
        FrameParser().feed(frame(b"\x03", OP_CLOSE))
    assert (str(info.value), info.value.close_code) == ("close frame with a 1-byte body", 1002)


@pytest.mark.parametrize("reason", [b"\xff", b"\xc3", b"ok\xff", b"\xe2\x9c"])
def test_a_close_reason_that_is_not_utf8_is_refused_with_1007(reason: bytes) -> None:
    with pytest.raises(FrameError) as info:
        FrameParser().feed(frame(b"\x03\xe8" + reason, OP_CLOSE))
    assert (str(info.value), info.value.close_code) == ("close reason is not UTF-8", 1007)
