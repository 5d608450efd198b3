"""The benchmark's stand-in service, run in its own process: ``python -m benchmarks.server``.

One loopback port serves both the console API (``POST .../session-tokens`` answers any API key with a token)
and the v2 ingress WebSocket, from one thread with non-blocking sockets and a selector, so that hundreds of
paced streams and a full-speed burst cost it little CPU and it never shares a GIL with a client.

What a connection's server does is chosen by the ingress URL's path, which every client keeps when it
appends ``/websocket``: ``/bench/mode=M/frames=N/size=S/interval_us=I/warmup=W/delay_us=D/v2/driveningress``.

- Handshake: CLIENT_CONFIGURE_SESSION is answered with SERVER_CONFIRM_SESSION (``bench-conn-N``).
- Audio is unmasked, parsed for its ``req_id`` and ``end`` flag, and dropped.
- The chunk with ``end=true`` is the trigger. The first trigger gets a burst of ``W`` frames when ``W > 0``
  (a warm-up); every other trigger gets, for that ``req_id``:
  ``burst``: ``N`` frames of ``S`` bytes, all WebSocket frames pre-encoded and written back to back (laid
  out like ``avatarsdk.testing.animation_frame``'s: an undeclared filler field, then the declared fields);
  ``paced``: ``N`` frames, one every ``I`` µs from ``D`` µs after the trigger on, each stamped with its
  scheduled and actual send time (``time.monotonic_ns()``);
  ``ack``: one frame. The last frame of a response has ``end=true``.
- A token call's connection stays open for more (HTTP/1.1 keep-alive, as the service's console); any other HTTP
  answer closes it.
- Pings are answered, close frames echoed, then the socket is closed.
- ``GET /bench/stats`` answers with the paced streams' counters since the start, as JSON: ``streams``
  (scheduled), ``frames_sent`` (handed to their sockets) and ``frames_unsent`` (not sent: their connection
  had closed); the soak benchmark compares them with what its sessions received.

The process prints ``READY <port>`` once listening and exits when its standard input reaches end of file.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import itertools
import json
import os
import selectors
import socket
import struct
import sys
import time
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

from . import wire

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BURST_BLOCK_FRAMES = 1024  # frames per pre-encoded block of a burst (one block object is sent repeatedly)
MAX_HEADER = 65536
RECV_SIZE = 262144

_PACK_U64 = struct.Struct("<Q").pack_into


class Stream:
    """A paced response: frame ``k`` is due at ``start_ns + k * interval_ns``."""

    __slots__ = ("conn", "count", "interval_ns", "last", "next_index", "offset", "start_ns", "template")

    def __init__(
        self, conn: Conn, *, template: bytes, last: bytes, offset: int, count: int, interval_ns: int, delay_ns: int
    ) -> None:
        self.conn = conn
        self.template = template
        self.last = last
        self.offset = offset
        self.count = count
        self.interval_ns = interval_ns
        self.start_ns = time.monotonic_ns() + delay_ns
        self.next_index = 0


class Conn:
    """One accepted TCP connection: HTTP first, then (after an upgrade) WebSocket frames."""

    __slots__ = (
        "closing",
        "connection_id",
        "fragments",
        "inbuf",
        "is_ws",
        "mode",
        "open",
        "out",
        "params",
        "server",
        "sock",
        "triggers",
        "writing",
    )

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.inbuf = bytearray()
        self.out: Deque[memoryview] = deque()
        self.writing = False
        self.closing = False  # close once the output is flushed
        self.open = True
        self.is_ws = False
        self.params: Dict[str, int] = {}
        self.mode = ""
        self.connection_id = ""
        self.triggers = 0
        self.fragments: List[bytes] = []

    # ------------------------------------------------------------------------------------ output

    def write(self, data: bytes) -> None:
        if not self.open:
            return
        if not self.out:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close()
                return
            if sent == len(data):
                return
            self.out.append(memoryview(data)[sent:])
        else:
            self.out.append(memoryview(data))
        self._want_write(True)

    def write_many(self, chunks: List[memoryview]) -> None:
        if not self.open:
            return
        self.out.extend(chunks)
        self.flush()

    def flush(self) -> None:
        out = self.out
        try:
            while out:
                head = out[0]
                sent = self.sock.send(head)
                if sent == len(head):
                    out.popleft()
                else:
                    out[0] = head[sent:]
                    break
        except BlockingIOError:
            pass
        except OSError:
            self.close()
            return
        if out:
            self._want_write(True)
        else:
            self._want_write(False)
            if self.closing:
                self.close()

    def _want_write(self, flag: bool) -> None:
        if flag != self.writing and self.open:
            self.writing = flag
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if flag else 0)
            self.server.selector.modify(self.sock, events, self)

    def close_after_flush(self) -> None:
        self.closing = True
        if not self.out:
            self.close()

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        self.out.clear()
        try:
            self.server.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()

    # ------------------------------------------------------------------------------------- input

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        self.inbuf += data
        if self.is_ws:
            self._ws_frames()
        else:
            self._http()

    def _http(self) -> None:
        end = self.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.inbuf) > MAX_HEADER:
                self.close()
            return
        head = bytes(self.inbuf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
        except ValueError:
            self.close()
            return
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(self.inbuf) < end + 4 + length:
            return  # wait for the body
        del self.inbuf[: end + 4 + length]
        path = urlsplit(target).path
        if method == "POST" and path.endswith("/session-tokens"):
            self._token_reply(headers)
        elif method == "GET" and path == "/bench/stats":
            self._http_reply(200, json.dumps(self.server.stats).encode(), "application/json")
        elif method == "GET" and headers.get("upgrade", "").lower() == "websocket":
            self._upgrade(target, headers)
        else:
            self._http_reply(404, b"404 page not found", "text/plain")

    def _http_reply(self, status: int, body: bytes, ctype: str, reason: str = "", *, keep: bool = False) -> None:
        """Answer; ``keep``: the connection stays open for the next request (the console's token calls)."""
        reason = reason or {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n"
        )
        self.write(head.encode("latin-1") + body)
        if not keep:
            self.close_after_flush()
        elif self.inbuf:
            self._http()  # a pipelined next request

    def _token_reply(self, headers: Dict[str, str]) -> None:
        if not headers.get("x-api-key"):
            self._http_reply(401, b'{"errors": [{"status": 401, "title": "Unauthorized"}]}', "application/json")
            return
        self.server.counter += 1
        token = f"bench-token-{self.server.counter}"
        self._http_reply(200, json.dumps({"sessionToken": token}).encode(), "application/json", keep=True)

    def _upgrade(self, target: str, headers: Dict[str, str]) -> None:
        parts = urlsplit(target)
        key = headers.get("sec-websocket-key", "")
        session_key = headers.get("x-session-key") or ("sessionKey=" in parts.query)
        if not key or not session_key:
            self._http_reply(400, b'{"errors": [{"status": 400, "detail": "empty token"}]}', "application/json")
            return
        params: Dict[str, int] = {"frames": 1, "size": 1200, "interval_us": 40000, "warmup": 0, "delay_us": 0}
        mode = "ack"
        for segment in unquote(parts.path).split("/"):
            name, eq, value = segment.partition("=")
            if not eq:
                continue
            if name == "mode":
                mode = value
            else:
                params[name] = int(value)
        if mode not in ("burst", "paced", "ack"):
            self._http_reply(400, b"unknown mode", "text/plain")
            return
        accept = base64.b64encode(hashlib.sha1(key.encode("latin-1") + WS_GUID).digest()).decode()
        self.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode("latin-1")
        )
        self.is_ws = True
        self.mode = mode
        self.params = params
        self.server.counter += 1
        self.connection_id = f"bench-conn-{self.server.counter}"
        if self.inbuf:
            self._ws_frames()

    def _ws_frames(self) -> None:
        buf = self.inbuf
        pos, size = 0, len(buf)
        while self.open and size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            masked = second & 0x80
            if masked:
                head += 4
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            if masked:
                payload = _unmask(payload, bytes(buf[pos + head - 4 : pos + head]))
            pos += head + length
            self._ws_frame(first & 0x80, first & 0x0F, payload)
        del buf[:pos]

    def _ws_frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == 0x0:  # continuation
            self.fragments.append(payload)
            if not fin:
                return
            payload = b"".join(self.fragments)
            self.fragments = []
            opcode = 0x2
        elif opcode in (0x1, 0x2) and not fin:
            self.fragments = [payload]
            return
        if opcode == 0x2:
            self._message(payload)
        elif opcode == 0x8:
            code = payload[:2] if len(payload) >= 2 else b"\x03\xe8"
            self.write(wire.ws_frame_header(2, wire.OP_CLOSE) + code)
            self.close_after_flush()
        elif opcode == 0x9:
            self.write(wire.ws_frame_header(len(payload), wire.OP_PONG) + payload)

    def _message(self, payload: bytes) -> None:
        fields = wire.parse_fields(payload)
        kind = fields.get(1, 0)
        if kind == wire.MESSAGE_CLIENT_AUDIO_INPUT:
            chunk = fields.get(4, b"")
            assert isinstance(chunk, bytes)
            audio = wire.parse_fields(chunk)
            if audio.get(2):
                req_id = audio.get(1, b"")
                assert isinstance(req_id, bytes)
                self._respond(req_id.decode())
        elif kind == wire.MESSAGE_CLIENT_CONFIGURE_SESSION:
            confirm = wire.field_bytes(3, wire.field_bytes(1, self.connection_id.encode())) + wire.field_varint(
                1, wire.MESSAGE_SERVER_CONFIRM_SESSION
            )
            self.write(wire.ws_frame_header(len(confirm)) + confirm)

    # ---------------------------------------------------------------------------------- responses

    def _respond(self, req_id: str) -> None:
        self.triggers += 1
        params = self.params
        size = params["size"]
        if self.triggers == 1 and params["warmup"] > 0:
            self._burst(req_id, params["warmup"], size)
        elif self.mode == "burst":
            self._burst(req_id, params["frames"], size)
        elif self.mode == "paced":
            self._paced(req_id, params["frames"], size, params["interval_us"] * 1000, params["delay_us"] * 1000)
        else:
            self._burst(req_id, 1, size)

    def _encoded(self, req_id: str, end: bool, size: int, *, timestamps: bool) -> Tuple[bytes, int]:
        frame = wire.animation_frame(self.connection_id, req_id, end, size, timestamps=timestamps)
        header = wire.ws_frame_header(len(frame.data))
        return header + frame.data, len(header) + frame.times_offset

    def _burst(self, req_id: str, count: int, size: int) -> None:
        last, _ = self._encoded(req_id, True, size, timestamps=False)
        chunks: List[memoryview] = []
        if count > 1:
            frame, _ = self._encoded(req_id, False, size, timestamps=False)
            block = memoryview(frame * min(count - 1, BURST_BLOCK_FRAMES))
            full, rest = divmod(count - 1, BURST_BLOCK_FRAMES)
            chunks.extend([block] * full)
            if rest:
                chunks.append(block[: rest * len(frame)])
        chunks.append(memoryview(last))
        self.write_many(chunks)

    def _paced(self, req_id: str, count: int, size: int, interval_ns: int, delay_ns: int) -> None:
        template, offset = self._encoded(req_id, False, size, timestamps=True)
        last, _ = self._encoded(req_id, True, size, timestamps=True)
        stream = Stream(
            self, template=template, last=last, offset=offset, count=count, interval_ns=interval_ns, delay_ns=delay_ns
        )
        self.server.stats["streams"] += 1
        self.server.schedule(stream.start_ns, stream)


