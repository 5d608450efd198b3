"""The sans-I/O protocol layer (avatarsdk/_protocol.py): URLs, auth, encoding and decoding.

Wire numbers are pinned twice: messages built by hand from raw tags and varints (PROTOCOL.md section 2) must
decode, and encoded messages are read back with a small hand-written wire parser, independently of the
generated module.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

import pytest
from conftest import failing_runtime, valid_config
from google.protobuf.message import DecodeError

from avatarsdk import AgoraEgressConfig, AudioFormat, LiveKitEgressConfig, _protocol
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk._protocol import (
    Animation,
    Confirm,
    Malformed,
    PlaybackStateMessage,
    ServerErrorMessage,
    Unknown,
    decode,
    encode_audio,
    encode_configure,
    encode_interrupt,
    encode_pause,
    encode_resume,
    parse_close,
    peek_animation,
    peek_animation_wire,
    redact_url,
    session_token_url,
    websocket_target,
)
from avatarsdk.testing import animation_frame
from avatarsdk.testing.wire import field_bytes as lfield  # short names: messages below are written field by field
from avatarsdk.testing.wire import field_varint as vfield
from avatarsdk.testing.wire import read_fields, varint


def as_dict(data: bytes) -> Dict[int, Any]:
    """The fields of a message that repeats none (a repeated one fails the test)."""
    fields = read_fields(data)
    numbers = [n for n, _ in fields]
    assert len(numbers) == len(set(numbers)), f"repeated fields in {fields}"
    return dict(fields)


# --------------------------------------------------------------------------------------------------
# websocket_target / redact_url
# --------------------------------------------------------------------------------------------------


def target(url: str, *, query_auth: bool = False, avatar_id: str = "av-1") -> Tuple[str, Dict[str, str]]:
    return websocket_target(url, avatar_id=avatar_id, app_id="app-1", session_token="tok-1", use_query_auth=query_auth)


@pytest.mark.parametrize(
    ("base", "scheme"),
    [
        ("http://127.0.0.1:8080/v2/driveningress", "ws"),
        ("https://api.eu.spatialwalk.cloud/v2/driveningress", "wss"),
        ("ws://127.0.0.1:8080/v2/driveningress", "ws"),
        ("wss://api.eu.spatialwalk.cloud/v2/driveningress", "wss"),
        ("HTTPS://api.eu.spatialwalk.cloud/v2/driveningress", "wss"),
    ],
)
def test_websocket_target_scheme(base: str, scheme: str) -> None:
    url, _ = target(base)
    parts = urlsplit(url)
    assert parts.scheme == scheme
    assert parts.netloc == urlsplit(base).netloc
    assert parts.path == "/v2/driveningress/websocket"
    assert parse_qsl(parts.query) == [("id", "av-1")]


def test_websocket_target_exact_url() -> None:
    url, _ = target("https://api.eu.spatialwalk.cloud/v2/driveningress")
    assert url == "wss://api.eu.spatialwalk.cloud/v2/driveningress/websocket?id=av-1"


@pytest.mark.parametrize("suffix", ["/", "//"])
def test_websocket_target_trailing_slash(suffix: str) -> None:
    url, _ = target("https://h.example/v2/driveningress" + suffix)
    assert url == "wss://h.example/v2/driveningress/websocket?id=av-1"


def test_websocket_target_root_base() -> None:
    url, _ = target("http://h.example:9/")
    assert url == "ws://h.example:9/websocket?id=av-1"


def test_websocket_target_keeps_existing_query() -> None:
    url, _ = target("https://h.example/v2/driveningress?region=eu&x=1")
    parts = urlsplit(url)
    assert parts.path == "/v2/driveningress/websocket"
    query = parse_qsl(parts.query, keep_blank_values=True)
    assert ("region", "eu") in query
    assert ("x", "1") in query
    assert [v for k, v in query if k == "id"] == ["av-1"]


def test_websocket_target_replaces_existing_id() -> None:
    url, _ = target("https://h.example/v2/driveningress?id=old&region=eu")
    query = parse_qsl(urlsplit(url).query)
    assert [v for k, v in query if k == "id"] == ["av-1"]
    assert ("region", "eu") in query


def test_websocket_target_escapes_avatar_id() -> None:
    url, _ = target("https://h.example/v2/driveningress", avatar_id="a b&c=d")
    assert parse_qsl(urlsplit(url).query) == [("id", "a b&c=d")]


def test_websocket_target_header_auth() -> None:
    url, headers = target("https://h.example/v2/driveningress")
    assert headers == {"X-App-ID": "app-1", "X-Session-Key": "tok-1"}
    query = dict(parse_qsl(urlsplit(url).query))
    assert "appId" not in query
    assert "sessionKey" not in query
    assert "tok-1" not in url


def test_websocket_target_query_auth() -> None:
    url, headers = target("https://h.example/v2/driveningress?region=eu", query_auth=True)
    assert headers == {}
    query = parse_qsl(urlsplit(url).query)
    assert ("appId", "app-1") in query
    assert ("sessionKey", "tok-1") in query
    assert ("id", "av-1") in query
    assert ("region", "eu") in query
    assert not any(k in ("X-App-ID", "X-Session-Key") for k in headers)


@pytest.mark.parametrize("base", ["ftp://h.example/v2", "file:///tmp/x", "h.example/v2/driveningress"])
def test_websocket_target_rejects_other_schemes(base: str) -> None:
    with pytest.raises(ValueError, match="ingress_endpoint_url"):
        target(base)


def test_redact_url_hides_session_key() -> None:
    url, _ = target("https://h.example/v2/driveningress", query_auth=True)
    redacted = redact_url(url)
    assert "tok-1" not in redacted
    query = dict(parse_qsl(urlsplit(redacted).query))
    assert query["sessionKey"] == "***"
    assert query["appId"] == "app-1"
    assert query["id"] == "av-1"
    assert urlsplit(redacted).path == "/v2/driveningress/websocket"


def test_redact_url_without_query_is_unchanged() -> None:
    assert redact_url("wss://h.example/v2/driveningress/websocket") == "wss://h.example/v2/driveningress/websocket"
    assert redact_url("wss://h.example/ws?id=a") == "wss://h.example/ws?id=a"


# --------------------------------------------------------------------------------------------------
# encode_*
# --------------------------------------------------------------------------------------------------


config = valid_config


def decode_pb(data: bytes) -> Any:
    msg = pb.Message()
    msg.ParseFromString(data)
    return msg


def test_encode_configure_pcm_default() -> None:
    data = encode_configure(config())
    msg = decode_pb(data)
    assert msg.type == pb.MESSAGE_CLIENT_CONFIGURE_SESSION
    assert msg.WhichOneof("data") == "client_configure_session"
    conf = msg.client_configure_session
    assert conf.sample_rate == 16000
    assert conf.bitrate == 0
    assert conf.audio_format == pb.AUDIO_FORMAT_PCM_S16LE
    assert conf.transport_compression == pb.TRANSPORT_COMPRESSION_NONE
    assert conf.egress_type == pb.EGRESS_TYPE_UNSPECIFIED
    assert not conf.HasField("livekit_egress")
    assert not conf.HasField("agora_egress")
    # Raw wire: type=1 at field 1, the configuration at field 2 with sample_rate at its field 1.
    outer = as_dict(data)
    assert outer[1] == 1
    assert as_dict(outer[2])[1] == 16000


def test_encode_configure_ogg_opus_with_bitrate() -> None:
    data = encode_configure(config(audio_format=AudioFormat.OGG_OPUS, sample_rate=24000, bitrate=32000))
    conf = decode_pb(data).client_configure_session
    assert conf.sample_rate == 24000
    assert conf.bitrate == 32000
    assert conf.audio_format == pb.AUDIO_FORMAT_OGG_OPUS
    inner = as_dict(as_dict(data)[2])
    assert inner[1] == 24000
    assert inner[2] == 32000
    assert inner[3] == 1


def test_encode_configure_livekit_egress() -> None:
    livekit = LiveKitEgressConfig(
        url="wss://livekit.example",
        api_token="lk-token",
        room_name="room-1",
        publisher_id="pub-1",
        extra_attributes={"team": "blue", "lang": "en"},
        idle_timeout=45,
    )
    data = encode_configure(config(livekit_egress=livekit))
    conf = decode_pb(data).client_configure_session
    assert conf.egress_type == pb.EGRESS_TYPE_LIVEKIT
    assert conf.HasField("livekit_egress")
    assert not conf.HasField("agora_egress")
    lk = conf.livekit_egress
    assert lk.url == "wss://livekit.example"
    assert lk.api_token == "lk-token"
    assert lk.api_key == ""
    assert lk.api_secret == ""
    assert lk.room_name == "room-1"
    assert lk.publisher_id == "pub-1"
    assert dict(lk.extra_attributes) == {"team": "blue", "lang": "en"}
    assert lk.idle_timeout == 45
    # Raw wire: egress_type at field 5, livekit_egress at field 6; api_token at 8, idle_timeout at 7.
    inner = as_dict(as_dict(data)[2])
    assert inner[5] == 1
    lk_fields = read_fields(inner[6])
    assert (8, b"lk-token") in lk_fields
    assert (7, 45) in lk_fields
    assert (4, b"room-1") in lk_fields
    assert len([v for n, v in lk_fields if n == 6]) == 2  # one map entry per attribute


def test_encode_configure_livekit_deprecated_key_and_secret() -> None:
    with pytest.warns(FutureWarning, match="api_token"):
        livekit = LiveKitEgressConfig(url="wss://lk.example", api_key="k", api_secret="s", room_name="r")
    lk = decode_pb(encode_configure(config(livekit_egress=livekit))).client_configure_session.livekit_egress
    assert (lk.api_key, lk.api_secret, lk.api_token) == ("k", "s", "")


def test_encode_configure_agora_egress() -> None:
    agora = AgoraEgressConfig(channel_name="chan-1", token="ag-token", uid=4294967295, publisher_id="pub-2")
    data = encode_configure(config(agora_egress=agora))
    conf = decode_pb(data).client_configure_session
    assert conf.egress_type == pb.EGRESS_TYPE_AGORA
    assert conf.HasField("agora_egress")
    assert not conf.HasField("livekit_egress")
    ag = conf.agora_egress
    assert ag.channel_name == "chan-1"
    assert ag.token == "ag-token"
    assert ag.uid == 4294967295
    assert ag.publisher_id == "pub-2"
    inner = as_dict(as_dict(data)[2])
    assert inner[5] == 2
    assert as_dict(inner[7]) == {1: b"chan-1", 2: b"ag-token", 3: 4294967295, 4: b"pub-2"}


def test_encode_audio() -> None:
    data = encode_audio("20260101000000_abcdefghijkl", b"\x01\x00\x02\x00", True)
    msg = decode_pb(data)
    assert msg.type == pb.MESSAGE_CLIENT_AUDIO_INPUT
    assert msg.client_audio_input.req_id == "20260101000000_abcdefghijkl"
    assert msg.client_audio_input.end is True
    assert msg.client_audio_input.audio == b"\x01\x00\x02\x00"
    outer = as_dict(data)
    assert outer[1] == 3
    assert as_dict(outer[4]) == {1: b"20260101000000_abcdefghijkl", 2: 1, 3: b"\x01\x00\x02\x00"}


def test_encode_audio_empty_end_chunk() -> None:
    msg = decode_pb(encode_audio("r1", b"", True))
    assert msg.WhichOneof("data") == "client_audio_input"
    assert msg.client_audio_input.req_id == "r1"
    assert msg.client_audio_input.end is True
    assert msg.client_audio_input.audio == b""


def test_encode_audio_not_end() -> None:
    msg = decode_pb(encode_audio("r2", b"\x00\x00", False))
    assert msg.client_audio_input.end is False


def test_encode_interrupt() -> None:
    data = encode_interrupt("r3")
    msg = decode_pb(data)
    assert msg.type == pb.MESSAGE_CLIENT_INTERRUPT
    assert msg.client_interrupt.req_id == "r3"
    outer = as_dict(data)
    assert outer[1] == 7
    assert as_dict(outer[8]) == {1: b"r3"}


# --------------------------------------------------------------------------------------------------
# decode
# --------------------------------------------------------------------------------------------------


def test_decode_confirm() -> None:
    msg = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
    msg.server_confirm_session.connection_id = "conn-1"
    assert decode(msg.SerializeToString()) == Confirm(connection_id="conn-1")


def test_decode_server_error() -> None:
    msg = pb.Message(type=pb.MESSAGE_SERVER_ERROR)
    msg.server_error.code = 4001
    msg.server_error.message = "credits exhausted"
    msg.server_error.connection_id = "conn-2"
    msg.server_error.req_id = "r1"
    assert decode(msg.SerializeToString()) == ServerErrorMessage(
        code=4001, message="credits exhausted", connection_id="conn-2", req_id="r1"
    )


def test_decode_animation_keeps_the_exact_bytes() -> None:
    msg = pb.Message(type=pb.MESSAGE_SERVER_RESPONSE_ANIMATION)
    msg.server_response_animation.req_id = "r1"
    msg.server_response_animation.end = True
    data = msg.SerializeToString() + lfield(6, lfield(15, b"keyframes"))  # an undeclared field, merged
    got = decode(data)
    assert isinstance(got, Animation)
    assert got.req_id == "r1"
    assert got.end is True
    assert got.data == data
    assert got.data is data


def test_decode_unknown_message_type() -> None:
    assert decode(vfield(1, 42)) == Unknown(42)


def test_decode_playback_state_and_capabilities_by_wire_number() -> None:
    """The newer generation (PROTOCOL.md section 4): type 10 with its payload at field 11; capabilities are
    field 2 of the confirmation."""
    state = vfield(1, 10) + lfield(
        11, lfield(1, b"c") + lfield(2, b"r1") + vfield(3, 2) + vfield(4, 1500) + lfield(5, b"explicit")
    )
    assert decode(state) == PlaybackStateMessage(
        req_id="r1", state=2, played_ms=1500, reason="explicit", connection_id="c"
    )
    confirm = vfield(1, 2) + lfield(3, lfield(1, b"c1") + lfield(2, b"playback_control") + lfield(2, b"playback_state"))
    assert decode(confirm) == Confirm("c1", ("playback_control", "playback_state"))
    assert pb.MESSAGE_CLIENT_PAUSE == 8 and pb.MESSAGE_CLIENT_RESUME == 9
    pause = pb.Message.FromString(encode_pause("r2"))
    assert (pause.type, pause.client_pause.req_id) == (8, "r2")
    assert encode_resume("r2") == vfield(1, 9) + lfield(10, lfield(1, b"r2"))


def test_decode_malformed() -> None:
    got = decode(b"\xff\xff\xff")
    assert isinstance(got, Malformed)
    assert got.size == 3
    assert got.reason


def test_decode_truncated_message_is_malformed() -> None:
    data = vfield(1, 5) + lfield(6, lfield(2, b"r1"))
    got = decode(data[:-1])
    assert isinstance(got, Malformed)
    assert got.size == len(data) - 1


def test_decode_empty_bytes() -> None:
    # An empty message is a Message with type MESSAGE_UNSPECIFIED (0): not one this SDK handles.
    assert decode(b"") == Unknown(0)


# Messages built by hand from PROTOCOL.md's field numbers.


def test_wire_confirm_by_hand() -> None:
    data = vfield(1, 2) + lfield(3, lfield(1, b"conn-hand"))
    assert decode(data) == Confirm(connection_id="conn-hand")


def test_wire_server_error_by_hand() -> None:
    inner = lfield(1, b"conn-x") + lfield(2, b"req-x") + vfield(3, 4503) + lfield(4, b"upstream unavailable")
    data = vfield(1, 4) + lfield(5, inner)
    assert decode(data) == ServerErrorMessage(
        code=4503, message="upstream unavailable", connection_id="conn-x", req_id="req-x"
    )


def test_wire_animation_by_hand() -> None:
    # Newer generation fields (animation = 4, avatar_id = 5) and an undeclared one; type last on the wire.
    inner = lfield(15, b"\x00\x01\x02") + lfield(1, b"conn-a") + lfield(2, b"req-a") + vfield(3, 1)
    inner += lfield(4, b"keyframes") + lfield(5, b"avatar-1")
    data = lfield(6, inner) + vfield(1, 5)
    got = decode(data)
    assert isinstance(got, Animation)
    assert got.req_id == "req-a"
    assert got.end is True
    assert got.data == data
    assert got.data is data


def test_wire_animation_not_end_by_hand() -> None:
    data = vfield(1, 5) + lfield(6, lfield(2, b"req-b"))
    got = decode(data)
    assert got == Animation(data=data, req_id="req-b", end=False)


# --------------------------------------------------------------------------------------------------
# parse_close
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", (None, "")),
        (b"\x03", (None, "")),
        (b"\x03\xe8", (1000, "")),
        ((4001).to_bytes(2, "big") + b"credits exhausted", (4001, "credits exhausted")),
        ((4503).to_bytes(2, "big") + "upstream \u00e9".encode(), (4503, "upstream \u00e9")),
        ((1011).to_bytes(2, "big") + b"bad \xff", (1011, "bad \ufffd")),
    ],
)
def test_parse_close(payload: bytes, expected: Tuple[Any, str]) -> None:
    assert parse_close(payload) == expected


# --------------------------------------------------------------------------------------------------
# The generated descriptor and coexistence with the official SDK's descriptors
# --------------------------------------------------------------------------------------------------


def test_descriptor_file_and_package() -> None:
    assert pb.DESCRIPTOR.name == "avatarsdk/_proto/ingress_v2.proto"
    assert pb.DESCRIPTOR.package == "avatarsdk.ingress.v2"
    assert pb.Message.DESCRIPTOR.full_name == "avatarsdk.ingress.v2.Message"
    assert pb.DESCRIPTOR.name != "message.proto"
    assert pb.DESCRIPTOR.package != "message"


def run_python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_coexists_with_an_official_message_proto() -> None:
    code = """
        from google.protobuf import descriptor_pb2, descriptor_pool

        fdp = descriptor_pb2.FileDescriptorProto(name="message.proto", package="message", syntax="proto3")
        msg = fdp.message_type.add(name="Message")
        msg.field.add(
            name="type",
            number=1,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
        descriptor_pool.Default().AddSerializedFile(fdp.SerializeToString())
        assert descriptor_pool.Default().FindMessageTypeByName("message.Message") is not None

        import avatarsdk
        from avatarsdk import _protocol

        data = _protocol.encode_audio("r1", b"\\x00\\x00", True)
        assert len(data) > 0
        confirm = bytes([0x08, 0x02, 0x1A, 0x04, 0x0A, 0x02]) + b"c1"
        assert _protocol.decode(confirm) == _protocol.Confirm("c1"), _protocol.decode(confirm)
        print("ok")
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_emits_no_warnings() -> None:
    result = run_python("import avatarsdk, avatarsdk._protocol; print('ok')", "-W", "error")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert result.stderr == ""


# --------------------------------------------------------------------------------------------------
# peek_animation: the hot path must agree with protobuf on everything it does not hand back to it
# --------------------------------------------------------------------------------------------------


def _reference(data: bytes) -> Optional[Tuple[str, bool]]:
    got = decode(data)
    return (got.req_id, got.end) if isinstance(got, Animation) else None


PEEKS = [peek_animation_wire, peek_animation]


@pytest.mark.parametrize("peek", PEEKS)
def test_peek_reads_the_stand_ins_frames(peek: Any) -> None:
    for end in (False, True):
        data = animation_frame("conn-1", "20261126055603_ab_IxHPUhrA", end, 1200, 3)
        assert peek(data) == ("20261126055603_ab_IxHPUhrA", end) == _reference(data)


@pytest.mark.parametrize("peek", PEEKS)
@pytest.mark.parametrize("seed", range(4))
def test_peek_agrees_with_protobuf_on_mutated_messages(seed: int, peek: Any) -> None:
    """Random corruptions of real frames: whenever the peek answers, protobuf gives the same answer."""
    rng = random.Random(seed)
    frames = [animation_frame("conn-1", f"req-{i}", i % 3 == 0, rng.choice([40, 300, 1200]), i) for i in range(20)]
    answered = 0
    for _ in range(5000):
        data = bytearray(rng.choice(frames))
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data) + 1)]
        for _ in range(rng.randint(1, 3)):
            if data and rng.random() < 0.7:
                data[rng.randrange(len(data))] = rng.randrange(256)
            else:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        peeked = peek(bytes(data))
        if peeked is not None:
            answered += 1
            assert peeked == _reference(bytes(data)), bytes(data)
    assert answered > 500  # the peek really does answer for many surviving frames


