"""An HTTP CONNECT proxy on 127.0.0.1 for tests: it records the targets it tunnels to, and sends every
tunnel to 127.0.0.1 (so hosts like 127.0.0.2, which websocket-client does not exempt from proxies, work), on the
target's port or on the one ``route(host, port)`` picks (so the service's real host names reach a stand-in)."""

from __future__ import annotations

import socket
import threading
from typing import Callable, List, Optional, Tuple

from avatarsdk.testing._proxy import _close, _shut_and_close, pump


class ConnectProxy:
    def __init__(self, route: Optional[Callable[[str, int], int]] = None) -> None:
        self._route = route
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.targets: List[Tuple[str, int]] = []
        self._threads: List[threading.Thread] = []
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> ConnectProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _shut_and_close(sock)
        for thread in list(self._threads):
            thread.join(5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._spawn(self._tunnel, client)

    def _tunnel(self, client: socket.socket) -> None:
        with self._lock:
            self._sockets.append(client)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                _close(client)
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(line) < 2 or line[0] != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            _close(client)
            return
        host, _, port = line[1].rpartition(":")
        target = (host.strip("[]"), int(port))
        with self._lock:
            self.targets.append(target)
        try:
            local_port = self._route(*target) if self._route is not None else target[1]
            upstream = socket.create_connection(("127.0.0.1", local_port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            _close(client)
            return
        with self._lock:
            self._sockets.append(upstream)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        rest = head.split(b"\r\n\r\n", 1)[1]
        if rest:
            upstream.sendall(rest)
        self._spawn(pump, upstream, client)
        pump(client, upstream)
