"""Who may spend the account's credits: the relays' access check, per-client stream limit and error shape.

Every ``POST /speak`` borrows a session of the account (billed per connected second, and one of the plan's
concurrent sessions), so a relay serving the real service checks each caller:

- ``RELAY_TOKEN`` set: a request needs ``Authorization: Bearer <RELAY_TOKEN>`` (compared in constant time),
  else 401. An application with its own authentication passes ``authorize`` instead (a callable given the
  request's ``Authorization`` header and client address, returning whether to serve it).
- Neither, against the real service: only loopback clients are served (403 for others), and the samples'
  own servers refuse to listen on a non-loopback address (:func:`refuse_open_bind`). Against the built-in
  stand-in nothing is spent: everyone is served.
- Each client address has at most ``RELAY_MAX_STREAMS_PER_CLIENT`` (2) streams at once; past that, 429.

Every rejection has the same JSON body, ``{"error": "<code>", "message": "<text>"}`` (:func:`error_body`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

TOKEN_VARIABLE = "RELAY_TOKEN"
LIMIT_VARIABLE = "RELAY_MAX_STREAMS_PER_CLIENT"
DEFAULT_STREAMS_PER_CLIENT = 2
RAW_PCM_TYPES = ("application/octet-stream", "audio/pcm")  # a body that is not WAV is raw PCM only with these
WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")

Authorize = Callable[[Optional[str], str], bool]  # (the Authorization header, the client's address) -> allowed


class Rejected(Exception):
    """A request the relay does not serve: answer ``status`` with :func:`error_body`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "request_entity_too_large"}


def error_body(code: str, message: str) -> Dict[str, str]:
    """The one JSON shape of every rejection."""
    return {"error": code, "message": message}


def http_code(status: int) -> str:
    """The ``error`` of a rejection by the framework itself (no route, a wrong method, a body too large)."""
    return HTTP_CODES.get(status, f"http_{status}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_bind(host: str, local: bool, guard: Guard) -> Optional[str]:
    """Why a sample's server must not listen on ``host`` (``None``: it may): the real service, a
    non-loopback address, and no access check."""
    if local or guard.checks_access or is_loopback(host):
        return None
    return (
        f"refusing to serve the real avatar service on {host} without an access check: anyone who can reach it"
        f" would spend the account's credits. Set {TOKEN_VARIABLE} (clients send 'Authorization: Bearer <token>')"
        " or listen on 127.0.0.1"
    )


class Guard:
    """The access check and the per-client count of open streams of one relay (thread-safe)."""

    def __init__(
        self,
        *,
        local: bool,
        token: Optional[str] = None,
        authorize: Optional[Authorize] = None,
        streams_per_client: int = DEFAULT_STREAMS_PER_CLIENT,
    ) -> None:
        if streams_per_client < 1:
            raise ValueError(f"{LIMIT_VARIABLE} must be at least 1, got {streams_per_client}")
        self.local = local
        self._token = token or None
        self._authorize = authorize
        self.streams_per_client = streams_per_client
        self._open: Dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, local: bool, authorize: Optional[Authorize] = None) -> Guard:
        """``RELAY_TOKEN`` and ``RELAY_MAX_STREAMS_PER_CLIENT`` from the environment."""
        raw = os.environ.get(LIMIT_VARIABLE, str(DEFAULT_STREAMS_PER_CLIENT))
        try:
            limit = int(raw)
        except ValueError:
            raise ValueError(f"{LIMIT_VARIABLE} must be a whole number, got {raw!r}") from None
        token = os.environ.get(TOKEN_VARIABLE) or None
        return cls(local=local, token=token, authorize=authorize, streams_per_client=limit)

    @property
    def checks_access(self) -> bool:
        return self._token is not None or self._authorize is not None

    def check(self, authorization: Optional[str], client: str) -> None:
        """Raise :class:`Rejected` (401/403) unless this caller may use the relay."""
        if self._authorize is not None:
            if not self._authorize(authorization, client):
                raise Rejected(403, "forbidden", "the application's authentication refused this request")
            return
        if self._token is not None:
            expected = f"Bearer {self._token}".encode()
            if not hmac.compare_digest((authorization or "").encode(), expected):
                raise Rejected(401, "unauthorized", "send 'Authorization: Bearer <token>' with the relay's token")
            return
        if not self.local and not is_loopback(client):
            raise Rejected(403, "forbidden", f"without {TOKEN_VARIABLE} this relay serves loopback clients only")

    def enter(self, client: str) -> Callable[[], None]:
        """Count a stream of ``client``; return the function that ends it (once). Raises 429 past the limit."""
        with self._lock:
            count = self._open.get(client, 0)
            if count >= self.streams_per_client:
                raise Rejected(429, "too_many_streams", f"at most {self.streams_per_client} streams per client at once")
            self._open[client] = count + 1
        done = threading.Event()

        def leave() -> None:
            if done.is_set():
                return
            done.set()
            with self._lock:
                left = self._open.pop(client, 1) - 1
                if left:
                    self._open[client] = left

        return leave


def check_content_type(content_type: Optional[str], body: bytes, wav: bool) -> None:
    """A body that is not a form: a WAV file (``wav``: its header says so, whatever the content type; some
    servers give a request without one ``text/plain``) or raw PCM, which needs one of ``RAW_PCM_TYPES``.
    Raises :class:`Rejected` (415) otherwise; an empty body (the bundled clip) passes."""
    if not body or wav:
        return
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in RAW_PCM_TYPES:
        return
    accepted = ", ".join(RAW_PCM_TYPES + WAV_TYPES + ("multipart/form-data",))
    raise Rejected(415, "unsupported_media_type", f"Content-Type {kind or '(none)'} is not one of: {accepted}")


class Guarded:
    """A response body that ends its client's stream count when it is closed (or exhausted)."""

    def __init__(self, body: Iterable[bytes], leave: Callable[[], None]) -> None:
        self._body = body
        self._items = iter(body)
        self._leave = leave

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._items)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            closer = getattr(self._body, "close", None)
            if callable(closer):
                closer()
        finally:
            self._leave()


def client_of(remote: Optional[Tuple[str, int]]) -> str:
    """A client's address from an ASGI scope's ``client`` (``"unknown"`` when the server gave none)."""
    return remote[0] if remote else "unknown"