@pytest.mark.parametrize(
    ("data", "decoded"),
    [
        (vfield(1, 5) + lfield(6, lfield(2, b"a")) + lfield(6, vfield(3, 1)), ("a", True)),  # repeated: merged
        (vfield(1, 5) + lfield(6, lfield(2, b"a")) + lfield(5, b""), ("", False)),  # another oneof member wins
        (vfield(1, 5) + lfield(6, lfield(2, b"\xff\xfe")), None),  # req_id is not UTF-8
        (vfield(1, 5) + lfield(6, lfield(1, b"\xc3")), None),  # connection_id is not UTF-8
        (vfield(1, 5) + lfield(6, b"\x03\x04"), None),  # a group (wire type 3)
        (vfield(1, 5) + lfield(6, b"\x02\x00"), None),  # field number 0
        (vfield(1, 5) + b"\x32\x05ab", None),  # length past the end
        (vfield(1, 5) + lfield(6, b"") + b"\x08", None),  # truncated varint
    ],
)
def test_peek_hands_unusual_messages_to_protobuf(data: bytes, decoded: Optional[Tuple[str, bool]]) -> None:
    """The wire peek declines; decode() (which the session falls back to) gives protobuf's answer, and so
    does the peek the session uses."""
    assert peek_animation_wire(data) is None
    assert peek_animation(data) in (None, decoded)
    assert _reference(data) == decoded
    if decoded is None:
        assert isinstance(decode(data), Malformed)


