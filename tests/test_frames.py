"""The receive side's WebSocket frame parser (avatarsdk._frames), without sockets."""

from __future__ import annotations

import random
from typing import List, Union

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
