"""OpenTelemetry (the ``otel`` extra): the spans, the metrics and each request's trace context, recorded by the
OpenTelemetry SDK's in-memory exporter and metric reader while sessions run against the stand-in over real
sockets; and the SDK without ``opentelemetry`` importable (a subprocess with the import blocked).

The global tracer and meter providers can be set once per process: :func:`otel_providers` sets them once for the
test session, and :func:`otel` empties the exporter and the reader before each test. Nothing else in the suite
has a span active, so the other tests' messages stay byte for byte what they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from conftest import FAST_RECONNECT, Recorder, pcm, started
from opentelemetry import metrics, propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from avatarsdk import (
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    SessionPool,
    SessionTokenError,
    TraceContext,
    _otel,
)
from avatarsdk.testing import FakeAvatarService, TokenReply
from avatarsdk.testing._connection import FakeConnection
from avatarsdk.testing._scripts import FakeRequest

MakeSession = Callable[..., AvatarSession]
ROOT = Path(__file__).resolve().parent.parent
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


# ------------------------------------------------------------------------------------------ fixtures


class _Ended(SpanProcessor):
    """Tells waiting tests that a span ended (after the exporter, added before it, has it)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()

    def on_end(self, span: ReadableSpan) -> None:
        with self.cond:
            self.cond.notify_all()


