"""How a session gets a connection: the token call (after resolving ``region="auto"``, at the first), then the
WebSocket and the handshake (for ``init()`` and ``start()``, and for each reconnect)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Optional, Tuple

import requests

from ._backoff import NO_RETRIES, Backoff
from ._bootstrap import auto_region, region_endpoints
from ._config_checks import endpoint_fields, secrets_of
from ._connection import Connection
from ._core import Core
from ._lifecycle import State
from ._token import request_session_token
from ._validation import token_expiry
from .errors import PHASE_SESSION_TOKEN, AvatarSDKError, AvatarSDKErrorCode
from .regions import AUTO_REGION

logger = logging.getLogger(__name__)


class Connector:
    """Token calls (over one kept-alive HTTP connection pool per session) and connects, for one session."""

    __slots__ = ("_auto", "_core", "_http")

    def __init__(self, core: Core) -> None:
        self._core = core
        self._http: Optional[requests.Session] = None
        config = core.config
        self._auto = config.region == AUTO_REGION and not (config.console_endpoint_url and config.ingress_endpoint_url)

    def token(self, retry: Backoff) -> str:
        """A session token from the console (``ValueError``: ``expire_at`` has passed), valid until
        ``expire_at`` or, without one, for an hour from now."""
        config = self._core.config
        given = None if config.expire_at is None else token_expiry(config.expire_at)  # passed: fails before I/O
        if self._http is None:
            self._http = requests.Session()
        if self._auto:
            self._resolve_region()
        telemetry = self._core.telemetry
        if telemetry is not None:
            url = config.console_endpoint_url
            return telemetry.session_init(url, lambda on_attempt: self._token(retry, given, on_attempt))
        return self._token(retry, given, None)

    def _token(self, retry: Backoff, given: Optional[datetime], on_attempt: Optional[Callable[[int], None]]) -> str:
        config, options = self._core.config, self._core.options
        return request_session_token(
            config.console_endpoint_url,
            api_key=config.api_key,
            app_id=config.app_id,
            route=config.token_route or "console",
            expire_at=given or token_expiry(None),  # an hour from this call
            timeout=options.http_timeout,
            retry=retry,
            http=self._http,
            request_options=options.network.requests_kwargs(),
            on_attempt=on_attempt,
        )

    def _resolve_region(self) -> None:
        """``region="auto"``: ask the bootstrap service (or its cache) and fill in the URLs not given, once."""
        core = self._core
        config, options = core.config, core.options
        region = auto_region(
            config.app_id, url=options.bootstrap_url, http=self._http, request_options=options.network.requests_kwargs()
        )
        endpoints = region_endpoints(region)
        with core.lock:
            fields = endpoint_fields(config, endpoints)
            for name, value in fields.items():
                setattr(config, name, value)
            self._auto = False
        logger.debug("session #%d: region %s (%s)", core.number, region, ", ".join(sorted(fields)) or "no URL taken")

    def reconnect_token(self) -> str:
        """A session token for a reconnect (the reconnect's own backoff stands in for the token call's retries)."""
        try:
            return self.token(NO_RETRIES)
        except ValueError:
            raise AvatarSDKError(
                AvatarSDKErrorCode.sessionTokenExpired,
                "cannot reconnect: the session's expire_at has passed",
                phase=PHASE_SESSION_TOKEN,
            ) from None

    def connect(self, token: str, state: State) -> Tuple[Connection, Tuple[str, Tuple[str, ...]]]:
        """:meth:`_connect`, in a span if traced."""
        telemetry = self._core.telemetry
        if telemetry is not None:
            return telemetry.session_start(lambda: self._connect(token, state))
        return self._connect(token, state)

    def _connect(self, token: str, state: State) -> Tuple[Connection, Tuple[str, Tuple[str, ...]]]:
        """Open a connection with ``token`` and complete the handshake (for ``start()`` and reconnects, while the
        session is in ``state``); return it with what its confirmation said: its id and the server's
        capabilities. A ``close()`` meanwhile
        shuts the connection down (the handshake then fails) or, before it is open, makes this raise
        ``ValueError``."""
        core = self._core
        options = core.options
        url, headers = core.ingress.target(token)
        conn = Connection.open(
            url,
            headers,
            connect_timeout=options.connect_timeout,
            secrets=secrets_of(core.config, token),
            max_message_size=options.max_message_size,
            options=options.network.websocket_options(),
            keepalive=options.keepalive,
        )
        with core.lock:
            closing = core.state is not state
            if not closing:
                core.conn = conn  # close() meanwhile shuts it down, cutting the handshake short
        if closing:
            conn.close()
            raise ValueError("the session was closed while connecting")
        try:
            confirmed = core.ingress.handshake(conn, options.handshake_timeout)
            conn.set_timeout(options.send_timeout)
        except BaseException:
            conn.close()
            raise
        return conn, confirmed

    def close(self) -> None:
        """Release the token calls' connection pool."""
        http, self._http = self._http, None
        if http is not None:
            http.close()
