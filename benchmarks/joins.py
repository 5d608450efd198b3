"""Join latency over a slow link: ``python -m benchmarks joins`` (``--help`` for the options).

The benchmark server (``benchmarks.server``) sits behind two local TLS proxies, one for the console and one for
the ingress (trustme certificates). Each proxy delays every byte by ``--delay-ms`` in each direction before its
TLS layer (so TLS handshakes pay the round trips too) and models the TCP handshake: a connection's first bytes
from the client reach the proxy's TLS layer no earlier than 1.5 round trips after ``connect()`` returned
(SYN, SYN-ACK, then the data). Each client process measures, for its first session, the library's ``import``;
per join, making the session object (``create``: it sends nothing, so it is outside the join's total, but shown:
avatarsdk builds the process's TLS contexts there, avatarkit's aiohttp at its import), ``init()`` (the token
call), ``start()`` (the upgrade and the handshake), the first frame (from the trigger's ``send_audio(end=True)``
to the frame's callback) and the total from ``init()``, in milliseconds and in round trips (time / RTT, RTT = 2 x
delay). Scenarios:

- ``first``: the first session of a fresh process (new connections, TLS contexts built);
- ``later``: a later session in the same process, after the first has closed;
- ``pool``: ``SessionPool.session()`` that must start a session (nothing idle), then the first frame;
- avatarkit 0.1.7: its first and a later session, through the same proxies.

Each repetition is a fresh client process; figures are medians over the repetitions. ``--sdk PATH`` measures
the avatarsdk found at PATH (for example another checkout) instead of this one. The client processes trust the
proxies' CA beside certifi's: ``REQUESTS_CA_BUNDLE``, ``WEBSOCKET_CLIENT_CA_BUNDLE`` and ``SSL_CERT_FILE``
name one bundle of both, so the default trust is measured with its real cost of loading a full bundle.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

from .stats import median

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_KEY, APP_ID, AVATAR_ID = "bench-api-key", "bench-app", "bench-avatar"
TRIGGER_PCM = bytes(640)  # 20 ms of 16 kHz silence, sent with end=True
STEPS = ("import", "create", "init", "start", "first_frame", "total")  # the total: from init() (nothing sent before)
NAN = float("nan")


# ------------------------------------------------------------------------------------------- the proxy


class DelayProxy:
    """A TLS proxy on 127.0.0.1 in front of ``upstream`` (plain TCP), delaying every byte by ``delay`` seconds
    each way before its TLS layer, and a connection's first bytes until 1.5 round trips after its accept."""

    def __init__(self, upstream: Tuple[str, int], context: ssl.SSLContext, delay: float) -> None:
        self.upstream, self.context, self.delay = upstream, context, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            accepted = time.monotonic()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            near, far = socket.socketpair()  # client <-delay-> near | far <-TLS-> upstream
            _delayed(client, near, self.delay, not_before=accepted + 3 * self.delay)
            _delayed(near, client, self.delay, not_before=0.0)
            threading.Thread(target=self._terminate, args=(far,), daemon=True).start()

    def _terminate(self, far: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(far, server_side=True)
            upstream = socket.create_connection(self.upstream)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            far.close()
            return
        from avatarsdk.testing._proxy import pump  # noqa: PLC0415 - here: a client process times its own import

        threading.Thread(target=pump, args=(upstream, tls), daemon=True).start()
        pump(tls, upstream)


def _delayed(source: socket.socket, sink: socket.socket, delay: float, *, not_before: float) -> None:
    """Forward ``source`` to ``sink``, each block ``delay`` seconds after it was read (and not before
    ``not_before``), in order: a reader thread and a writer thread."""
    from avatarsdk.testing._proxy import shutdown_write  # noqa: PLC0415 - as above

    pending: queue.Queue[Tuple[float, bytes]] = queue.Queue()

    def read() -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            pending.put((max(time.monotonic() + delay, not_before), data))
            if not data:
                return

    def write() -> None:
        while True:
            due, data = pending.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the modelled link's delay, not a guess at another thread's progress
            if not data:
                shutdown_write(sink)
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=write, daemon=True).start()


