"""TLS contexts, one per trust configuration, built once per process and shared by every session.

Loading a CA bundle costs tens of milliseconds of CPU; websocket-client and urllib3 load it again for each
connection they open unless they are given a context. :func:`tls_context` builds one
:class:`ssl.SSLContext` per key and hands the same object to the token call (through
``_http_pool``'s adapter) and to the WebSocket (websocket-client's ``sslopt={"context": ...}``, honoured
untouched since websocket-client 1.6.0).

The key is the trust configuration as each client would resolve it:

* ``ca_bundle`` given, or ``verify_tls=False``: one context for both connections (they trust the same).
* the default trust: one context for both connections too, trusting what requests trusts:
  ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` when set, else certifi's bundle. websocket-client's own
  variable still applies to the WebSocket: with ``WEBSOCKET_CLIENT_CA_BUNDLE`` set (to a file or directory that
  exists), the WebSocket trusts it, in a context of its own. (websocket-client alone would trust the system's
  store: one service's two hosts are trusted alike instead, and one bundle is loaded, not two.)
  The environment is read at each use, so a changed variable gets its own context.

urllib3 before 2.0 (which requests 2.26 to 2.29 may bring) wraps sockets to an IP address without a server name
and matches the host name itself: a context it is given must leave ``check_hostname`` off (urllib3 1.26 makes
its own contexts so too) or every call to an IP address fails. Under urllib3 1.x the token call's context is
therefore a second one, with ``check_hostname`` off and urllib3's own match instead; the WebSocket's keeps it on
(websocket-client passes the server name and relies on the context).

The contexts a session will use are built when it (or its pool) is created (``NetworkOptions.prepare_tls``), so
no join pays for loading a bundle; ``init()`` and ``start()`` ask again (the environment may have changed) and
find them built.

A context is never changed once built (the clients are given settings that match it), so threads share it
freely; a forked child keeps the contexts (they hold no socket) and gets a new lock.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from typing import Dict, Optional, Tuple, Union

import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH

logger = logging.getLogger(__name__)

#: For whom a context is built: the token call (requests' defaults) or the WebSocket (websocket-client's).
HTTP, WEBSOCKET = "http", "websocket"

ClientCert = Union[str, Tuple[str, str]]
# verify, CA file or directory (None: system store), client certificate, whether the client matches host names
Key = Tuple[bool, Optional[str], Optional[ClientCert], bool]

#: urllib3 1.x matches host names itself (see the module documentation).
URLLIB3_MATCHES_HOSTNAMES = int(urllib3.__version__.split(".")[0]) < 2  # type: ignore[attr-defined]

_lock = threading.Lock()
_contexts: Dict[Key, ssl.SSLContext] = {}
builds = 0  # how many contexts this process built (for tests)


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def trust_key(verify_tls: bool, ca_bundle: Optional[str], client_cert: Optional[ClientCert], role: str) -> Key:
    """The trust configuration ``role``'s connections resolve the options to (see the module documentation)."""
    by_client = role == HTTP and URLLIB3_MATCHES_HOSTNAMES
    if not verify_tls:
        return (False, None, client_cert, False)
    if ca_bundle is not None:
        return (True, os.fspath(ca_bundle), client_cert, by_client)
    where = os.environ.get("WEBSOCKET_CLIENT_CA_BUNDLE") if role == WEBSOCKET else None
    if not where or not os.path.exists(where):  # websocket-client ignores a variable that names nothing
        where = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or _certifi()
    return (True, where, client_cert, by_client)


def tls_context(
    verify_tls: bool, ca_bundle: Optional[str], client_cert: Optional[ClientCert], role: str
) -> ssl.SSLContext:
    """The process's context for ``role``'s connections under these options (built at the first call).

    Raises:
        OSError, ssl.SSLError: a CA bundle or client certificate could not be loaded.
    """
    key = trust_key(verify_tls, ca_bundle, client_cert, role)
    context = _contexts.get(key)
    if context is not None:
        return context
    with _lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = _build(key)
    return context


def cert_reqs_name(context: ssl.SSLContext) -> str:
    """urllib3's name of ``context``'s verify mode (urllib3 sets it on the context again: the same value)."""
    return "CERT_NONE" if context.verify_mode == ssl.CERT_NONE else "CERT_REQUIRED"


def _build(key: Key) -> ssl.SSLContext:
    global builds
    verify, where, cert, by_client = key
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as urllib3's own contexts
    if by_client:
        context.check_hostname = False  # urllib3 1.x matches the host name itself
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif where is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    elif os.path.isdir(where):
        context.load_verify_locations(capath=where)
    else:
        context.load_verify_locations(cafile=where)
    if cert is not None:
        certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
        context.load_cert_chain(certfile, keyfile)
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog:  # as both clients' own contexts do
        context.keylog_filename = keylog
    builds += 1
    logger.debug("TLS context built (verify=%s, %s)", verify, "system store" if where is None else "CA file")
    return context


def _certifi() -> Optional[str]:
    return str(DEFAULT_CA_BUNDLE_PATH) if DEFAULT_CA_BUNDLE_PATH else None
