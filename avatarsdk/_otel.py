"""OpenTelemetry for a session (the ``otel`` extra): its spans, its metrics, and each request's trace context.

Everything goes through the OpenTelemetry *API* (``opentelemetry-api``): the application's own tracer and meter
providers and its global propagator decide what is recorded and where it goes; this module configures no
exporter and sends nothing anywhere. The API is imported once, by the first session made, and only if it is
installed: without it :func:`session_telemetry` gives ``None`` and every hook of the session is one ``is not
None`` check (the receiver's per-frame check is of an empty dict). With it, the receiver counts the frames of
the requests in :attr:`SessionTelemetry.watched`: each until its first frame, and to its last while its span
records.

:class:`SessionTelemetry` owns a session's ``driven.request`` spans, from their start (on the thread that sends
a request's first chunk or opens the pull request, as a child of the span active there) to their end (on the
dispatcher at the last frame or a server error, on the sending thread at an interrupt or an abandon, on the
finisher at the session's end). Spans end outside every lock of the session: a span processor may export there.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

from .errors import AvatarSDKError, AvatarSDKErrorCode
from .session_config import SessionConfig
from .tracing import TraceContext

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

logger = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")
Confirmed = Tuple[str, Tuple[str, ...]]  # a connection's id and the server's capabilities

SCOPE = "avatarsdk"  # the instrumentation scope of every span and instrument

# Span names, and the metric instruments' names (PROTOCOL.md 6, the official SDK's).
SPAN_INIT = "avatar.session.init"
SPAN_START = "avatar.session.start"
SPAN_REQUEST = "driven.request"
EVENT_FIRST_ANIMATION = "first_animation"

# Attributes (OpenTelemetry's semantic conventions where one fits: server.address, error.type, http.*).
APP_ID = "avatar.app_id"
AVATAR_ID = "avatar.avatar_id"
SERVER_ADDRESS = "server.address"
ERROR_TYPE = "error.type"
HTTP_STATUS = "http.response.status_code"
ATTEMPTS = "avatar.session.init.attempts"
CONNECTION_ID = "avatar.connection_id"
PROTOCOL_VERSION = "avatar.protocol_version"
REQUEST_ID = "avatar.request.id"
AUDIO_BYTES = "avatar.request.audio_bytes"
FRAMES = "avatar.request.frames"
FIRST_ANIMATION_LATENCY = "avatar.request.first_animation_latency"

# error.type of a request that the client ended (no AvatarSDKErrorCode names these)
INTERRUPTED = "interrupted"
ABANDONED = "abandoned"

# Bucket boundaries given to the SDK as advice (an application's views override them).
_SHORT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_REQUEST_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_SESSION_SECONDS = (1.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
_BYTES = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0)


class _Api:
    """What is used of the OpenTelemetry API: its modules, the tracer and the instruments, made once."""

    def __init__(self) -> None:
        from opentelemetry import metrics, propagate, trace  # noqa: PLC0415 - optional extra, imported once
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415 - likewise

        self.propagate = propagate
        self.trace = trace
        self.client = SpanKind.CLIENT
        self.status_error = Status
        self.error_code = StatusCode.ERROR
        version = str(getattr(sys.modules.get("avatarsdk"), "__version__", ""))  # the package is imported by now
        self.tracer: Tracer = trace.get_tracer(SCOPE, version or None)
        meter = metrics.get_meter(SCOPE, version)

        def histogram(name: str, unit: str, description: str, buckets: Tuple[float, ...]) -> Histogram:
            return meter.create_histogram(
                name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
            )

        self.init_duration = histogram(
            "avatar.session.init.duration", "s", "The session token call (init()), its retries included", _SHORT_SECONDS
        )
        self.start_duration = histogram(
            "avatar.session.start.duration",
            "s",
            "Connecting and the handshake (start(), and each reconnect attempt)",
            _SHORT_SECONDS,
        )
        self.session_duration = histogram(
            "avatar.session.duration",
            "s",
            "A session from the server's first confirmation to its end (the time the service bills)",
            _SESSION_SECONDS,
        )
        self.request_duration = histogram(
            "avatar.request.duration",
            "s",
            "A request from its start (its first chunk, or open_request()) to its last frame or its end",
            _REQUEST_SECONDS,
        )
        self.audio_bytes = histogram(
            "avatar.request.audio_bytes", "By", "The audio bytes a request sent (as they went on the wire)", _BYTES
        )
        self.first_animation = histogram(
            "avatar.request.first_animation_latency",
            "s",
            "From a request's first audio chunk going out to its first animation frame",
            _SHORT_SECONDS,
        )


_api: Optional[_Api] = None
_loaded = False
_load_lock = threading.Lock()
OLDEST_API = (1, 30)  # the first release whose histograms take bucket advice (setup.cfg's otel extra)


def _load() -> Optional[_Api]:
    """The API, imported and set up by the first caller; ``None`` when ``opentelemetry-api`` is not installed, is
    older than the extra asks, or cannot be imported (a bad ``OTEL_PROPAGATORS``): sessions then go on without."""
    global _api, _loaded
    if not _loaded:
        with _load_lock:
            if not _loaded:
                _api = _import()
                _loaded = True
    return _api


def _import() -> Optional[_Api]:
    try:
        found = importlib.metadata.version("opentelemetry-api")
    except importlib.metadata.PackageNotFoundError:
        logger.debug("opentelemetry-api is not installed: no spans, metrics or trace contexts")
        return None
    if not supported(found):
        logger.warning(
            "opentelemetry-api %s is installed; avatarsdk's telemetry needs %s or later (the otel extra): it is off",
            found,
            ".".join(map(str, OLDEST_API)),
        )
        return None
    try:
        return _Api()
    except ImportError:
        logger.debug("opentelemetry-api cannot be imported: no spans, metrics or trace contexts")
    except ValueError as exc:  # the API's propagator setup refuses OTEL_PROPAGATORS at import
        logger.warning("OpenTelemetry could not be set up (%s); avatarsdk's telemetry is off", exc)
    return None


def supported(version: str) -> bool:
    """Whether ``version`` of ``opentelemetry-api`` is one the telemetry works with (:data:`OLDEST_API` or later;
    a version string not of the form ``X.Y...`` counts as supported, and the import decides)."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= OLDEST_API


