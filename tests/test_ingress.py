"""The two ingress generations as strategy objects (avatarsdk/_ingress.py), without I/O: which one a URL names
and v1's refusals, each one's URL and auth, handshake, audio message, and how a received message reaches the
session (an animation frame delivered as its exact bytes with its request and last flag, anything else decoded).
Messages are built with avatarsdk.testing.wire or the generated protobuf modules; the connection in handshakes
is a stub with the one method the ingress calls."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest
from conftest import valid_config

import avatarsdk
from avatarsdk import _ingress, _protocol, _protocol_v1
from avatarsdk._ingress import Ingress, IngressV1, IngressV2, ingress_for
from avatarsdk._proto import ingress_v1_pb2 as pb1
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk._protocol import Confirm, Malformed, ServerErrorMessage, Unknown
from avatarsdk.session_config import AgoraEgressConfig, AudioFormat, LiveKitEgressConfig
from avatarsdk.testing.wire import animation_fields, animation_frame, field_bytes, field_varint, v1_animation_frame

V2_URL = "https://ingress.example/v2/driveningress"
V1_URL = "https://ingress.example/v1/driveningress"
LOG_ID = re.compile(r"^\d{14}_[A-Za-z0-9_-]{12}$")
V1_DEPRECATION = "the v1 ingress (/v1/driveningress) is deprecated by the service; use /v2/driveningress"
V1_AUDIO_ONLY = "ingress_endpoint_url: the v1 ingress takes only 16 kHz PCM (sample_rate=16000, audio_format=PCM_S16LE)"


config = valid_config


def v1(**changes: Any) -> IngressV1:
    ingress = ingress_for(config(ingress_endpoint_url=V1_URL, **changes), warn=False)
    assert type(ingress) is IngressV1
    return ingress


class Recorded:
    """What a frame handler hands on: ``deliver`` calls and ``other`` calls, in order."""

    def __init__(self) -> None:
        self.calls: List[Tuple[Any, ...]] = []

    def deliver(self, data: bytes, req_id: str, last: bool) -> None:
        self.calls.append(("deliver", data, req_id, last))

    def other(self, message: Any) -> None:
        self.calls.append(("other", message))


class StubConn:
    """Stands for a Connection in a handshake: records what it was given, answers ``confirm``."""

    def __init__(self, confirm: Optional[Confirm] = None) -> None:
        self.confirm = confirm
        self.calls: List[Tuple[bytes, Optional[float]]] = []

    def handshake(self, configure: bytes, timeout: Optional[float]) -> Confirm:
        self.calls.append((configure, timeout))
        assert self.confirm is not None, "v1 has no handshake"
        return self.confirm


def pcm_bytes(seconds: float) -> bytes:
    return b"\x00\x00" * round(seconds * 16000)


# --------------------------------------------------------------------------------------------------
# ingress_for
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [V2_URL, "wss://ingress.example/v2/driveningress/", "https://ingress.example/", "http://localhost:8080/x"],
)
def test_v2_for_any_url_but_v1(url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ingress = ingress_for(config(ingress_endpoint_url=url))
    assert type(ingress) is IngressV2
    assert ingress.version == 2
    assert ingress.controls is True


def test_v2_takes_what_v1_refuses() -> None:
    cfg = config(
        audio_format=AudioFormat.OGG_OPUS,
        sample_rate=48000,
        use_query_auth=True,
        livekit_egress=LiveKitEgressConfig(url="wss://lk", room_name="r", api_token="t"),
    )
    assert type(ingress_for(cfg)) is IngressV2


@pytest.mark.parametrize("url", [V1_URL, "wss://ingress.example/api/v1/driveningress/?region=eu"])
def test_v1_by_its_path_with_a_deprecation_warning(url: str) -> None:
    with pytest.warns(DeprecationWarning) as caught:
        ingress = ingress_for(config(ingress_endpoint_url=url))
    assert type(ingress) is IngressV1
    assert ingress.version == 1
    assert ingress.controls is False
    assert [str(w.message) for w in caught] == [V1_DEPRECATION]
    # It points at the caller's code (this file; under mutmut, its trampoline), never into the SDK.
    assert not Path(caught[0].filename).is_relative_to(Path(avatarsdk.__file__).parent)


def test_v1_warns_by_default_and_not_with_warn_false() -> None:
    with pytest.warns(DeprecationWarning):
        ingress_for(config(ingress_endpoint_url=V1_URL), warn=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(ingress_for(config(ingress_endpoint_url=V1_URL), warn=False)) is IngressV1


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"audio_format": AudioFormat.OGG_OPUS}, V1_AUDIO_ONLY),
        ({"sample_rate": 24000}, V1_AUDIO_ONLY),
        ({"sample_rate": 8000}, V1_AUDIO_ONLY),
        ({"audio_format": AudioFormat.OGG_OPUS, "use_query_auth": True}, V1_AUDIO_ONLY),  # the audio first
        ({"use_query_auth": True}, "use_query_auth: the v1 ingress takes its credentials in headers only"),
        (
            {"use_query_auth": True, "agora_egress": AgoraEgressConfig(channel_name="c")},
            "use_query_auth: the v1 ingress takes its credentials in headers only",
        ),
        (
            {"livekit_egress": LiveKitEgressConfig(url="wss://lk", room_name="r", api_token="t")},
            "livekit_egress/agora_egress: the v1 ingress has no egress configuration",
        ),
        (
            {"agora_egress": AgoraEgressConfig(channel_name="c")},
            "livekit_egress/agora_egress: the v1 ingress has no egress configuration",
        ),
    ],
)
@pytest.mark.parametrize("warn", [True, False])
def test_v1_refusals_come_before_the_warning(changes: Any, text: str, warn: bool) -> None:
    cfg = config(ingress_endpoint_url=V1_URL, **changes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning for a configuration refused
        with pytest.raises(ValueError) as info:
            ingress_for(cfg, warn=warn)
    assert str(info.value) == text


# --------------------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------------------


def test_the_base_class_is_abstract() -> None:
    base = Ingress(config())
    assert (base.version, base.controls) == (2, True)
    assert base.connected() is None
    with pytest.raises(NotImplementedError):
        base.target("tok")
    with pytest.raises(NotImplementedError):
        base.handshake(StubConn(), 1.0)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        base.encode_audio("r", b"", True)
    with pytest.raises(NotImplementedError):
        base.frame_handler(Recorded().deliver, Recorded().other)


# --------------------------------------------------------------------------------------------------
# IngressV2
# --------------------------------------------------------------------------------------------------


def test_v2_target_with_header_auth() -> None:
    ingress = ingress_for(config())
    url, headers = ingress.target("tok-1")
    assert url == "wss://ingress.example/v2/driveningress/websocket?id=avatar-1"
    assert headers == {"X-App-ID": "app-1", "X-Session-Key": "tok-1"}


def test_v2_target_with_query_auth() -> None:
    cfg = config(ingress_endpoint_url="http://ingress.example/v2/driveningress?region=eu", use_query_auth=True)
    url, headers = ingress_for(cfg).target("tok-2")
    assert url == "ws://ingress.example/v2/driveningress/websocket?region=eu&id=avatar-1&appId=app-1&sessionKey=tok-2"
    assert headers == {}


def test_v2_target_follows_the_protocol_module() -> None:
    cfg = config(avatar_id="av 2", app_id="app-9")
    assert ingress_for(cfg).target("t") == _protocol.websocket_target(
        cfg.ingress_endpoint_url, avatar_id="av 2", app_id="app-9", session_token="t", use_query_auth=False
    )


def test_v2_handshake_sends_the_configure_message_and_returns_the_confirm() -> None:
    cfg = config(sample_rate=24000, agora_egress=AgoraEgressConfig(channel_name="c", uid=5))
    ingress = ingress_for(cfg)
    conn = StubConn(Confirm(connection_id="conn-1", capabilities=("playback_control",)))
    assert ingress.handshake(conn, 2.5) == ("conn-1", ("playback_control",))  # type: ignore[arg-type]
    assert conn.calls == [(_protocol.encode_configure(cfg), 2.5)]
    assert ingress.handshake(conn, None) == ("conn-1", ("playback_control",))  # type: ignore[arg-type]
    assert conn.calls[1] == (_protocol.encode_configure(cfg), None)


def test_v2_handshake_without_capabilities() -> None:
    conn = StubConn(Confirm(connection_id="conn-2"))
    assert ingress_for(config()).handshake(conn, 1.0) == ("conn-2", ())  # type: ignore[arg-type]


def test_v2_configure_is_made_when_the_ingress_is() -> None:
    cfg = config()
    ingress = ingress_for(cfg)
    cfg.sample_rate = 48000  # later changes do not reach the message made already
    conn = StubConn(Confirm(connection_id="c"))
    ingress.handshake(conn, 1.0)  # type: ignore[arg-type]
    assert conn.calls[0][0] == _protocol.encode_configure(config())
    assert conn.calls[0][0] != _protocol.encode_configure(cfg)


@pytest.mark.parametrize("end", [False, True])
def test_v2_encode_audio_is_the_protocol_message(end: bool) -> None:
    ingress = ingress_for(config())
    assert ingress.encode_audio("req-1", b"\x01\x02\x03\x04", end) == _protocol.encode_audio(
        "req-1", b"\x01\x02\x03\x04", end
    )
    assert ingress.encode_audio("req-1", b"", end) == _protocol.encode_audio("req-1", b"", end)


@pytest.mark.parametrize(("req_id", "end"), [("req-1", True), ("req-1", False), ("", False), ("r\u00e9q", True)])
def test_v2_animation_frames_are_delivered_as_received(req_id: str, end: bool) -> None:
    recorded = Recorded()
    on_frame = ingress_for(config()).frame_handler(recorded.deliver, recorded.other)
    data = animation_frame("conn-1", req_id, end, 300, 7)
    on_frame(data)
    assert recorded.calls == [("deliver", data, req_id, end)]
    assert recorded.calls[0][1] is data


def test_v2_animation_frames_take_the_fast_path_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: an animation frame is read by peek_animation alone, no protobuf Message decoded."""
    decoded: List[bytes] = []

    def decode(data: bytes) -> Any:
        decoded.append(data)
        return Unknown(type=0)

    monkeypatch.setattr(_protocol, "decode", decode)  # read when the handler is made
    recorded = Recorded()
    on_frame = ingress_for(config()).frame_handler(recorded.deliver, recorded.other)
    data = animation_frame("conn-1", "req-1", True, 300, 2)
    on_frame(data)
    assert decoded == []
    assert recorded.calls == [("deliver", data, "req-1", True)]
    on_frame(field_varint(1, 99))  # anything else is decoded, by the function in place when it was made
    assert decoded == [field_varint(1, 99)]