class _Switch(Sampler):
    """Samples every span while a test of this module runs, none otherwise (the providers stay for the rest of
    the test session: other modules' spans are then made, but neither recorded nor kept)."""

    def __init__(self) -> None:
        self.on = False

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return (ALWAYS_ON if self.on else ALWAYS_OFF).should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "tests/test_otel.py's switch"


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    ended: _Ended
    switch: _Switch

    def spans(self, name: Optional[str] = None) -> List[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def wait_spans(self, name: str, count: int = 1, timeout: float = 5.0) -> List[ReadableSpan]:
        with self.ended.cond:
            if not self.ended.cond.wait_for(lambda: len(self.spans(name)) >= count, timeout):
                raise AssertionError(f"timed out waiting for {count} {name} spans; have {self.names()}")
        return self.spans(name)

    def names(self) -> List[str]:
        return [s.name for s in self.exporter.get_finished_spans()]

    def points(self) -> Dict[str, List[Any]]:
        """The histogram points recorded since the last call, by instrument name (``(unit, point)`` pairs)."""
        found: Dict[str, List[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                if scope.scope.name != "avatarsdk":
                    continue
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend((metric.unit, p) for p in metric.data.data_points)
        return found


@pytest.fixture(scope="session")
def otel_providers() -> Iterator[Otel]:
    """The SDK's providers, installed as the global ones once for the test session (they cannot be replaced)."""
    exporter = InMemorySpanExporter()
    ended = _Ended()
    switch = _Switch()
    tracer_provider = TracerProvider(sampler=switch)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.add_span_processor(ended)
    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    assert trace.get_tracer_provider() is tracer_provider, "another test set the global tracer provider first"
    assert metrics.get_meter_provider() is meter_provider, "another test set the global meter provider first"
    yield Otel(exporter, reader, ended, switch)
    exporter.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def otel(otel_providers: Otel) -> Iterator[Otel]:
    otel_providers.exporter.clear()
    otel_providers.points()  # delta temporality: what was recorded before this test is read and gone
    otel_providers.switch.on = True
    yield otel_providers
    otel_providers.switch.on = False
    otel_providers.exporter.clear()


@pytest.fixture
def tracer() -> trace.Tracer:
    return trace.get_tracer("tests")


def w3c(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def received(service: FakeAvatarService, req_id: str) -> FakeRequest:
    found = service.find_request(req_id)
    assert found is not None, f"the stand-in got no request {req_id}"
    conn, request = found
    conn.wait_for(lambda: request.ended or request.interrupted)
    return request


def attrs(span: ReadableSpan) -> Dict[str, Any]:
    return dict(span.attributes or {})


# ------------------------------------------------------------------------------------------ init and start


def test_init_and_start_spans_are_children_of_the_active_span_with_their_attributes(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = make_session()
    with tracer.start_as_current_span("app") as app:
        session.init()
        connection_id = session.start()
    (init,) = otel.spans("avatar.session.init")
    (start,) = otel.spans("avatar.session.start")
    for span in (init, start):
        assert span.parent is not None and span.parent.span_id == app.get_span_context().span_id
        assert span.kind is SpanKind.CLIENT and span.status.status_code is StatusCode.UNSET
        assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "avatarsdk"
    assert attrs(init) == {
        "avatar.app_id": service.app_id,
        "avatar.avatar_id": service.avatar_id,
        "avatar.protocol_version": 2,
        "server.address": "127.0.0.1",
        "avatar.session.init.attempts": 1,
    }
    assert attrs(start) == {
        "avatar.app_id": service.app_id,
        "avatar.avatar_id": service.avatar_id,
        "avatar.protocol_version": 2,
        "server.address": "127.0.0.1",
        "avatar.connection_id": connection_id,
    }
    assert init.end_time is not None and start.start_time is not None and init.end_time <= start.start_time


def test_the_init_span_counts_the_token_calls_attempts(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession
) -> None:
    service.script_token(TokenReply(503, "busy", headers={"Retry-After": "0"}))
    make_session(http_retries=2).init()
    (init,) = otel.spans("avatar.session.init")
    assert attrs(init)["avatar.session.init.attempts"] == 2
    assert init.status.status_code is StatusCode.UNSET


def test_a_failed_token_call_marks_the_span_with_its_status_and_code_and_no_secret(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession
) -> None:
    service.script_token(TokenReply(401, {"errors": [{"status": "401", "detail": f"bad key {service.api_key}"}]}))
    with pytest.raises(SessionTokenError) as info:
        make_session().init()
    (init,) = otel.spans("avatar.session.init")
    assert init.status.status_code is StatusCode.ERROR
    assert attrs(init)["http.response.status_code"] == 401
    assert attrs(init)["error.type"] == info.value.code.value
    assert attrs(init)["avatar.session.init.attempts"] == 1
    assert service.api_key not in init.to_json()
    points = otel.points()["avatar.session.init.duration"]
    assert [dict(p.attributes) for _, p in points] == [
        {"server.address": "127.0.0.1", "error.type": info.value.code.value}
    ]


def test_no_span_holds_the_api_key_or_a_session_token(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = started(make_session)
    with tracer.start_as_current_span("app"):
        session.collect(pcm(0.2))
    session.close()
    exported = " ".join(span.to_json() for span in otel.spans())
    assert {s.name for s in otel.spans()} >= {"avatar.session.init", "avatar.session.start", "driven.request"}
    for secret in [service.api_key, *service.issued_tokens]:
        assert secret not in exported


def test_a_failed_handshake_marks_the_start_span(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession
) -> None:
    service.reject_upgrade(403, {"errors": [{"status": "403", "code": "FORBIDDEN", "detail": "no"}]})
    session = make_session()
    session.init()
    with pytest.raises(AvatarSDKError) as info:
        session.start()
    (start,) = otel.spans("avatar.session.start")
    assert start.status.status_code is StatusCode.ERROR
    assert attrs(start)["error.type"] == info.value.code.value
    assert "avatar.connection_id" not in attrs(start)


# ------------------------------------------------------------------------------------------ driven.request


def test_a_request_span_is_a_child_of_the_active_span_and_its_context_reaches_the_service(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    service.frames_per_request = 3
    session = started(make_session)
    with tracer.start_as_current_span("app") as app:
        req_id = session.send_audio(pcm(0.1))
    session.send_audio(pcm(0.1))
    session.send_audio(pcm(0.05), end=True)
    recorder.wait_last()
    (span,) = otel.wait_spans("driven.request")
    assert span.parent is not None and span.parent.span_id == app.get_span_context().span_id
    assert span.context.trace_id == app.get_span_context().trace_id
    assert received(service, req_id).trace_contexts == [(w3c(span.context), ""), None, None]
    assert span.kind is SpanKind.CLIENT and span.status.status_code is StatusCode.UNSET
    first_animation = [e for e in span.events if e.name == "first_animation"]
    assert len(first_animation) == 1
    latency = attrs(span)["avatar.request.first_animation_latency"]
    assert 0 < latency == dict(first_animation[0].attributes or {})["avatar.request.first_animation_latency"]
    assert attrs(span) == {
        "avatar.app_id": service.app_id,
        "avatar.avatar_id": service.avatar_id,
        "avatar.protocol_version": 2,
        "server.address": "127.0.0.1",
        "avatar.request.id": req_id,
        "avatar.connection_id": session.connection_id,
        "avatar.request.audio_bytes": len(pcm(0.25)),
        "avatar.request.frames": 3,
        "avatar.request.first_animation_latency": latency,
    }


def test_a_pull_requests_span_is_a_child_of_the_span_active_where_it_was_opened(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = started(make_session)
    with tracer.start_as_current_span("opener") as opener:
        request = session.open_request()
    with tracer.start_as_current_span("sender"):  # the first chunk goes out under another span: no matter
        request.send(pcm(0.1))
    request.send(pcm(0.1), end=True)
    frames = request.collect()
    (span,) = otel.spans("driven.request")
    assert span.parent is not None and span.parent.span_id == opener.get_span_context().span_id
    assert received(service, request.req_id).trace_contexts == [(w3c(span.context), ""), None]
    assert attrs(span)["avatar.request.frames"] == len(frames) == 5


def test_a_one_frame_request_counts_its_frame_and_its_first_animation_once(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession
) -> None:
    service.frames_per_request = 1
    session = started(make_session)
    with tracer.start_as_current_span("app"):
        frames = session.collect(pcm(0.1))
    (span,) = otel.spans("driven.request")
    assert len(frames) == 1 and attrs(span)["avatar.request.frames"] == 1
    assert [e.name for e in span.events] == ["first_animation"]


def test_the_parents_tracestate_goes_with_the_traceparent(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession
) -> None:
    """A remote parent (as a web framework's instrumentation makes from incoming headers) with vendor state."""
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("congo", "t61rcWkgMzE")]),
    )
    session = started(make_session)
    with trace.use_span(NonRecordingSpan(parent)):
        frames = session.collect(pcm(0.1))
    (span,) = otel.spans("driven.request")
    assert span.context.trace_id == parent.trace_id and span.parent is not None
    assert span.parent.span_id == parent.span_id
    assert received(service, frames[0].req_id).trace_context == (w3c(span.context), "congo=t61rcWkgMzE")


def test_an_explicit_trace_context_wins_and_the_span_still_records(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = started(make_session)
    with tracer.start_as_current_span("app") as app:
        frames = session.collect(pcm(0.1), trace_context=TraceContext(PARENT, "rojo=1"))
        request = session.open_request(trace_context=TraceContext(PARENT))
    request.send(pcm(0.1), end=True)
    request.collect()
    assert received(service, frames[0].req_id).trace_contexts == [(PARENT, "rojo=1")]
    assert received(service, request.req_id).trace_contexts == [(PARENT, "")]
    spans = otel.spans("driven.request")
    assert len(spans) == 2
    assert all(s.parent is not None and s.parent.span_id == app.get_span_context().span_id for s in spans)


def test_without_an_active_span_no_trace_context_is_sent_and_the_span_is_a_root(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = started(make_session)
    frames = session.collect(pcm(0.1))
    assert received(service, frames[0].req_id).trace_contexts == [None]
    (span,) = otel.spans("driven.request")
    assert span.parent is None and span.context.is_valid


def test_the_global_propagator_decides_what_is_sent(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession
) -> None:
    """A propagator without W3C trace context (here: none at all) sends none."""
    session = started(make_session)
    configured = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([]))
    try:
        with tracer.start_as_current_span("app"):
            frames = session.collect(pcm(0.1))
    finally:
        propagate.set_global_textmap(configured)
    assert received(service, frames[0].req_id).trace_contexts == [None]
    assert len(otel.spans("driven.request")) == 1


def test_a_pool_request_is_traced_on_the_callers_thread(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService
) -> None:
    pool = SessionPool(**service.credentials(), max_size=1, min_idle=0)
    with pool, tracer.start_as_current_span("handler") as handler:
        frames = pool.collect(pcm(0.2), chunk_ms=100)
    (span,) = otel.spans("driven.request")
    assert span.parent is not None and span.parent.span_id == handler.get_span_context().span_id
    assert received(service, frames[0].req_id).trace_contexts == [(w3c(span.context), ""), None]


# ------------------------------------------------------------------------------------------ request ends


def _silent(conn: FakeConnection, request: FakeRequest) -> None:
    """The stand-in answers no request."""


def _failed(span: ReadableSpan, error_type: str) -> None:
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR and span.status.description == error_type
    assert attrs(span)["error.type"] == error_type


def test_a_server_error_for_the_request_ends_its_span_with_the_errors_code(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    service.on_request = lambda conn, request: conn.send_error(500, "model crashed", req_id=request.req_id)
    session = started(make_session)
    req_id = session.send_audio(pcm(0.1), end=True)
    error = recorder.wait_error()
    assert error.req_id == req_id
    (span,) = otel.spans("driven.request")
    _failed(span, error.code.value)
    assert attrs(span)["avatar.request.frames"] == 0 and "avatar.request.first_animation_latency" not in attrs(span)


def test_a_drop_ends_the_open_request_spans(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    service.on_request = lambda conn, request: conn.drop()
    session = started(make_session)
    session.send_audio(pcm(0.1), end=True)
    recorder.wait_closed()
    (span,) = otel.spans("driven.request")
    _failed(span, recorder.errors[0].code.value)
    (duration,) = otel.points()["avatar.session.duration"]
    assert dict(duration[1].attributes)["error.type"] == recorder.errors[0].code.value


def test_a_drop_that_reconnects_ends_the_requests_it_cut_off(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    service.on_request = lambda conn, request: conn.drop()
    session = started(make_session, reconnect=FAST_RECONNECT)
    first = session.connection_id
    req_id = session.send_audio(pcm(0.1), end=True)
    error = recorder.wait_error()
    assert error.req_id == req_id
    (span,) = otel.spans("driven.request")
    _failed(span, error.code.value)
    starts = otel.wait_spans("avatar.session.start", 2)
    assert attrs(starts[0])["avatar.connection_id"] == first
    assert starts[1].parent is None and attrs(starts[1])["avatar.connection_id"] != first  # on the dispatcher
    assert len(otel.spans("avatar.session.init")) == 2


def test_an_interrupt_ends_the_request_span(otel: Otel, service: FakeAvatarService, make_session: MakeSession) -> None:
    service.on_request = _silent
    session = started(make_session)
    req_id = session.send_audio(pcm(0.1))
    assert session.interrupt() == req_id
    (span,) = otel.spans("driven.request")
    _failed(span, "interrupted")
    assert attrs(span)["avatar.request.audio_bytes"] == len(pcm(0.1))


def test_an_abandoned_pull_request_ends_its_span(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession
) -> None:
    service.on_request = _silent
    session = started(make_session)
    request = session.open_request()
    request.send(pcm(0.1), end=True)
    request.close()  # before any frame: abandoned, the service told to stop
    (span,) = otel.spans("driven.request")
    _failed(span, "abandoned")
    unused = session.open_request()
    unused.close()
    spans = otel.spans("driven.request")
    assert len(spans) == 2
    _failed(spans[1], "abandoned")
    assert attrs(spans[1])["avatar.request.audio_bytes"] == 0


def test_closing_the_session_ends_the_requests_still_waiting(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession
) -> None:
    service.on_request = _silent
    session = started(make_session)
    session.send_audio(pcm(0.1), end=True)
    assert otel.spans("driven.request") == []
    session.close()
    (span,) = otel.spans("driven.request")
    _failed(span, AvatarSDKErrorCode.connectionClosed.value)


def test_a_v1_session_traces_its_requests_but_sends_no_trace_context(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession
) -> None:
    with pytest.warns(DeprecationWarning):
        session = started(make_session, ingress_endpoint_url=service.ingress_url.replace("/v2/", "/v1/"))
    with tracer.start_as_current_span("app"):
        frames = session.collect(pcm(0.2))
    (span,) = otel.spans("driven.request")
    assert attrs(span)["avatar.protocol_version"] == 1 and attrs(span)["avatar.request.frames"] == len(frames)
    found = service.find_request(frames[0].req_id)
    assert found is not None and found[1].trace_contexts == [None, None]


# ------------------------------------------------------------------------------------------ metrics


def test_the_metrics_are_recorded_with_units_and_no_request_id(
    otel: Otel, tracer: trace.Tracer, service: FakeAvatarService, make_session: MakeSession
) -> None:
    session = started(make_session)
    with tracer.start_as_current_span("app"):
        frames = session.collect(pcm(0.2))
    session.close()
    points = otel.points()
    expected_units = {
        "avatar.session.init.duration": "s",
        "avatar.session.start.duration": "s",
        "avatar.session.duration": "s",
        "avatar.request.duration": "s",
        "avatar.request.audio_bytes": "By",
        "avatar.request.first_animation_latency": "s",
    }
    assert {name: points[name][0][0] for name in points} == expected_units
    for name, recorded in points.items():
        assert len(recorded) == 1, name
        _, point = recorded[0]
        assert point.count == 1 and point.sum >= 0, name
        assert frames[0].req_id not in json.dumps(dict(point.attributes)), name
        assert set(point.attributes) <= {"server.address", "error.type"}, name
    assert points["avatar.request.audio_bytes"][0][1].sum == len(pcm(0.2))
    assert dict(points["avatar.request.duration"][0][1].attributes) == {"server.address": "127.0.0.1"}
    # the buckets advised for each (an application's views may choose others)
    assert points["avatar.request.first_animation_latency"][0][1].explicit_bounds[:2] == (0.005, 0.01)
    assert points["avatar.session.duration"][0][1].explicit_bounds[-1] == 14400.0
    assert points["avatar.request.audio_bytes"][0][1].explicit_bounds[0] == 1024.0


def test_a_failed_request_is_counted_with_its_error_type(
    otel: Otel, service: FakeAvatarService, make_session: MakeSession
) -> None:
    service.on_request = _silent
    session = started(make_session)
    session.send_audio(pcm(0.1))
    session.interrupt()
    points = otel.points()
    (duration,) = points["avatar.request.duration"]
    assert dict(duration[1].attributes) == {"server.address": "127.0.0.1", "error.type": "interrupted"}
    assert "avatar.request.first_animation_latency" not in points


# ------------------------------------------------------------------------------------------ without the SDK


_SUBPROCESS = """
import sys
{block}
from datetime import datetime, timedelta, timezone

from avatarsdk import new_avatar_session
from avatarsdk.testing import FakeAvatarService

with FakeAvatarService(frames_per_request=2) as service:
    kwargs = service.session_kwargs(expire_at=datetime.now(timezone.utc) + timedelta(hours=1))
    with new_avatar_session(**kwargs) as session:
{inside}
        conn = service.wait_for_connection(0)
        request = conn.requests[frames[0].req_id]
        audio = [m.client_audio_input for m in conn.messages if m.HasField("client_audio_input")]
print(json.dumps({{
    "frames": len(frames),
    "traces": request.trace_contexts,
    "field_4": [a.HasField("trace_context") for a in audio],
    "telemetry": session._core.telemetry is not None,
    "otel_imported": "opentelemetry.trace" in sys.modules,
}}))
"""


def _run(block: str, inside: str, **environ: str) -> Dict[str, Any]:
    code = "import json\n" + _SUBPROCESS.format(block=block, inside=textwrap.indent(inside, " " * 8))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **environ)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=str(ROOT), check=False
    )
    assert done.returncode == 0, done.stderr
    result: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_without_opentelemetry_the_sdk_works_and_sends_no_trace_context() -> None:
    result = _run(
        'sys.modules["opentelemetry"] = None  # as if not installed: any import of it fails',
        "frames = session.collect(b'\\x00\\x00' * 1600)",
    )
    assert result == {
        "frames": 2,
        "traces": [None],
        "field_4": [False],
        "telemetry": False,
        "otel_imported": False,
    }


def test_with_the_api_but_no_sdk_configured_nothing_is_sent() -> None:
    """The API's tracer without an SDK makes no valid span: the chunk goes out as without OpenTelemetry."""
    result = _run(
        "from opentelemetry import trace",
        "with trace.get_tracer('app').start_as_current_span('app'):\n"
        "    frames = session.collect(b'\\x00\\x00' * 1600)",
    )
    assert result == {"frames": 2, "traces": [None], "field_4": [False], "telemetry": True, "otel_imported": True}


def test_a_propagator_setting_the_api_refuses_leaves_sessions_working_without_telemetry() -> None:
    result = _run("", "frames = session.collect(b'\\x00\\x00' * 1600)", OTEL_PROPAGATORS="no-such-propagator")
    assert (result["frames"], result["traces"], result["field_4"], result["telemetry"]) == (2, [None], [False], False)


@pytest.mark.parametrize(
    "version, works", [("1.30.0", True), ("1.45.2", True), ("2.0.0", True), ("1.29.0", False), ("0.9", False)]
)
def test_an_api_older_than_the_extra_asks_turns_the_telemetry_off(version: str, works: bool) -> None:
    assert _otel.supported(version) is works
    assert _otel.supported("unknown") is True  # not a version to compare: the import decides
