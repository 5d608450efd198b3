"""The v1 ingress without I/O (avatarsdk/_protocol_v1.py): its URL, headers, wire numbers and the rule that
assigns animation messages to requests. Sessions on a v1 ingress: tests/test_generations.py."""

from __future__ import annotations

import pytest
from conftest import failing_runtime
from google.protobuf.message import DecodeError

from avatarsdk import _protocol_v1
from avatarsdk._protocol import Malformed, ServerErrorMessage, Unknown
from avatarsdk._protocol_v1 import (
    SegmentCounter,
    V1Animation,
    decode,
    encode_audio,
    expected_segments,
    is_v1,
    websocket_target,
)
from avatarsdk.testing.wire import field_bytes as lfield  # short names, as in tests/test_protocol.py
from avatarsdk.testing.wire import field_varint as vfield

# --------------------------------------------------------------------------------------------------
# URL and headers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "v1"),
    [
        ("https://h.example/v1/driveningress", True),
        ("https://h.example/v1/driveningress/", True),
        ("https://h.example/v1/driveningress//", True),
        ("https://h.example/api/v1/driveningress?region=eu", True),
        ("wss://h.example/v1/driveningress", True),
        ("https://h.example/v2/driveningress", False),
        ("https://h.example/v1/driveningress/websocket", False),
        ("https://h.example/v1/driveningressX", False),
        ("https://h.example/v1/driveningress-v2", False),
        ("https://h.example/x?path=/v1/driveningress", False),
        ("https://h.example/", False),
    ],
)
def test_v1_is_told_by_the_path_alone(url: str, v1: bool) -> None:
    assert is_v1(url) is v1


def test_v1_websocket_target_sends_the_token_and_the_connection_id_as_headers() -> None:
    url, headers = websocket_target(
        "https://h.example/v1/driveningress/?region=eu&x=&id=old",
        avatar_id="av 1",
        session_token="tok-1",
        connection_id="conn-1",
    )
    assert url == "wss://h.example/v1/driveningress/websocket?region=eu&x=&id=av+1"
    assert headers == {"X-Session-Key": "tok-1", "X-Connection-Id": "conn-1"}


# --------------------------------------------------------------------------------------------------
# Wire numbers (ingress_v1.proto): Message.type = 1, error = 2, client_audio_input = 4
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("end", [False, True])
def test_v1_audio_message_by_wire_number(end: bool) -> None:
    inner = lfield(1, b"req-1") + lfield(2, b"\x01\x00\x02\x00") + (vfield(3, 1) if end else b"")
    assert encode_audio("req-1", b"\x01\x00\x02\x00", end) == vfield(1, 2003) + lfield(4, inner)


def test_v1_animation_keeps_the_exact_bytes() -> None:
    data = vfield(1, 1004) + lfield(15, b"keyframes")  # the animation body is not declared in the schema
    got = decode(data)
    assert got == V1Animation(data)
    assert isinstance(got, V1Animation) and got.data is data


def test_v1_error_by_wire_number() -> None:
    data = vfield(1, 2) + lfield(2, lfield(1, b"req-9") + vfield(2, 4001) + lfield(3, b"credits exhausted"))
    assert decode(data) == ServerErrorMessage(code=4001, message="credits exhausted", connection_id="", req_id="req-9")


@pytest.mark.parametrize(("data", "kind"), [(b"", 0), (vfield(1, 2003), 2003), (vfield(1, 5), 5)])
def test_v1_other_message_types_are_unknown(data: bytes, kind: int) -> None:
    assert decode(data) == Unknown(kind)


def test_v1_malformed_bytes() -> None:
    got = decode(b"\xff\xff\xff")
    assert isinstance(got, Malformed)
    assert got.size == 3
    with pytest.raises(DecodeError) as info:
        _protocol_v1.pb1.Message.FromString(b"\xff\xff\xff")
    assert got.reason == (str(info.value) or "DecodeError")  # what the protobuf runtime said


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (DecodeError("Error parsing message"), "Error parsing message"),
        (DecodeError(), "DecodeError"),
        (RuntimeError("recursion limit"), "recursion limit"),
        (RecursionError(), "RecursionError"),
    ],
)
def test_v1_decode_reports_whatever_the_runtime_raises(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, reason: str
) -> None:
    monkeypatch.setattr(_protocol_v1, "pb1", failing_runtime(exc))
    assert decode(b"\x08\x02") == Malformed(reason=reason, size=2)


# --------------------------------------------------------------------------------------------------
# Which request an animation message belongs to
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "segments"),
    [(0.0, 1), (1.999, 1), (2.0, 2), (5.999, 2), (6.0, 3), (9.999, 3), (10.0, 4), (62.0, 17)],
)
def test_expected_segments_at_the_edges(seconds: float, segments: int) -> None:
    assert expected_segments(seconds) == segments


def test_the_audio_of_all_chunks_counts_at_the_counters_sample_rate() -> None:
    counter = SegmentCounter(sample_rate=24000)
    counter.audio("a", 48000, end=False)  # 1 s at 24 kHz, 16-bit mono
    counter.audio("a", 48000, end=True)  # 2 s in all: 2 segments
    assert [counter.frame(), counter.frame(), counter.frame()] == [("a", False), ("a", True), ("", False)]


def test_the_default_sample_rate_is_16_khz() -> None:
    counter = SegmentCounter()
    counter.audio("a", 64000, end=True)  # 2 s at 16 kHz: 2 segments (at 24 kHz it would be 1)
    assert [counter.frame(), counter.frame()] == [("a", False), ("a", True)]


def test_every_byte_counts() -> None:
    counter = SegmentCounter()
    counter.audio("a", 63999, end=True)  # a byte short of 2 s: 1 segment
    counter.audio("b", 64000, end=True)  # 2 s: 2 segments
    assert [counter.frame() for _ in range(4)] == [("a", True), ("b", False), ("b", True), ("", False)]


def test_frames_go_to_the_requests_in_the_order_they_were_sent() -> None:
    counter = SegmentCounter()
    counter.audio("a", 3200, end=True)  # 0.1 s: 1 segment
    counter.audio("b", 3200, end=False)
    counter.audio("c", 3200, end=True)
    assert counter.frame() == ("a", True)
    assert counter.frame() == ("b", False)  # b's end is not sent yet: its frames go on
    assert counter.frame() == ("b", False)
    counter.audio("b", 0, end=True)  # 0.1 s: 1 segment, 2 received already: b is over
    assert counter.frame() == ("c", True)
    assert counter.frame() == ("", False)


def test_a_request_whose_frames_came_before_its_end_is_over_at_its_end() -> None:
    counter = SegmentCounter()
    counter.audio("a", 3200, end=False)
    assert counter.frame() == ("a", False)
    counter.audio("a", 3200, end=True)  # 0.2 s: 1 segment, received
    counter.audio("b", 3200, end=True)
    assert counter.frame() == ("b", True)


def test_a_request_still_waiting_for_frames_at_its_end_keeps_them() -> None:
    counter = SegmentCounter()
    counter.audio("a", 32000 * 3, end=False)  # 3 s: 2 segments
    assert counter.frame() == ("a", False)
    counter.audio("a", 0, end=True)
    assert counter.frame() == ("a", True)


def test_forget_one_request_or_all() -> None:
    counter = SegmentCounter()
    for req_id in ("a", "b", "c"):
        counter.audio(req_id, 3200, end=False)
    counter.forget("b")
    counter.forget("unknown")
    assert counter.frame() == ("a", False)
    counter.forget("a")
    assert counter.frame() == ("c", False)
    counter.forget()
    assert counter.frame() == ("", False)