def test_v2_unusual_animation_encoding_is_decoded_by_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pure-Python runtime's fast path (peek_animation_wire) leaves a repeated animation field to protobuf,
    which merges the two: the frame still arrives, its bytes as received, its req_id and end merged."""
    monkeypatch.setattr(_ingress, "peek_animation", _protocol.peek_animation_wire)
    data = (
        field_bytes(6, animation_fields("conn-1", "req-1", False))
        + field_bytes(6, field_varint(3, 1))
        + field_varint(1, pb.MESSAGE_SERVER_RESPONSE_ANIMATION)
    )
    assert _protocol.peek_animation_wire(data) is None
    recorded = Recorded()
    ingress_for(config()).frame_handler(recorded.deliver, recorded.other)(data)
    assert recorded.calls == [("deliver", data, "req-1", True)]


def test_v2_fast_path_missing_any_animation_still_delivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ingress, "peek_animation", lambda data: None)
    recorded = Recorded()
    on_frame = ingress_for(config()).frame_handler(recorded.deliver, recorded.other)
    data = animation_frame("conn-1", "req-2", False, 100, 1)
    on_frame(data)
    assert recorded.calls == [("deliver", data, "req-2", False)]
    assert recorded.calls[0][1] is data


def test_v2_other_messages_are_decoded() -> None:
    recorded = Recorded()
    on_frame = ingress_for(config()).frame_handler(recorded.deliver, recorded.other)
    confirm = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
    confirm.server_confirm_session.connection_id = "conn-1"
    error = pb.Message(type=pb.MESSAGE_SERVER_ERROR)
    error.server_error.code = 4001
    error.server_error.message = "credits exhausted"
    error.server_error.req_id = "req-1"
    on_frame(confirm.SerializeToString())
    on_frame(error.SerializeToString())
    on_frame(field_varint(1, 99))
    on_frame(b"\xff\xff")
    assert recorded.calls[:3] == [
        ("other", Confirm(connection_id="conn-1")),
        ("other", ServerErrorMessage(code=4001, message="credits exhausted", connection_id="", req_id="req-1")),
        ("other", Unknown(type=99)),
    ]
    assert recorded.calls[3][0] == "other"
    assert type(recorded.calls[3][1]) is Malformed
    assert recorded.calls[3][1].size == 2


def test_v2_connected_keeps_nothing() -> None:
    ingress = ingress_for(config())
    assert ingress.connected() is None


# --------------------------------------------------------------------------------------------------
# IngressV1
# --------------------------------------------------------------------------------------------------


def test_v1_before_any_target_has_no_connection_id() -> None:
    assert v1().handshake(StubConn(), 1.0) == ("", ())  # type: ignore[arg-type]


def test_v1_target_makes_its_own_connection_id_and_the_handshake_returns_it() -> None:
    ingress = v1()
    conn = StubConn()
    url, headers = ingress.target("tok-1")
    assert url == "wss://ingress.example/v1/driveningress/websocket?id=avatar-1"
    assert set(headers) == {"X-Session-Key", "X-Connection-Id"}
    assert headers["X-Session-Key"] == "tok-1"
    first = headers["X-Connection-Id"]
    assert LOG_ID.match(first)
    assert ingress.handshake(conn, 5.0) == (first, ())  # type: ignore[arg-type]
    assert conn.calls == []  # nothing is sent: v1 has no handshake
    # A new connection, a new id.
    _, headers = ingress.target("tok-2")
    assert headers["X-Session-Key"] == "tok-2"
    assert headers["X-Connection-Id"] != first
    assert ingress.handshake(conn, None) == (headers["X-Connection-Id"], ())  # type: ignore[arg-type]


def test_v1_target_follows_the_v1_protocol_module() -> None:
    ingress = v1(avatar_id="av 3")
    url, headers = ingress.target("t")
    assert (url, headers) == _protocol_v1.websocket_target(
        V1_URL, avatar_id="av 3", session_token="t", connection_id=headers["X-Connection-Id"]
    )


@pytest.mark.parametrize("end", [False, True])
def test_v1_encode_audio_is_the_v1_message(end: bool) -> None:
    assert v1().encode_audio("req-1", b"\x01\x02", end) == _protocol_v1.encode_audio("req-1", b"\x01\x02", end)


def run_v1(ingress: IngressV1, frames: int) -> List[Tuple[Any, ...]]:
    recorded = Recorded()
    on_frame = ingress.frame_handler(recorded.deliver, recorded.other)
    for seq in range(frames):
        on_frame(v1_animation_frame(120, seq))
    return [call[2:] for call in recorded.calls]


def test_v1_frame_carries_the_exact_bytes() -> None:
    ingress = v1()
    ingress.encode_audio("req-1", pcm_bytes(1), True)
    recorded = Recorded()
    data = v1_animation_frame(200, 3)
    ingress.frame_handler(recorded.deliver, recorded.other)(data)
    assert recorded.calls == [("deliver", data, "req-1", True)]
    assert recorded.calls[0][1] is data


def test_v1_frames_are_counted_per_request_from_its_audio() -> None:
    ingress = v1()
    ingress.encode_audio("req-1", pcm_bytes(1.5), False)
    ingress.encode_audio("req-1", pcm_bytes(1), True)  # 2.5 s: two frames
    ingress.encode_audio("req-2", pcm_bytes(0.5), True)  # one frame
    assert run_v1(ingress, 4) == [("req-1", False), ("req-1", True), ("req-2", True), ("", False)]


def test_v1_the_two_second_boundary_counts_the_bytes_sent() -> None:
    ingress = v1()
    ingress.encode_audio("short", b"\x00" * (64000 - 2), True)  # just under 2 s: one frame
    ingress.encode_audio("two", b"\x00" * 64000, True)  # exactly 2 s: two frames
    assert run_v1(ingress, 3) == [("short", True), ("two", False), ("two", True)]


def test_v1_a_request_without_its_end_never_has_a_last_frame() -> None:
    ingress = v1()
    ingress.encode_audio("req-1", pcm_bytes(0.5), False)
    assert run_v1(ingress, 3) == [("req-1", False)] * 3


def test_v1_without_requests_frames_belong_to_none() -> None:
    assert run_v1(v1(), 2) == [("", False), ("", False)]


def test_v1_connected_starts_the_count_over() -> None:
    ingress = v1()
    recorded = Recorded()
    on_frame = ingress.frame_handler(recorded.deliver, recorded.other)  # made before: reads the current count
    ingress.encode_audio("req-1", pcm_bytes(1), True)
    ingress.connected()
    on_frame(v1_animation_frame(100, 0))
    ingress.encode_audio("req-2", pcm_bytes(1), True)
    on_frame(v1_animation_frame(100, 1))
    assert [call[2:] for call in recorded.calls] == [("", False), ("req-2", True)]


def test_v1_other_messages_are_decoded_and_not_counted() -> None:
    ingress = v1()
    ingress.encode_audio("req-1", pcm_bytes(1), True)
    recorded = Recorded()
    on_frame = ingress.frame_handler(recorded.deliver, recorded.other)
    error = pb1.Message(type=pb1.MESSAGE_ERROR)
    error.error.code = 4001
    error.error.reason = "credits exhausted"
    error.error.req_id = "req-1"
    on_frame(error.SerializeToString())
    on_frame(field_varint(1, 77))
    on_frame(b"\xff")
    data = v1_animation_frame(100, 0)
    on_frame(data)
    assert recorded.calls[:2] == [
        ("other", ServerErrorMessage(code=4001, message="credits exhausted", connection_id="", req_id="req-1")),
        ("other", Unknown(type=77)),
    ]
    assert recorded.calls[2][0] == "other"
    assert type(recorded.calls[2][1]) is Malformed
    assert recorded.calls[3] == ("deliver", data, "req-1", True)
