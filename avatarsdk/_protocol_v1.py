"""The v1 ingress (deprecated by the service, still served), without I/O.

v1 differs from v2 in four ways that matter here: it has no handshake (the connection id is the client's own
log id, sent in ``X-Connection-Id``); auth is the ``X-Session-Key`` header only; its message numbers differ
(note ``audio`` = 2 and ``end`` = 3 in the audio message); and animation messages carry neither ``req_id`` nor
``end``, so the frames belong to the requests in the order they were sent and a request's last frame is
inferred from its audio's duration (:func:`expected_segments`, the rule the service's older Go SDK used).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError

from . import _protocol
from ._proto import ingress_v1_pb2 as pb1

V1_PATH = "/v1/driveningress"
V1_SAMPLE_RATE = 16000


def is_v1(ingress_endpoint_url: str) -> bool:
    """Whether the ingress URL names the v1 endpoint (its path ends with ``/v1/driveningress``)."""
    return urlsplit(ingress_endpoint_url).path.rstrip("/").endswith(V1_PATH)


def websocket_target(
    ingress_endpoint_url: str, *, avatar_id: str, session_token: str, connection_id: str
) -> Tuple[str, Dict[str, str]]:
    """The v1 WebSocket URL (as v2: ``{ingress}/websocket?id=<avatar_id>``) and its two headers."""
    url, _ = _protocol.websocket_target(
        ingress_endpoint_url, avatar_id=avatar_id, app_id="", session_token=session_token, use_query_auth=False
    )
    return url, {"X-Session-Key": session_token, "X-Connection-Id": connection_id}


def encode_audio(req_id: str, audio: bytes, end: bool) -> bytes:
    """MESSAGE_CLIENT_AUDIO_INPUT (2003) carrying one chunk of request ``req_id``."""
    msg = pb1.Message(type=pb1.MESSAGE_CLIENT_AUDIO_INPUT)
    chunk = msg.client_audio_input
    chunk.req_id = req_id
    chunk.audio = audio
    chunk.end = end
    return msg.SerializeToString()


@dataclass(frozen=True)
class V1Animation:
    """MESSAGE_SERVER_RESPONSE_ANIMATION (1004): ``data`` exactly as received; no req_id or end on the wire."""

    data: bytes


Decoded = Union[V1Animation, _protocol.ServerErrorMessage, _protocol.Unknown, _protocol.Malformed]


def decode(data: bytes) -> Decoded:
    """Decode one binary message from a v1 ingress."""
    msg = pb1.Message()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        return _protocol.Malformed(reason=str(exc) or "DecodeError", size=len(data))
    except Exception as exc:  # noqa: BLE001 - hostile bytes must never kill the dispatcher
        return _protocol.Malformed(reason=str(exc) or type(exc).__name__, size=len(data))
    if msg.type == pb1.MESSAGE_SERVER_RESPONSE_ANIMATION:
        return V1Animation(data)
    if msg.type == pb1.MESSAGE_ERROR:
        err = msg.error
        return _protocol.ServerErrorMessage(code=err.code, message=err.reason, connection_id="", req_id=err.req_id)
    return _protocol.Unknown(type=int(msg.type))


def expected_segments(seconds: float) -> int:
    """Animation messages a v1 request of ``seconds`` of audio answers with: 1 under 2 s, else
    ``floor((seconds - 2) / 4) + 2``."""
    if seconds < 2:
        return 1
    return math.floor((seconds - 2) / 4) + 2


class SegmentCounter:
    """Assigns v1 animation messages to requests, in the order the requests were sent, and marks each
    request's inferred last one.

    Thread-safety: :meth:`audio` runs on the sending threads, :meth:`frame` on the dispatcher.
    """

    def __init__(self, sample_rate: int = V1_SAMPLE_RATE) -> None:
        self._sample_rate = sample_rate
        self._lock = threading.Lock()
        # req_id -> [audio bytes, expected segments (None until its end chunk), segments received]
        self._requests: OrderedDict[str, list] = OrderedDict()  # type: ignore[type-arg]

    def audio(self, req_id: str, size: int, end: bool) -> None:
        """A chunk of ``size`` audio bytes of ``req_id`` was sent (``end`` on its last)."""
        with self._lock:
            entry = self._requests.setdefault(req_id, [0, None, 0])
            entry[0] += size
            if end:
                entry[1] = expected_segments(entry[0] / 2 / self._sample_rate)
                if entry[2] >= entry[1]:  # as many segments came already: the request is over
                    del self._requests[req_id]

    def frame(self) -> Tuple[str, bool]:
        """``(req_id, last)`` for the animation message that just arrived (``""`` if no request is known)."""
        with self._lock:
            for req_id, entry in self._requests.items():
                entry[2] += 1
                last = entry[1] is not None and entry[2] >= entry[1]
                if last:
                    del self._requests[req_id]
                return req_id, last
            return "", False

    def forget(self, req_id: Optional[str] = None) -> None:
        """Stop expecting frames for ``req_id`` (or for every request)."""
        with self._lock:
            if req_id is None:
                self._requests.clear()
            else:
                self._requests.pop(req_id, None)