@pytest.mark.parametrize("peek", PEEKS)
def test_peek_ignores_other_message_types(peek: Any) -> None:
    confirm = pb.Message(type=pb.MESSAGE_SERVER_CONFIRM_SESSION)
    confirm.server_confirm_session.connection_id = "c"
    assert peek(confirm.SerializeToString()) is None
    assert peek(b"") is None  # type 0


def test_the_session_peeks_with_the_fastest_reader_for_the_runtime() -> None:
    from google.protobuf.internal import api_implementation

    expected = "peek_animation_wire" if api_implementation.Type() == "python" else "_peek_parsed"
    assert peek_animation.__name__ == expected


def test_the_wire_peek_knows_every_member_of_the_oneof() -> None:
    """peek_animation_wire hands any other oneof member to protobuf: its list must follow the schema."""
    from avatarsdk._protocol import _ONEOF_FIELDS

    declared = {f.number for f in pb.Message.DESCRIPTOR.oneofs_by_name["data"].fields}
    assert declared - {6} == _ONEOF_FIELDS


def fixed32(number: int) -> bytes:
    return varint(number << 3 | 5) + b"\x01\x02\x03\x04"


def fixed64(number: int) -> bytes:
    return varint(number << 3 | 1) + b"\x01" * 8


LAST_FIELD = (1 << 29) - 1  # the largest field number protobuf allows
# Fields 16-21 (two-byte keys) and the last field number, of each wire type, around and inside the animation.
UNDECLARED_BODY = vfield(16, 1) + fixed64(20) + fixed32(21) + lfield(LAST_FIELD, b"y") + vfield(LAST_FIELD, 7)
UNDECLARED = vfield(1, 5) + vfield(16, 300) + fixed64(17) + fixed32(18) + lfield(19, b"x" * 130)
UNDECLARED += lfield(6, UNDECLARED_BODY + lfield(2, b"r") + vfield(3, 1))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(UNDECLARED, ("r", True), id="undeclared-fields-of-every-wire-type"),
        pytest.param(vfield(1, 5) + fixed32(1) + lfield(6, lfield(2, b"r")), ("r", False), id="type-as-fixed32"),
        pytest.param(vfield(1, 5) + lfield(6, fixed32(1) + lfield(2, b"r")), ("r", False), id="conn-id-as-fixed32"),
        pytest.param(vfield(1, 5) + lfield(6, lfield(3, b"zz") + lfield(2, b"r")), ("r", False), id="end-as-bytes"),
        pytest.param(
            vfield(1, 5) + lfield(6, lfield(2, b"r") + varint(3 << 3) + b"\xff" * 9 + b"\x01"),
            ("r", True),
            id="end-as-a-10-byte-varint",
        ),
        pytest.param(
            vfield(1, 5) + lfield(6, lfield(2, b"r") + lfield(4, b"k" * 20000) + vfield(3, 1)),
            ("r", True),
            id="a-3-byte-length",
        ),
        pytest.param(vfield(1, 5) + lfield(6, lfield(2, b"q" * 128)), ("q" * 128, False), id="a-length-of-128"),
        pytest.param(
            vfield(1, 5) + lfield(6, lfield(2, b"r") + varint((1 << 29) << 3) + b"\x01"), None, id="field-2**29"
        ),
        pytest.param(
            vfield(1, 5) + lfield(6, lfield(2, b"r") + varint(3 << 3) + b"\xff" * 10 + b"\x01"),
            None,
            id="an-11-byte-varint",
        ),
    ],
)
def test_the_wire_peek_reads_what_protobuf_reads(data: bytes, expected: Optional[Tuple[str, bool]]) -> None:
    """Fields it does not know (newer servers add some), of every wire type and up to the largest field number,
    long varints and lengths: the wire peek answers as protobuf does, and refuses what protobuf refuses."""
    assert peek_animation_wire(data) == expected == _reference(data)
    assert peek_animation(data) == expected
    if expected is None:
        assert isinstance(decode(data), Malformed)


