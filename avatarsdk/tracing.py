"""W3C Trace Context for a request: :class:`TraceContext`, carried by the first audio chunk of a request.

The service links its own work on a request to the caller's trace when the request's first chunk carries a
``traceparent`` (and optionally a ``tracestate``): give one to :meth:`~avatarsdk.AvatarSession.send_audio`,
:meth:`~avatarsdk.AvatarSession.open_request` or :meth:`~avatarsdk.AvatarSession.stream`, or take the one a
client sent with :meth:`TraceContext.from_headers`. Later chunks never carry one, and a request without one
goes out byte for byte as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

__all__ = ["TraceContext"]

# version "-" trace-id "-" parent-id "-" flags; a later version may append "-" and more fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z", re.ASCII)
_MAX_TRACESTATE = 512  # W3C: 32 list members, 512 characters is what every vendor must accept


@dataclass(frozen=True)
class TraceContext:
    """A W3C Trace Context (``traceparent``, ``tracestate``), checked when made.

    Attributes:
        traceparent: ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``, lowercase; neither id all zeros.
        tracestate: Vendor entries, ``key=value`` separated by commas (``""``: none); at most 512 characters.

    Raises:
        TypeError, ValueError: either field is not of that form (the message names the field).
    """

    traceparent: str
    tracestate: str = ""

    def __post_init__(self) -> None:
        check_traceparent(self.traceparent)
        if not isinstance(self.tracestate, str):
            raise TypeError(f"tracestate: expected a str, got {type(self.tracestate).__name__}")
        if len(self.tracestate) > _MAX_TRACESTATE:
            raise ValueError(f"tracestate: expected at most {_MAX_TRACESTATE} characters, got {len(self.tracestate)}")
        if any(not 0x20 <= ord(ch) < 0x7F for ch in self.tracestate):
            raise ValueError(f"tracestate: expected printable ASCII, got {self.tracestate!r}")

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any]) -> Optional[TraceContext]:
        """The trace context of incoming HTTP headers (``traceparent``, ``tracestate``; any letter case), or
        ``None`` when there is none or it is malformed: a client's bad header never fails the request (W3C:
        an invalid ``traceparent`` is ignored, and with it the ``tracestate``)."""
        parent = _header(headers, "traceparent")
        if parent is None:
            return None
        state = _header(headers, "tracestate") or ""
        try:
            return cls(parent.strip(), state.strip())
        except (TypeError, ValueError):
            try:
                return cls(parent.strip())  # a bad tracestate alone is dropped, the traceparent kept
            except (TypeError, ValueError):
                return None


def check_traceparent(value: Any) -> str:
    """``value`` if it is a valid W3C ``traceparent`` (see :class:`TraceContext`)."""
    if not isinstance(value, str):
        raise TypeError(f"traceparent: expected a str, got {type(value).__name__}")
    match = _TRACEPARENT.match(value)
    expected = "traceparent: expected '00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>' (lowercase)"
    if match is None:
        raise ValueError(f"{expected}, got {value!r}")
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        raise ValueError(f"{expected}: version {version!r} does not allow this form, got {value!r}")
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        raise ValueError(f"traceparent: expected ids that are not all zeros, got {value!r}")
    return value


def _header(headers: Mapping[str, Any], name: str) -> Optional[str]:
    value = headers.get(name)
    if value is None:
        for key, item in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = item
                break
    return value if isinstance(value, str) else None