def session_telemetry(config: SessionConfig, *, protocol_version: int, traces: bool) -> Optional[SessionTelemetry]:
    """A session's telemetry, or ``None`` without ``opentelemetry-api`` (``traces``: the ingress generation
    carries a request's trace context)."""
    api = _load()
    return None if api is None else SessionTelemetry(api, config, protocol_version=protocol_version, traces=traces)


class RequestSpan:
    """One request's span and what its end reports. The dispatcher counts its frames while it is in
    :attr:`SessionTelemetry.watched` (in the receiver's per-frame code: no call per frame)."""

    __slots__ = ("audio_bytes", "began", "first_sent", "frames", "recording", "req_id", "span")

    def __init__(self, req_id: str, span: Span) -> None:
        self.req_id = req_id
        self.span = span
        self.recording = span.is_recording()  # only then are frames counted
        self.began = time.monotonic()
        self.first_sent: Optional[float] = None  # when its first chunk went out
        self.audio_bytes = 0  # changed by senders (send lock held)
        self.frames = 0  # changed by the dispatcher


class SessionTelemetry:
    """One session's spans and metrics (see the module documentation). Thread-safety: every method may be
    called from any thread; ``_lock`` guards the open requests, and is a leaf (no call out while held)."""

    __slots__ = ("_api", "_ids", "_ingress", "_lock", "_requests", "_started", "_traces", "watched")

    def __init__(self, api: _Api, config: SessionConfig, *, protocol_version: int, traces: bool) -> None:
        self._api = api
        self._traces = traces
        self._ids: Dict[str, AttributeValue] = {
            APP_ID: config.app_id,
            AVATAR_ID: config.avatar_id,
            PROTOCOL_VERSION: protocol_version,
        }
        self._ingress: Dict[str, AttributeValue] = {
            SERVER_ADDRESS: urlsplit(config.ingress_endpoint_url).hostname or ""
        }
        self._lock = threading.Lock()
        self._requests: Dict[str, RequestSpan] = {}  # open driven.request spans by req_id
        #: The requests whose frames the dispatcher counts: each until its first frame (:meth:`first_frame`), and
        #: to its end when its span records. Read by the dispatcher without the lock.
        self.watched: Dict[str, RequestSpan] = {}
        self._started: Optional[float] = None  # the first confirmation (monotonic)

    # ------------------------------------------------------------------------------ init and start

    def session_init(self, console_url: str, call: Callable[[Callable[[int], None]], T]) -> T:
        """Run the token call ``call(on_attempt)`` in an ``avatar.session.init`` span."""
        api = self._api
        attempts = [0]

        def on_attempt(attempt: int) -> None:
            attempts[0] = attempt

        where: Dict[str, AttributeValue] = {SERVER_ADDRESS: urlsplit(console_url).hostname or ""}
        began = time.monotonic()
        with api.tracer.start_as_current_span(
            SPAN_INIT,
            kind=api.client,
            attributes={**self._ids, **where},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                token = call(on_attempt)
            except BaseException as exc:
                span.set_attribute(ATTEMPTS, attempts[0])
                if isinstance(exc, AvatarSDKError) and exc.http_status is not None:
                    span.set_attribute(HTTP_STATUS, exc.http_status)
                api.init_duration.record(time.monotonic() - began, {**where, ERROR_TYPE: self._fail(span, exc)})
                raise
            span.set_attribute(ATTEMPTS, attempts[0])
        api.init_duration.record(time.monotonic() - began, where)
        return token

    def session_start(self, call: Callable[[], Tuple[C, Confirmed]]) -> Tuple[C, Confirmed]:
        """Run the connect and handshake ``call()`` in an ``avatar.session.start`` span."""
        api = self._api
        began = time.monotonic()
        with api.tracer.start_as_current_span(
            SPAN_START,
            kind=api.client,
            attributes={**self._ids, **self._ingress},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = call()
            except BaseException as exc:
                api.start_duration.record(
                    time.monotonic() - began, {**self._ingress, ERROR_TYPE: self._fail(span, exc)}
                )
                raise
            span.set_attribute(CONNECTION_ID, result[1][0])
        now = time.monotonic()
        api.start_duration.record(now - began, self._ingress)
        with self._lock:
            if self._started is None:
                self._started = now
        return result

    def _fail(self, span: Span, exc: BaseException) -> str:
        """Mark ``span`` failed by ``exc``; return its ``error.type`` (an AvatarSDKError's code, else the class)."""
        api = self._api
        if isinstance(exc, AvatarSDKError):
            kind, description = exc.code.value, exc.message  # messages carry no secrets (errors.py redacts them)
        else:
            kind = description = type(exc).__name__
        span.set_attribute(ERROR_TYPE, kind)
        span.set_status(api.status_error(api.error_code, description))
        return kind

    # ------------------------------------------------------------------------------ requests

    def begin(self, req_id: str, connection_id: Optional[str], *, explicit: bool) -> Optional[TraceContext]:
        """Request ``req_id`` starts here (send lock held): its ``driven.request`` span starts, a child of the span
        active on this thread. Return the trace context its first chunk carries: the span's, injected through
        the global propagator, when an active span has a valid context and the caller gave none (``explicit``);
        else ``None``. Nothing for a request that already has its span."""
        if req_id in self._requests:
            return None
        api = self._api
        parent = api.trace.get_current_span().get_span_context()
        attributes: Dict[str, AttributeValue] = {**self._ids, **self._ingress, REQUEST_ID: req_id}
        if connection_id is not None:
            attributes[CONNECTION_ID] = connection_id
        span = api.tracer.start_span(SPAN_REQUEST, kind=api.client, attributes=attributes)
        request = RequestSpan(req_id, span)
        with self._lock:
            self._requests[req_id] = request
            self.watched[req_id] = request
        if explicit or not self._traces or not parent.is_valid:
            return None
        carrier: Dict[str, str] = {}
        api.propagate.inject(carrier, context=api.trace.set_span_in_context(span))
        traceparent = carrier.get("traceparent")
        if traceparent is None:
            return None  # a propagator without W3C trace context
        try:
            return TraceContext(traceparent, carrier.get("tracestate", ""))
        except (TypeError, ValueError) as exc:
            logger.debug("request %s: the propagator's trace context is not W3C's (%s); none sent", req_id, exc)
            return None

    def sent(self, req_id: str, size: int) -> None:
        """A chunk of ``size`` audio bytes of ``req_id`` went out (send lock held)."""
        request = self._requests.get(req_id)
        if request is not None:
            request.audio_bytes += size
            if request.first_sent is None:
                request.first_sent = time.monotonic()

    def first_frame(self, request: RequestSpan) -> None:
        """The first frame of a watched request arrived (the dispatcher; it counted the frame): the latency is
        recorded, and a request whose span does not record is watched no more."""
        self._first_frame(request)
        if not request.recording:
            with self._lock:
                self.watched.pop(request.req_id, None)

    def _first_frame(self, request: RequestSpan) -> None:
        latency = time.monotonic() - (request.first_sent or request.began)
        request.span.add_event(EVENT_FIRST_ANIMATION, {FIRST_ANIMATION_LATENCY: latency})
        request.span.set_attribute(FIRST_ANIMATION_LATENCY, latency)
        self._api.first_animation.record(latency, self._ingress)

    def last_frame(self, req_id: str) -> None:
        """The last frame of ``req_id`` arrived (the dispatcher): its span ends."""
        with self._lock:
            request = self._requests.pop(req_id, None)
            watched = self.watched.pop(req_id, None)
        if request is None:
            return
        if watched is not None:  # the last frame is counted here: the dispatcher asks no more for it
            request.frames += 1
            if request.frames == 1:
                self._first_frame(request)
        self._end(request, None)

    def failed(self, req_id: str, error_type: str) -> None:
        """Request ``req_id`` ended without its last frame (an error, an interrupt, an abandon, a drop): its span
        ends with ``error_type``. Never under a lock of the session."""
        with self._lock:
            request = self._requests.pop(req_id, None)
            self.watched.pop(req_id, None)
        if request is not None:
            self._end(request, error_type)

    def finished(self, end_error: Optional[AvatarSDKError]) -> None:
        """The session ended (its finisher, before ``on_close``): the requests still open end failed, and the
        session's duration is recorded."""
        with self._lock:
            left = list(self._requests.values())
            self._requests.clear()
            self.watched.clear()
            started, self._started = self._started, None
        why = (end_error.code if end_error is not None else AvatarSDKErrorCode.connectionClosed).value
        for request in left:
            self._end(request, why)
        if started is not None:
            ending = self._ingress if end_error is None else {**self._ingress, ERROR_TYPE: why}
            self._api.session_duration.record(time.monotonic() - started, ending)

    def _end(self, request: RequestSpan, error_type: Optional[str]) -> None:
        api, span = self._api, request.span
        duration = time.monotonic() - request.began
        span.set_attribute(AUDIO_BYTES, request.audio_bytes)
        if request.recording:
            span.set_attribute(FRAMES, request.frames)
        attributes = self._ingress
        if error_type is not None:
            span.set_attribute(ERROR_TYPE, error_type)
            span.set_status(api.status_error(api.error_code, error_type))
            attributes = {**attributes, ERROR_TYPE: error_type}
        span.end()
        api.request_duration.record(duration, attributes)
        api.audio_bytes.record(request.audio_bytes, attributes)