# --------------------------------------------------------------------------------------------------
# URLs: what is kept, what is stripped, what is replaced
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("console", "expected"),
    [
        ("https://console.example", "https://console.example/session-tokens"),
        ("https://console.example/", "https://console.example/session-tokens"),
        ("https://console.example/api//", "https://console.example/api/session-tokens"),
        ("https://console.example/X", "https://console.example/X/session-tokens"),
    ],
)
def test_session_token_url(console: str, expected: str) -> None:
    assert session_token_url(console) == expected


def test_websocket_target_keeps_blank_query_values() -> None:
    url, _ = target("https://h.example/v2/driveningress?x=&region=eu&flag")
    assert url == "wss://h.example/v2/driveningress/websocket?x=&region=eu&flag=&id=av-1"


def test_websocket_target_strips_only_slashes_from_the_path() -> None:
    url, _ = target("https://h.example/relay/X/")
    assert url == "wss://h.example/relay/X/websocket?id=av-1"


def test_websocket_target_query_auth_replaces_credentials_already_in_the_url() -> None:
    url, headers = target("https://h.example/v2?appId=old&sessionKey=old&x=", query_auth=True)
    assert url == "wss://h.example/v2/websocket?x=&id=av-1&appId=app-1&sessionKey=tok-1"
    assert headers == {}
    url, headers = target("https://h.example/v2?appId=old&sessionKey=old")  # header auth leaves them alone
    assert url == "wss://h.example/v2/websocket?appId=old&sessionKey=old&id=av-1"
    assert headers == {"X-App-ID": "app-1", "X-Session-Key": "tok-1"}


