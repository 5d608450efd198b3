"""The stand-in's scripted replies (what a test queues for the next call) and its records (what it received).

Plain data: the console, the ingress and the connections read the scripts and fill in the records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

# ------------------------------------------------------------------------------------------- scripts


@dataclass
class TokenReply:
    """A scripted answer to one token call (or bootstrap call): ``status`` and ``body`` (bytes, text, or
    JSON-able)."""

    status: int = 200
    body: Union[bytes, str, Dict[str, Any], List[Any], None] = None
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (to exercise timeouts)


@dataclass
class UpgradeRejection:
    """A scripted HTTP answer to one WebSocket upgrade instead of ``101 Switching Protocols``."""

    status: int
    body: Union[bytes, str, Dict[str, Any], None] = None


@dataclass
class Confirm:
    """Handshake reply: SERVER_CONFIRM_SESSION (``connection_id`` defaults to a fresh ``conn-N``).

    ``then_frames``: animation frames (request id ``"early"``) written in the same ``send`` as the
    confirmation, so they reach the client together with it.
    """

    connection_id: Optional[str] = None
    then_frames: int = 0
    capabilities: Optional[Tuple[str, ...]] = None  # None: the service's own (FakeAvatarService.capabilities)


@dataclass
class HandshakeError:
    """Handshake reply: SERVER_ERROR, then (if ``close_code``) a close frame."""

    code: int
    message: str = ""
    close_code: Optional[int] = None


@dataclass
class HandshakeClose:
    """Handshake reply: a close frame with ``code`` and ``reason``."""

    code: int
    reason: str = ""


@dataclass
class HandshakeRaw:
    """Handshake reply: these bytes as a binary message (or ``text`` as a text message)."""

    data: bytes = b""
    text: Optional[str] = None


@dataclass
class HandshakeSilence:
    """Handshake reply: none; the connection stays open and silent."""


@dataclass
class HandshakeDrop:
    """Handshake reply: the TCP connection is cut without a close frame."""


HandshakeReply = Union[Confirm, HandshakeError, HandshakeClose, HandshakeRaw, HandshakeSilence, HandshakeDrop]

# ------------------------------------------------------------------------------------------- records


@dataclass
class TokenRequest:
    """A token call (or bootstrap call) as the fake received it: headers (lower-case names), body, and path."""

    headers: Dict[str, str]
    body: bytes
    path: str = "/session-tokens"

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class FakeRequest:
    """One request (utterance) as the fake received it."""

    req_id: str
    audio: bytearray = field(default_factory=bytearray)
    chunks: int = 0
    ended: bool = False
    interrupted: bool = False
    #: Each chunk's ``(traceparent, tracestate)``, or ``None`` for a chunk without a trace context, in order.
    trace_contexts: List[Optional[Tuple[str, str]]] = field(default_factory=list)

    @property
    def trace_context(self) -> Optional[Tuple[str, str]]:
        """The first chunk's ``(traceparent, tracestate)`` (``None``: the request came without one)."""
        return self.trace_contexts[0] if self.trace_contexts else None


# ---------------------------------------------------------------------------------------- HTTP bodies


def body_bytes(body: Union[bytes, str, Dict[str, Any], List[Any], None]) -> Tuple[bytes, str]:
    """A scripted body as bytes, and its content type."""
    if body is None:
        return b"", "text/plain"
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    return json.dumps(body).encode("utf-8"), "application/json"


def jsonapi_error(status: int, code: str, title: str, detail: str = "") -> Dict[str, Any]:
    """A JSON:API error document as the service sends it."""
    return {"errors": [{"id": "fake", "status": status, "code": code, "title": title, "detail": detail}]}