# ------------------------------------------------------------------------------------------ the clients


def _kwargs(p: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "avatar_id": AVATAR_ID,
        "api_key": API_KEY,
        "app_id": APP_ID,
        "expire_at": datetime.now(timezone.utc) + timedelta(hours=1),
        "console_endpoint_url": p["console_url"],
        "ingress_endpoint_url": p["ingress_url"],
    }


def avatarsdk_joins(p: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    began = time.perf_counter()
    from avatarsdk import SessionPool, new_avatar_session  # noqa: PLC0415 - the client process's own library

    imported = time.perf_counter() - began

    first_frame = threading.Event()

    def on_frame(frame: bytes, last: bool) -> None:
        first_frame.set()

    def join() -> Dict[str, float]:
        first_frame.clear()
        made = time.perf_counter()
        session = new_avatar_session(**_kwargs(p), transport_frames=on_frame)  # nothing sent yet: not in the total
        t0 = time.perf_counter()
        session.init()
        t1 = time.perf_counter()
        session.start()
        t2 = time.perf_counter()
        session.send_audio(TRIGGER_PCM, end=True)
        if not first_frame.wait(30):
            raise RuntimeError("no frame within 30 s")
        t3 = time.perf_counter()
        session.close()
        return {"create": t0 - made, "init": t1 - t0, "start": t2 - t1, "first_frame": t3 - t2, "total": t3 - t0}

    result = {"first": {"import": imported, **join()}, "later": {"import": NAN, **join()}}
    pool_kwargs = {k: v for k, v in _kwargs(p).items() if k != "expire_at"}
    made = time.perf_counter()
    with SessionPool(**pool_kwargs, max_size=1, transport_frames=on_frame) as pool:
        first_frame.clear()
        t0 = time.perf_counter()
        with pool.session() as session:
            t1 = time.perf_counter()
            session.send_audio(TRIGGER_PCM, end=True)
            if not first_frame.wait(30):
                raise RuntimeError("no frame within 30 s")
            t2 = time.perf_counter()
        steps = {"start": t1 - t0, "first_frame": t2 - t1, "total": t2 - t0}
        result["pool"] = {"import": NAN, "create": t0 - made, "init": NAN, **steps}
    return result


def avatarkit_joins(p: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    import asyncio  # noqa: PLC0415

    began = time.perf_counter()
    from avatarkit import new_avatar_session  # noqa: PLC0415 - the client process's own library

    imported = time.perf_counter() - began

    async def join() -> Dict[str, float]:
        first_frame = asyncio.Event()
        made = time.perf_counter()
        session = new_avatar_session(**_kwargs(p), transport_frames=lambda frame, last: first_frame.set())
        t0 = time.perf_counter()
        await session.init()
        t1 = time.perf_counter()
        await session.start()
        t2 = time.perf_counter()
        await session.send_audio(TRIGGER_PCM, end=True)
        await asyncio.wait_for(first_frame.wait(), 30)
        t3 = time.perf_counter()
        await session.close()
        return {"create": t0 - made, "init": t1 - t0, "start": t2 - t1, "first_frame": t3 - t2, "total": t3 - t0}

    async def run() -> Dict[str, Dict[str, float]]:
        return {"first": {"import": imported, **await join()}, "later": {"import": NAN, **await join()}}

    return asyncio.run(run())


CLIENTS = {"avatarsdk": avatarsdk_joins, "avatarkit": avatarkit_joins}


def client_main(argv: List[str]) -> int:
    name, raw = argv
    print("RESULT " + json.dumps(CLIENTS[name](json.loads(raw))), flush=True)
    return 0


# -------------------------------------------------------------------------------------------- the run


def _bundle(ca_pem: bytes, directory: str) -> str:
    """certifi's bundle with the proxies' CA appended (the default trust, with its real loading cost)."""
    import certifi  # noqa: PLC0415

    path = os.path.join(directory, "bundle.pem")
    with open(certifi.where(), "rb") as base, open(path, "wb") as out:
        out.write(base.read() + b"\n" + ca_pem)
    return path


def _client(name: str, params: Dict[str, Any], env: Dict[str, str], cwd: str) -> Dict[str, Dict[str, float]]:
    cmd = [sys.executable, "-m", "benchmarks", "joins", "--client", name, json.dumps(params)]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])  # type: ignore[no-any-return]
    raise RuntimeError(f"{name} client failed: {done.stderr[-2000:]}")


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import trustme  # noqa: PLC0415

    from .run import ServerProcess  # noqa: PLC0415

    delay = args.delay_ms / 1000
    rtt = 2 * delay
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = ServerProcess(None)
    try:
        with tempfile.TemporaryDirectory() as directory:
            bundle = _bundle(ca.cert_pem.bytes(), directory)
            upstream = ("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
            console, ingress = DelayProxy(upstream, context, delay), DelayProxy(upstream, context, delay)
            path = server.ingress_url("ack").split("127.0.0.1", 1)[1].split("/", 1)[1]
            params = {
                "console_url": f"https://127.0.0.1:{console.port}",
                "ingress_url": f"https://127.0.0.1:{ingress.port}/{path}",
            }
            sdk = os.path.abspath(args.sdk) if args.sdk else ROOT
            env = dict(os.environ, REQUESTS_CA_BUNDLE=bundle, WEBSOCKET_CLIENT_CA_BUNDLE=bundle, SSL_CERT_FILE=bundle)
            # The measured package first (a link to it in a directory of its own), then these benchmarks.
            os.symlink(os.path.join(sdk, "avatarsdk"), os.path.join(directory, "avatarsdk"))
            env["PYTHONPATH"] = os.pathsep.join([directory, ROOT])
            samples: Dict[str, List[Dict[str, float]]] = {}
            for _ in range(args.reps):
                for client in args.clients:
                    for scenario, steps in _client(client, params, env, directory).items():
                        samples.setdefault(f"{client} {scenario}", []).append(steps)
    finally:
        server.close()
    table = {row: {step: median([s[step] for s in runs]) for step in STEPS} for row, runs in samples.items()}
    return {"delay_ms": args.delay_ms, "rtt_ms": rtt * 1000, "reps": args.reps, "sdk": sdk, "table": table}


def report(result: Dict[str, Any]) -> str:
    rtt = result["rtt_ms"] / 1000
    lines = [
        f"join latency, RTT {result['rtt_ms']:.0f} ms (one-way delay {result['delay_ms']:g} ms), medians of"
        f" {result['reps']} processes; avatarsdk from {result['sdk']}",
        f"{'scenario':<20}" + "".join(f"{step:>22}" for step in STEPS) + f"{'total/first_frame':>19}",
    ]
    for row, steps in result["table"].items():
        cells = []
        for step in STEPS:
            value = steps[step]
            cells.append(f"{'-':>22}" if math.isnan(value) else f"{value * 1000:10.1f} ms {value / rtt:5.2f} RTT")
        cells.append(f"{steps['total'] / steps['first_frame']:19.2f}")
        lines.append(f"{row:<20}" + "".join(cells))
    lines.append(
        "total/first_frame: the total in round trips as this setup delivers them (the first frame is one message"
        " and its answer, through the proxy and the server)"
    )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks joins", description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay each way (25: RTT 50 ms)")
    parser.add_argument("--reps", type=int, default=5, help="client processes per client (5)")
    parser.add_argument("--clients", default="avatarsdk,avatarkit", help="avatarsdk,avatarkit")
    parser.add_argument("--sdk", help="the directory holding the avatarsdk package to measure (default: this one)")
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args(argv)
    args.clients = [c for c in args.clients.split(",") if c]
    result = run(args)
    print(report(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    return 0