def test_redact_url_exactly() -> None:
    assert (
        redact_url("wss://h.example/ws?x=&id=a&sessionKey=s3cr3t#frag")
        == "wss://h.example/ws?x=&id=a&sessionKey=***#frag"
    )
    assert redact_url("wss://h.example/ws?SessionKey=s&SESSIONKEY=t&key=v") == (
        "wss://h.example/ws?SessionKey=***&SESSIONKEY=***&key=v"
    )


# --------------------------------------------------------------------------------------------------
# decode(): what a Malformed says
# --------------------------------------------------------------------------------------------------


def test_malformed_reason_is_what_protobuf_said() -> None:
    with pytest.raises(DecodeError) as info:
        pb.Message.FromString(b"\xff\xff\xff")
    assert decode(b"\xff\xff\xff") == Malformed(reason=str(info.value), size=3)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (DecodeError("Truncated message."), "Truncated message."),
        (DecodeError(), "DecodeError"),
        (RuntimeError("recursion limit"), "recursion limit"),
        (RecursionError(), "RecursionError"),
    ],
)
def test_decode_reports_whatever_the_runtime_raises(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, reason: str
) -> None:
    monkeypatch.setattr(_protocol, "pb", failing_runtime(exc))
    assert decode(b"\x08\x05\x32") == Malformed(reason=reason, size=3)
