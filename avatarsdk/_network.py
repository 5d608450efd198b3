"""TLS and proxy settings, applied alike to the token call (requests) and the WebSocket (websocket-client).

By default both verify the server's certificate against what requests trusts (``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE``, else certifi's bundle; ``WEBSOCKET_CLIENT_CA_BUNDLE`` still applies to the WebSocket; see
``_tls``) and take proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), as requests and
websocket-client users expect. The options make each of those explicit.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional
from urllib.parse import unquote, urlsplit

from ._tls import HTTP, WEBSOCKET, ClientCert, tls_context

logger = logging.getLogger(__name__)


class InsecureTransportWarning(UserWarning):
    """A credential would travel where others can read it (plain HTTP/WS to another host, a URL query, or
    TLS without verification)."""


@dataclass(frozen=True)
class NetworkOptions:
    """Checked TLS and proxy settings of one session."""

    verify_tls: bool = True
    ca_bundle: Optional[str] = None
    client_cert: Optional[ClientCert] = None
    proxy: Optional[str] = None

    @classmethod
    def checked(
        cls,
        *,
        verify_tls: Any = True,
        ca_bundle: Any = None,
        client_cert: Any = None,
        proxy: Any = None,
    ) -> NetworkOptions:
        """The options, each checked (``ValueError``/``TypeError`` naming it) before any I/O."""
        if not isinstance(verify_tls, bool):
            raise TypeError(f"verify_tls: expected a bool, got {type(verify_tls).__name__}")
        if ca_bundle is not None:
            _check_file("ca_bundle", ca_bundle)
        if client_cert is not None:
            if isinstance(client_cert, tuple):
                if len(client_cert) != 2:
                    raise ValueError("client_cert: expected a PEM path or a (certificate, key) pair of paths")
                _check_file("client_cert[0] (certificate)", client_cert[0])
                _check_file("client_cert[1] (key)", client_cert[1])
            else:
                _check_file("client_cert", client_cert)
        if proxy is not None:
            if not isinstance(proxy, str):
                raise TypeError(f"proxy: expected a URL string, got {type(proxy).__name__}")
            parts = urlsplit(proxy)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("proxy: expected http://[user:password@]host:port")
        if not verify_tls:
            warnings.warn(
                "verify_tls=False: the server's certificate is not checked; credentials can be intercepted",
                InsecureTransportWarning,
                stacklevel=user_stacklevel(),
            )
        return cls(verify_tls, ca_bundle, client_cert, proxy)

    def requests_kwargs(self) -> Dict[str, Any]:
        """Per-request keywords for requests: the proxy. TLS lives in the shared session's context
        (``_http_pool``, ``_tls``); environment proxies still apply when ``proxy`` is None."""
        return {"proxies": {"http": self.proxy, "https": self.proxy}} if self.proxy is not None else {}

    def tls_context(self, role: str) -> ssl.SSLContext:
        """The process's shared TLS context of this trust configuration for ``role`` (``_tls.HTTP`` or
        ``_tls.WEBSOCKET``), built at the first call (``OSError``/``ssl.SSLError``: a file would not load)."""
        return tls_context(self.verify_tls, self.ca_bundle, self.client_cert, role)

    def prepare_tls(self, console_url: Optional[str], ingress_url: Optional[str]) -> None:
        """Build the TLS contexts the session's connections to these URLs will use (``None``: not known yet, as
        with ``region="auto"``: taken as secure), so a join does not load a CA bundle (tens of milliseconds of
        CPU, once per process and trust configuration) and a file that does not load is reported before any I/O.

        Raises:
            ValueError: ``ca_bundle`` or ``client_cert`` would not load (the message names which). A default
                store that does not load (an environment variable naming a bad file) is left for ``init()`` and
                ``start()`` to report, as the clients would.
        """
        for role in secure_roles(console_url, ingress_url):
            try:
                self.tls_context(role)
            except (OSError, ssl.SSLError) as exc:
                if self.ca_bundle is None and self.client_cert is None:
                    return
                raise ValueError(self._unloadable(exc)) from None

    def _unloadable(self, exc: BaseException) -> str:
        if self.ca_bundle is not None and not _loads_as_ca(self.ca_bundle):
            return f"ca_bundle: could not load {self.ca_bundle!r} as PEM certificates ({exc})"
        return f"client_cert: could not load {self.client_cert!r} as a PEM certificate and key ({exc})"

    def websocket_options(self, *, secure: bool = True) -> Dict[str, Any]:
        """Keyword options for websocket-client's ``connect`` (it reads environment proxies itself); for a
        ``secure`` (wss) URL, TLS as the process's shared context of this trust configuration."""
        options: Dict[str, Any] = {}
        if secure:
            context = self.tls_context(WEBSOCKET)
            sslopt: Dict[str, Any] = {"context": context}
            if context.verify_mode == ssl.CERT_NONE:  # what websocket-client checks besides the context
                sslopt.update(cert_reqs=ssl.CERT_NONE, check_hostname=False)
            options["sslopt"] = sslopt
        if self.proxy is not None:
            parts = urlsplit(self.proxy)
            options.update(
                http_proxy_host=parts.hostname,
                http_proxy_port=parts.port or (443 if parts.scheme == "https" else 80),
                proxy_type="http",
                # An explicit proxy carries every connection, as in requests. websocket-client would exempt
                # localhost/127.0.0.1 (its default no-proxy list, applied whenever the list is empty).
                http_no_proxy=["no-proxy.avatarsdk.invalid"],
            )
            if parts.username:
                options["http_proxy_auth"] = (unquote(parts.username), unquote(parts.password or ""))
        return options


def secure_roles(console_url: Optional[str], ingress_url: Optional[str]) -> List[str]:
    """Which shared TLS contexts (``_tls.HTTP``, ``_tls.WEBSOCKET``) connections to these URLs use."""
    roles = []
    if console_url is None or urlsplit(console_url).scheme.lower() == "https":
        roles.append(HTTP)
    if ingress_url is None or urlsplit(ingress_url).scheme.lower() in ("https", "wss"):
        roles.append(WEBSOCKET)
    return roles


def _loads_as_ca(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError):
        return False
    return True


def user_stacklevel() -> int:
    """The ``stacklevel`` of the innermost frame outside avatarsdk, so a warning points at the user's code."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "avatarsdk":
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _check_file(field: str, value: Any) -> None:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{field}: expected a file path, got {type(value).__name__}")
    if not os.path.isfile(value):
        raise ValueError(f"{field}: expected a readable file, got {os.fspath(value)!r}")


def is_loopback(host: Optional[str]) -> bool:
    """Whether ``host`` is this machine (``localhost`` or a loopback address)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_insecure_transport(console_url: str, ingress_url: str, *, use_query_auth: bool) -> None:
    """Warn (once per call site) where a credential would travel readable by others."""
    for name, url, what in (
        ("console_endpoint_url", console_url, "the API key"),
        ("ingress_endpoint_url", ingress_url, "the session token"),
    ):
        parts = urlsplit(url)
        if parts.scheme.lower() in ("http", "ws") and not is_loopback(parts.hostname):
            warnings.warn(
                f"{name}: {what} would travel unencrypted ({parts.scheme}://) to {parts.hostname}; use https://",
                InsecureTransportWarning,
                stacklevel=user_stacklevel(),
            )
    if use_query_auth:
        warnings.warn(
            "use_query_auth=True: the session token travels in the URL query, where proxies and servers may log"
            " it; header auth (the default) keeps it out of URLs",
            InsecureTransportWarning,
            stacklevel=user_stacklevel(),
        )