def _unmask(payload: bytes, mask: bytes) -> bytes:
    length = len(payload)
    if not length:
        return payload
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


class Server:
    """The selector loop: accepts, reads, writes, and sends paced frames when they fall due."""

    def __init__(self, host: str, port: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.counter = 0
        self._timers: List[Tuple[int, int, Stream]] = []
        self._seq = itertools.count()
        self._stop_fd: Optional[int] = None
        self.stats: Dict[str, int] = {"streams": 0, "frames_sent": 0, "frames_unsent": 0}  # paced streams

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def schedule(self, due_ns: int, stream: Stream) -> None:
        heapq.heappush(self._timers, (due_ns, next(self._seq), stream))

    def stop_on_eof(self, fd: int) -> None:
        """Return from :meth:`serve_forever` when ``fd`` (a pipe) reaches end of file."""
        self._stop_fd = fd
        self.selector.register(fd, selectors.EVENT_READ, "stop")

    def serve_forever(self) -> None:
        select = self.selector.select
        timers = self._timers
        while True:
            timeout = None
            if timers:
                timeout = max(0.0, (timers[0][0] - time.monotonic_ns()) / 1e9)
            for key, events in select(timeout):
                conn = key.data
                if conn is None:
                    self._accept()
                elif conn == "stop":
                    assert self._stop_fd is not None
                    if not os.read(self._stop_fd, 4096):
                        return
                else:
                    if events & selectors.EVENT_WRITE:
                        conn.flush()
                    if events & selectors.EVENT_READ and conn.open:
                        conn.on_readable()
            if timers:
                self._fire_due()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(self, sock)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _fire_due(self) -> None:
        timers = self._timers
        now = time.monotonic_ns()
        while timers and timers[0][0] <= now:
            due, _, stream = heapq.heappop(timers)
            conn = stream.conn
            if not conn.open:
                self.stats["frames_unsent"] += stream.count - stream.next_index
                continue
            index = stream.next_index
            last = index == stream.count - 1
            frame = bytearray(stream.last if last else stream.template)
            now = time.monotonic_ns()
            offset = stream.offset  # the tags stay; the two fixed64 values follow them
            _PACK_U64(frame, offset + 1, due)
            _PACK_U64(frame, offset + 10, now)
            conn.write(frame)
            if not stream.conn.open:  # the write failed and closed the connection
                self.stats["frames_unsent"] += stream.count - index
                continue
            self.stats["frames_sent"] += 1
            if not last:
                stream.next_index = index + 1
                self.schedule(due + stream.interval_ns, stream)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    server = Server(args.host, args.port)
    server.stop_on_eof(sys.stdin.fileno())
    print(f"READY {server.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
