"""The service's newest generation on the wire (PROTOCOL.md 6): session parameters (``extra_params``), a
request's W3C trace context on its first chunk, the close codes as a ``CloseCode`` enum, and the reserved
numbers of the schema. Everything against the stand-in over real sockets, and the messages byte for byte."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, Dict, List

import pytest
from conftest import Recorder, pcm, started, valid_config
from google.protobuf import descriptor_pb2

from avatarsdk import (
    AudioFormat,
    AvatarSDKErrorCode,
    AvatarSession,
    CloseCode,
    OggOpusEncoderConfig,
    SessionConfigBuilder,
    SessionPool,
    TraceContext,
    _protocol,
)
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.errors import AvatarSDKError, close_code_value
from avatarsdk.testing import FakeAvatarService

MakeSession = Callable[..., AvatarSession]


def v1_url(service: FakeAvatarService) -> str:
    return service.ingress_url.replace("/v2/", "/v1/")


PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


# ------------------------------------------------------------------------------------------ extra_params


def test_extra_params_reach_the_service_in_the_configure_message(
    service: FakeAvatarService, make_session: MakeSession
) -> None:
    params = {"server_post_process": "false", "mode": "fast"}
    started(make_session, extra_params=params)
    assert service.wait_for_connection(0).extra_params == params


def test_without_extra_params_the_configure_message_has_no_field_8(
    service: FakeAvatarService, make_session: MakeSession
) -> None:
    """Unused (absent or empty), the message is byte for byte what it was: no field 8 on the wire."""
    started(make_session, extra_params={})
    conn = service.wait_for_connection(0)
    assert conn.extra_params == {}
    config = valid_config()
    assert _protocol.encode_configure(config) == _protocol.encode_configure(valid_config(extra_params={}))
    configure = pb.Message.FromString(_protocol.encode_configure(config)).client_configure_session
    assert configure.ListFields() and all(f.number != 8 for f, _ in configure.ListFields())


def test_extra_params_are_field_8_of_the_configure_message() -> None:
    encoded = _protocol.encode_configure(valid_config(extra_params={"server_post_process": "false"}))
    configure = pb.Message.FromString(encoded).client_configure_session
    assert dict(configure.extra_params) == {"server_post_process": "false"}
    assert [f.number for f, _ in configure.ListFields()][-1] == 8
    plain = _protocol.encode_configure(valid_config())
    assert encoded != plain and len(encoded) > len(plain)


def test_the_session_keeps_its_own_copy_of_extra_params(service: FakeAvatarService, make_session: MakeSession) -> None:
    params = {"server_post_process": "false"}
    session = make_session(extra_params=params)
    params["server_post_process"] = "true"
    params["added"] = "later"
    session.init()
    session.start()
    assert service.wait_for_connection(0).extra_params == {"server_post_process": "false"}


def test_the_builder_sets_extra_params() -> None:
    source = {"a": "1"}
    config = SessionConfigBuilder().with_extra_params(source).build()
    source["a"] = "2"
    assert config.extra_params == {"a": "1"}


@pytest.mark.parametrize(
    "params, error, words",
    [
        (["a", "b"], TypeError, "extra_params: expected a dict of str to str, got list"),
        ({1: "x"}, TypeError, "extra_params: expected str keys, got int 1"),
        ({"": "x"}, ValueError, "extra_params: expected non-empty keys"),
        ({"k": 1}, TypeError, "extra_params['k']: expected a str, got int"),
        ({"k": None}, TypeError, "extra_params['k']: expected a str, got NoneType"),
        ({"k": "\ud800"}, ValueError, "extra_params['k']: expected text encodable as UTF-8"),
        ({"\udfff": "v"}, ValueError, "expected text encodable as UTF-8"),
    ],
)
def test_bad_extra_params_are_refused_before_anything_is_sent(
    service: FakeAvatarService, make_session: MakeSession, params: Any, error: type, words: str
) -> None:
    with pytest.raises(error) as info:
        make_session(extra_params=params)
    assert words in str(info.value)
    assert service.token_requests == []


def test_the_v1_ingress_refuses_extra_params(service: FakeAvatarService, make_session: MakeSession) -> None:
    with pytest.raises(ValueError, match="extra_params: the v1 ingress has no session parameters"):
        make_session(ingress_endpoint_url=v1_url(service), extra_params={"a": "b"})


# ------------------------------------------------------------------------------------------ TraceContext


def test_a_trace_context_takes_the_w3c_forms() -> None:
    assert TraceContext(PARENT).tracestate == ""
    assert TraceContext(PARENT, STATE).tracestate == STATE
    future = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more"
    assert TraceContext(future).traceparent == future  # a later version may add fields


@pytest.mark.parametrize(
    "traceparent, words",
    [
        ("", "traceparent: expected '00-<32 hex trace id>"),
        (PARENT.upper(), "(lowercase)"),
        (PARENT[:-1], "traceparent: expected"),
        ("ff" + PARENT[2:], "version 'ff' does not allow this form"),
        (PARENT + "-extra", "version '00' does not allow this form"),
        ("00-" + "0" * 32 + "-b7ad6b7169203331-01", "not all zeros"),
        ("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", "not all zeros"),
        (PARENT + "\n", "traceparent: expected"),
    ],
)
def test_a_malformed_traceparent_is_refused(traceparent: str, words: str) -> None:
    with pytest.raises(ValueError) as info:
        TraceContext(traceparent)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"traceparent": b"00"}, TypeError, "traceparent: expected a str, got bytes"),
        ({"traceparent": PARENT, "tracestate": None}, TypeError, "tracestate: expected a str, got NoneType"),
        ({"traceparent": PARENT, "tracestate": "a=" + "b" * 511}, ValueError, "at most 512 characters, got 513"),
        ({"traceparent": PARENT, "tracestate": "a=\u00e9"}, ValueError, "tracestate: expected printable ASCII"),
        ({"traceparent": PARENT, "tracestate": "a=b\r\nX: y"}, ValueError, "tracestate: expected printable ASCII"),
    ],
)
def test_a_bad_tracestate_or_type_is_refused(kwargs: Dict[str, Any], error: type, words: str) -> None:
    with pytest.raises(error) as info:
        TraceContext(**kwargs)
    assert words in str(info.value)


def test_from_headers_reads_any_letter_case_and_ignores_what_is_malformed() -> None:
    assert TraceContext.from_headers({"Traceparent": PARENT, "TraceState": STATE}) == TraceContext(PARENT, STATE)
    assert TraceContext.from_headers({"traceparent": f" {PARENT} "}) == TraceContext(PARENT)
    assert TraceContext.from_headers({}) is None
    assert TraceContext.from_headers({"traceparent": "garbage", "tracestate": STATE}) is None
    assert TraceContext.from_headers({"traceparent": PARENT, "tracestate": "é=1"}) == TraceContext(PARENT)
    assert TraceContext.from_headers({"traceparent": ["not", "a", "str"]}) is None


# ------------------------------------------------------------------------------------------ trace on the wire


def _traces(service: FakeAvatarService, req_id: str) -> List[Any]:
    conn = service.wait_for_connection(0)
    conn.wait_for(lambda: req_id in conn.requests and conn.requests[req_id].ended)
    return conn.requests[req_id].trace_contexts


def test_only_the_first_chunk_of_a_request_carries_its_trace_context(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = started(make_session)
    req_id = session.send_audio(pcm(0.1), trace_context=TraceContext(PARENT, STATE))
    session.send_audio(pcm(0.1))
    session.send_audio(pcm(0.1), end=True)
    assert _traces(service, req_id) == [(PARENT, STATE), None, None]
    recorder.wait_last()
    second = session.send_audio(pcm(0.1), end=True)  # the next request: none given, none sent
    assert _traces(service, second) == [None]


def test_a_trace_context_on_a_later_chunk_is_refused_and_nothing_is_sent(
    service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = started(make_session)
    req_id = session.send_audio(pcm(0.1))
    with pytest.raises(ValueError, match=f"only a request's first chunk carries one; request {req_id} has sent"):
        session.send_audio(pcm(0.1), trace_context=TraceContext(PARENT))
    session.send_audio(pcm(0.1), end=True)
    conn = service.wait_for_connection(0)
    conn.wait_for(lambda: req_id in conn.requests and conn.requests[req_id].ended)
    assert conn.requests[req_id].chunks == 2
    assert conn.requests[req_id].trace_contexts == [None, None]


def test_a_trace_context_must_be_a_trace_context(make_session: MakeSession) -> None:
    session = started(make_session)
    with pytest.raises(TypeError, match="trace_context: expected a TraceContext, got str"):
        session.send_audio(pcm(0.1), trace_context=PARENT)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="trace_context: expected a TraceContext, got dict"):
        session.open_request(trace_context={"traceparent": PARENT})  # type: ignore[arg-type]


def test_the_audio_message_with_a_trace_context_is_field_4_and_without_one_unchanged() -> None:
    plain = _protocol.encode_audio("r1", b"\x00\x00", False)
    traced = _protocol.encode_audio("r1", b"\x00\x00", False, TraceContext(PARENT, STATE))
    chunk = pb.Message.FromString(traced).client_audio_input
    assert (chunk.trace_context.traceparent, chunk.trace_context.tracestate) == (PARENT, STATE)
    assert [f.number for f, _ in chunk.ListFields()] == [1, 3, 4]
    assert _protocol.encode_audio("r1", b"\x00\x00", False, None) == plain
    assert not pb.Message.FromString(plain).client_audio_input.HasField("trace_context")


def test_open_request_stream_and_collect_put_the_trace_on_the_first_chunk(
    service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = started(make_session)
    request = session.open_request(trace_context=TraceContext(PARENT))
    request.send(pcm(0.1))
    request.send(pcm(0.1), end=True)
    request.collect()
    assert _traces(service, request.req_id) == [(PARENT, ""), None]

    frames = list(session.stream(pcm(0.3), chunk_ms=100, trace_context=TraceContext(OTHER_PARENT, STATE)))
    assert _traces(service, frames[0].req_id) == [(OTHER_PARENT, STATE), None, None]

    frames = session.collect(pcm(0.2), chunk_ms=100)
    assert _traces(service, frames[0].req_id) == [None, None]


def test_a_trace_given_to_a_request_that_never_sent_audio_does_not_reach_the_next(
    service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = started(make_session)
    unused = session.open_request(trace_context=TraceContext(PARENT))
    unused.close()
    req_id = session.send_audio(pcm(0.1), end=True)
    assert req_id != unused.req_id
    assert _traces(service, req_id) == [None]


def test_a_pool_passes_the_trace_context_and_extra_params_on(service: FakeAvatarService) -> None:
    params = {"server_post_process": "false"}
    with SessionPool(**service.credentials(), max_size=1, min_idle=0, extra_params=params) as pool:
        params["server_post_process"] = "true"  # the pool keeps its own copy
        frames = pool.collect(pcm(0.2), chunk_ms=100, trace_context=TraceContext(PARENT, STATE))
    assert _traces(service, frames[0].req_id) == [(PARENT, STATE), None]
    assert service.wait_for_connection(0).extra_params == {"server_post_process": "false"}


def test_the_v1_ingress_refuses_a_trace_context(service: FakeAvatarService, make_session: MakeSession) -> None:
    with pytest.warns(DeprecationWarning):
        session = started(make_session, ingress_endpoint_url=v1_url(service))
    with pytest.raises(ValueError, match="the v1 ingress has no trace context"):
        session.send_audio(pcm(0.1), trace_context=TraceContext(PARENT))


@pytest.mark.skipif(importlib.util.find_spec("av") is None, reason='needs PyAV: pip install "avatarsdk[audio]"')
def test_with_the_opus_encoder_the_trace_waits_for_the_first_chunk_that_goes_out(
    service: FakeAvatarService, make_session: MakeSession
) -> None:
    """A first call with less than an Opus frame sends nothing: the trace goes with the first chunk sent."""
    session = started(
        make_session, audio_format=AudioFormat.OGG_OPUS, sample_rate=16000, ogg_opus_encoder=OggOpusEncoderConfig()
    )
    req_id = session.send_audio(pcm(0.005), trace_context=TraceContext(PARENT))
    session.send_audio(pcm(0.1))
    session.send_audio(pcm(0.1), end=True)
    traces = _traces(service, req_id)
    assert traces[0] == (PARENT, "") and set(traces[1:]) == {None}


# ------------------------------------------------------------------------------------------ close codes


@pytest.mark.parametrize("member", list(CloseCode))
def test_an_error_closed_with_a_service_close_code_carries_it_as_a_close_code(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder, member: CloseCode
) -> None:
    started(make_session)
    conn = service.wait_for_connection(0)
    conn.send_error(int(member), "words")
    conn.close(int(member), "reason")
    recorder.wait_closed()
    err = recorder.errors[0]
    assert err.close_code is member and err.close_code == member.value
    assert f"close_code={member.value}," in repr(err)


def test_other_close_codes_stay_plain_numbers() -> None:
    assert CloseCode(4003) is CloseCode.CONCURRENCY_LIMIT
    assert [int(c) for c in CloseCode] == [4001, 4002, 4003, 4010, 4503]
    assert close_code_value(4003) is CloseCode.CONCURRENCY_LIMIT
    for plain in (1000, 1006, 4000, 4999):
        value = close_code_value(plain)
        assert type(value) is int and value == plain
    assert close_code_value(None) is None
    # as text, the number on every Python (3.9 and 3.10 would otherwise say "CloseCode.CONCURRENCY_LIMIT")
    member = CloseCode.CONCURRENCY_LIMIT
    assert (str(member), f"{member}", f"{member:>6d}", "%s" % member) == ("4003", "4003", "  4003", "4003")  # noqa: UP031 - logging formats so
    err = AvatarSDKError(AvatarSDKErrorCode.connectionClosed, "x", close_code=1006)
    assert type(err.close_code) is int
    derived = AvatarSDKError(AvatarSDKErrorCode.concurrencyLimit, "y", close_code=4003)._derive("z")
    assert derived.close_code is CloseCode.CONCURRENCY_LIMIT


def test_the_schema_reserves_message_type_6_and_oneof_field_7() -> None:
    file = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(file)
    message_type = next(e for e in file.enum_type if e.name == "MessageType")
    assert [(r.start, r.end) for r in message_type.reserved_range] == [(6, 6)]  # enum ranges are inclusive
    assert list(message_type.reserved_name) == ["MESSAGE_CLIENT_DRIVEN_CONFIG"]
    message = next(m for m in file.message_type if m.name == "Message")
    assert [(r.start, r.end) for r in message.reserved_range] == [(7, 8)]  # message ranges exclude the end
    assert 6 not in {v.number for v in message_type.value}
    assert 7 not in {f.number for f in message.field}
