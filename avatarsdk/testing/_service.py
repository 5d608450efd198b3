"""FakeAvatarService: the stand-in's public facade, the console API and the v2 ingress on 127.0.0.1.

It owns the lifecycle (both servers and their threads), the addresses, the scripting calls and the waits on
records; the console (``_console``), the ingress (``_ingress``) and the connections (``_connection``) do the
work on the state they share with it (``_state``).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple, Union

from ._connection import FakeConnection
from ._console import Console
from ._ingress import INGRESS_PATH, Ingress
from ._scripts import FakeRequest, HandshakeReply, TokenReply, UpgradeRejection
from ._state import ServiceState


class FakeAvatarService(ServiceState):
    """A local stand-in for the avatar service: console API + v2 ingress on 127.0.0.1, real sockets.

    By default it behaves like the service: it issues session tokens for its API key, accepts WebSocket
    connections that present one (once: a token is for one connection), confirms the handshake, and answers
    each request with animation frames once its ``end=True`` chunk arrives (one frame per 40 ms of audio,
    or ``frames_per_request``). Everything can be scripted per test, and everything received is recorded.
    ``concurrency_limit=N`` plays a plan's concurrent sessions: with N v2 sessions open, one more is refused
    (``concurrency_refusal``: ``"close"``, ServerError then close 4003 after its configure message, or
    ``"upgrade"``, HTTP 429 ``concurrencyLimit``); ``open_sessions``, ``peak_sessions`` and
    ``concurrency_refusals`` say what happened.

    The console answers every token route (``/session-tokens``, ``/v1/console/session-tokens``,
    ``/v1/auth/session-token``; the token under ``token_key``, inside ``data`` with ``token_in_data``) and the
    bootstrap call of ``region="auto"`` at :attr:`bootstrap_url` (naming ``bootstrap_region``, or as
    :meth:`script_bootstrap` says); ``token_requests`` and ``bootstrap_requests`` record their calls.

    Example::

        with FakeAvatarService() as service:
            with new_avatar_session(**service.session_kwargs(), transport_frames=on_frame) as session:
                session.send_audio(pcm, end=True)

    Thread-safety: scripting and inspection methods are safe from any thread.
    """

    _console: Optional[Console] = None  # both set by start()
    _ingress: Optional[Ingress] = None
    _threads: Tuple[threading.Thread, ...] = ()

    # -- lifecycle

    def start(self) -> FakeAvatarService:
        """Start listening on 127.0.0.1 (``port``/``console_port``, or free ports); a second call does nothing.

        Raises:
            OSError: a port could not be bound (nothing is left listening).
        """
        if self._console is not None:
            return self
        console = Console(self)
        try:
            ingress = Ingress(self)
        except BaseException:
            console.server.server_close()
            raise
        self._console, self._ingress = console, ingress
        threads = []
        for target, name in ((console.serve_forever, "console"), (ingress.serve_forever, "ingress")):
            thread = threading.Thread(target=target, name=f"fakeservice-{name}", daemon=True)
            thread.start()
            threads.append(thread)
        self._threads = tuple(threads)
        return self

    def close(self) -> None:
        """Stop listening, close every connection, and join the fake's threads."""
        self._stopping.set()
        with self._lock:
            connections = list(self.connections)
        for conn in connections:
            conn._abort()
        if self._ingress is not None:
            self._ingress.close()
        if self._console is not None:
            self._console.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> FakeAvatarService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- addresses

    @property
    def console_url(self) -> str:
        """Base URL of the console API (``http://127.0.0.1:PORT``)."""
        assert self._console is not None, "start() the service first"
        return f"{self._scheme}://127.0.0.1:{self._console.port}"

    @property
    def ingress_url(self) -> str:
        """Base URL of the v2 ingress (``http://127.0.0.1:PORT/v2/driveningress``)."""
        assert self._ingress is not None, "start() the service first"
        return f"{self._scheme}://127.0.0.1:{self._ingress.port}{INGRESS_PATH}"

    @property
    def _scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def bootstrap_url(self) -> str:
        """URL of the stand-in's bootstrap call (``region="auto"``), on the console's port."""
        return self.console_url + "/bootstrap"

    def credentials(self) -> Dict[str, str]:
        """``avatar_id``, ``api_key``, ``app_id`` and the two endpoint URLs of this service."""
        return {
            "avatar_id": self.avatar_id,
            "api_key": self.api_key,
            "app_id": self.app_id,
            "console_endpoint_url": self.console_url,
            "ingress_endpoint_url": self.ingress_url,
        }

    def session_kwargs(self, **overrides: Any) -> Dict[str, Any]:
        """Keyword arguments for ``new_avatar_session`` that reach this service: :meth:`credentials` and an
        ``expire_at`` one hour ahead, updated with ``overrides``."""
        kwargs: Dict[str, Any] = dict(self.credentials(), expire_at=datetime.now(timezone.utc) + timedelta(hours=1))
        kwargs.update(overrides)
        return kwargs

    # -- scripting

    def script_token(self, reply: TokenReply) -> None:
        """Answer the next token call with ``reply`` (replies queue up, first in first out)."""
        with self._lock:
            self._token_replies.append(reply)

    def script_bootstrap(self, reply: TokenReply) -> None:
        """Answer the next bootstrap call with ``reply`` instead of ``bootstrap_region`` (replies queue up)."""
        with self._lock:
            self._bootstrap_replies.append(reply)

    def reject_upgrade(self, status: int, body: Union[bytes, str, Dict[str, Any], None] = None) -> None:
        """Reject the next WebSocket upgrade with an HTTP ``status`` and ``body``."""
        with self._lock:
            self._rejections.append(UpgradeRejection(status, body))

    def script_handshake(self, reply: HandshakeReply) -> None:
        """Answer the next connection's handshake with ``reply`` instead of a confirmation."""
        with self._lock:
            self._handshakes.append(reply)

    def expire_token(self, token: str) -> None:
        """Make an issued token count as expired."""
        with self._lock:
            self._tokens[token]["expire_at"] = 0

    # -- records

    @property
    def issued_tokens(self) -> List[str]:
        with self._lock:
            return list(self._tokens)

    def wait_for_connection(self, index: int = -1, timeout: float = 5.0) -> FakeConnection:
        """The connection at ``index`` once its handshake reply has gone out (``-1``: the first new one)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            want = len(self.connections) if index == -1 else index
            while len(self.connections) <= want or self.connections[want].configure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no connection #{want} within {timeout}s")
                self._lock.wait(remaining)
            return self.connections[want]

    def wait_for_open_connections(self, count: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``count`` WebSocket connections are open (see ``open_connections``)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.open_connections != count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.open_connections} connections open, not {count}, after {timeout}s")
                self._lock.wait(remaining)

    def find_request(self, req_id: str) -> Optional[Tuple[FakeConnection, FakeRequest]]:
        """The connection that received request ``req_id``, and the request as received (``None`` if none did)."""
        with self._lock:
            connections = list(self.connections)
        for conn in connections:
            with conn._cond:
                request = conn.requests.get(req_id)
            if request is not None:
                return conn, request
        return None

    def clear_records(self) -> None:
        """Forget the token requests and the connections that have closed (for long runs: the records are
        the stand-in's only growing memory)."""
        with self._lock:
            self.token_requests.clear()
            self.connections = [c for c in self.connections if not c.closed.is_set()]

    def connection(self, index: int = -1) -> FakeConnection:
        """A connection already made (``-1``: the latest)."""
        with self._lock:
            return self.connections[index]
