"""FaultProxy: a TCP proxy on 127.0.0.1 that can break the network between a client and the stand-in."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import Callable, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)


class FaultProxy:
    """Forwards TCP connections to ``target`` and injects network faults on demand.

    * :meth:`blackhole` - keep every connection open but forward nothing either way (a dead peer: no FIN, no
      data, pings unanswered); :meth:`resume` forwards again.
    * :meth:`reset` - abort every connection with a TCP RST.

    Example::

        with FakeAvatarService() as service, FaultProxy(service.ingress_url) as proxy:
            session = new_avatar_session(**service.session_kwargs(ingress_endpoint_url=proxy.url))

    Thread-safety: every method is safe from any thread.
    """

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        assert parts.hostname is not None and parts.port is not None, "target_url needs a host and a port"
        self._target = (parts.hostname, parts.port)
        self._target_url = target_url
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._pairs: List[Tuple[socket.socket, socket.socket]] = []
        self._threads: List[threading.Thread] = []
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._stopping = False
        self._counted = threading.Condition()
        self.connections = 0
        self.bytes_up = 0  # client -> target, forwarded
        self.bytes_down = 0  # target -> client, forwarded

    @property
    def url(self) -> str:
        """``target_url`` with the proxy's address in place of the target's."""
        parts = urlsplit(self._target_url)
        netloc = f"127.0.0.1:{self._listener.getsockname()[1]}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def start(self) -> FaultProxy:
        self._spawn(self._accept, "accept")
        return self

    def close(self) -> None:
        """Stop accepting, close every connection and join the proxy's threads."""
        with self._lock:
            self._stopping = True
            pairs = list(self._pairs)
        self._forwarding.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for a, b in pairs:
            _shut_and_close(a)
            _shut_and_close(b)
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever a connection is accepted or bytes are
        forwarded)."""
        with self._counted:
            if not self._counted.wait_for(predicate, timeout):
                raise TimeoutError(f"proxy condition not met within {timeout}s")

    # -- faults

    def blackhole(self) -> None:
        """Forward nothing (data is read and dropped), keep connections open: the peer looks dead."""
        self._forwarding.clear()

    def resume(self) -> None:
        self._forwarding.set()

    def reset(self) -> None:
        """Abort every connection with a TCP RST (``SO_LINGER`` 0)."""
        with self._lock:
            pairs = list(self._pairs)
        for a, b in pairs:
            for sock in (a, b):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    # Wake the pump blocked in recv() (closing alone would not: its call holds the socket,
                    # and the RST goes out only when the last holder lets go). SHUT_RD sends nothing.
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
                _close(sock)

    # -- internals

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"fakeservice-proxy-{name}", daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._stopping:
                    _close(client)
                    _close(upstream)
                    return
                self._pairs.append((client, upstream))
                self.connections += 1
            with self._counted:
                self._counted.notify_all()
            self._spawn(self._pump, "up", client, upstream, "bytes_up")
            self._spawn(self._pump, "down", upstream, client, "bytes_down")

    def _pump(self, source: socket.socket, sink: socket.socket, counter: str) -> None:
        def sent(size: int) -> None:
            with self._counted:
                setattr(self, counter, getattr(self, counter) + size)
                self._counted.notify_all()

        pump(source, sink, passes=self._forwarding.is_set, sent=sent)  # blackholed: dropped


def pump(
    source: socket.socket,
    sink: socket.socket,
    *,
    passes: Optional[Callable[[], bool]] = None,
    sent: Optional[Callable[[int], None]] = None,
) -> None:
    """Forward ``source`` to ``sink`` until ``source`` ends, then half-close ``sink``: one direction of a relay
    (FaultProxy's, the tests' CONNECT proxy's, the benchmarks' delaying TLS proxy's). ``passes``: whether what
    is read now is forwarded (else dropped); ``sent``: told the size of each block forwarded."""
    while True:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        if not data:
            shutdown_write(sink)
            return
        if passes is not None and not passes():
            continue
        try:
            sink.sendall(data)
        except OSError:
            return
        if sent is not None:
            sent(len(data))


def shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    try:
        sock.close()
    except OSError:
        pass


def _shut_and_close(sock: socket.socket) -> None:
    """Shut the socket down both ways, then close it: the shutdown wakes a thread blocked in its ``recv()``
    (closing alone would not, and that thread would hold the socket open)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    _close(sock)
