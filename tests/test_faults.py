"""Fault injection: every fault the stand-in can produce, many times each, striking at a random frame.

Each scenario of ``FAULTS`` runs ``AVATARSDK_FAULT_RUNS`` times (default ``DEFAULT_RUNS``) over real loopback
sockets: the stand-in (``FakeAvatarService``), and a ``FaultProxy`` for the network faults. Run ``i`` of a
scenario has the seed ``AVATARSDK_FAULT_SEED + i`` (base ``DEFAULT_SEED``), which picks how many frames the
stand-in sends before the fault (``k`` of ``n``, in requests of random length and frame size), how they are
paced against it (sent just before it, delivered before it, or written in one TCP write with it), and the
way the fault strikes (close reason, which invalid frame, which malformed bytes, ...). Every run asserts:

* ``on_error`` received exactly the expected error (code, ``retryable``, ``close_code``, ``server_code``,
  phase, ``connection_id``), or nothing where the protocol says the fault is ignored;
* ``on_close`` ran exactly once, and last;
* no ``avatarsdk-*`` thread is left;
* the same with the session's callbacks on a ``SharedDispatcher`` (odd seeds) as on its own thread (even ones);
* every frame the stand-in sent before the fault was delivered once, in order, with its ``last`` flag
  (checked against ``conn.sent_frames()``), and none sent after a fault that ends the session; where the
  session carries on, the frames after the fault arrive too and a new request still gets its frames.

Faults through the proxy (``drop-rst``, ``dead-peer``) cut the network itself: frames still inside the proxy
when it strikes are lost on the way, so unless they were delivered before the fault (``settled`` pacing),
what arrives must be a prefix of what was sent (once each, in order).

A failing run's message gives its seed and the command that replays it alone. With
``AVATARSDK_FAULT_REPORT=<path>`` each scenario appends one JSON line of its figures to ``<path>``;
``scripts/fault_report.py`` turns them into the table of docs/RELIABILITY.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import statistics
import struct
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest
from conftest import CLOSE_CODE_ERRORS, Recorder, pcm
from google.protobuf.internal import api_implementation
from websockets.exceptions import ConnectionClosed

from avatarsdk import (
    AvatarSDKError,
    AvatarSDKErrorCode,
    AvatarSession,
    ReconnectEvent,
    ReconnectPolicy,
    ReconnectState,
    SharedDispatcher,
    new_avatar_session,
)
from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.testing import FakeAvatarService, FakeConnection, FaultProxy, animation_frame
from avatarsdk.testing.wire import field_bytes, varint, ws_frame

C = AvatarSDKErrorCode

DEFAULT_RUNS = 25  # the whole file in about 25 s on 2 cores; scripts/fault_report.py runs 200
DEFAULT_SEED = 1000


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: expected at least {minimum}, got {value}")
    return value


RUNS = _env_int("AVATARSDK_FAULT_RUNS", DEFAULT_RUNS, 1)
BASE_SEED = _env_int("AVATARSDK_FAULT_SEED", DEFAULT_SEED, 0)
REPORT = os.environ.get("AVATARSDK_FAULT_REPORT", "").strip()

WAIT = 10.0  # seconds any single condition may take before the run counts as hung
WORDS = ("alpha", "bravo", "charlie", "delta", "foxtrot", "golf", "hotel", "kilo", "lima", "oscar", "papa", "tango")
UNICODE_WORDS = ("überfall", "ñandú", "日本語", "ok ✓", "δέλτα")  # close reasons and messages are UTF-8


# ------------------------------------------------------------------------------------------- a run


@dataclass
class Planned:
    """One animation frame the stand-in may send: its request, ``end`` flag and size."""

    req_id: str
    end: bool
    size: int


class TimedRecorder(Recorder):
    """The conftest recorder, also noting when the first error and the close arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.error_at: Optional[float] = None
        self.close_at: Optional[float] = None

    def on_error(self, err: AvatarSDKError) -> None:
        if self.error_at is None:
            self.error_at = time.monotonic()
        super().on_error(err)

    def on_close(self) -> None:
        self.close_at = time.monotonic()
        super().on_close()


class Run:
    """One run of one fault: the seed's choices, the session, and the record of what the stand-in sent."""

    def __init__(self, fault: Fault, seed: int, service: FakeAvatarService, proxy: Optional[FaultProxy]) -> None:
        self.fault = fault
        self.seed = seed
        self.rng = random.Random(f"{fault.name}/{seed}")
        self.service = service
        self.proxy = proxy
        self.recorder = TimedRecorder()
        self.n = self.rng.randint(*fault.frames)  # frames the stand-in may send in all
        self.k = self.rng.randint(0, self.n)  # ... of which before the fault
        self.pacing = self.rng.choice(fault.pacings)
        self.max_frame = 3000  # frame sizes are drawn up to this (options may lower it)
        self.plan: List[Planned] = []
        self.pos = 0  # next plan item to send
        self.sent: List[Tuple[bytes, bool]] = []  # frames that must be delivered, in wire order
        self.via_conn: List[bytes] = []  # frames sent through FakeConnection (so in conn.sent_frames())
        self.after: List[bytes] = []  # frames sent after a fault that ends the session: never delivered
        self.fault_at = 0  # frames sent before the fault's error (its place among the events)
        self.t_fault = 0.0
        self.lossy = False  # frames inside the proxy when it struck may be lost
        self.stand_in_failed = False  # a send of the stand-in's failed: its record of the client's close is lost
        self.expect: Dict[str, Any] = {}  # more attributes the reported error must have
        self.way = ""  # how the fault struck, for failure messages
        self.notes: Dict[str, Any] = {}
        self._session: Optional[AvatarSession] = None
        self._conn: Optional[FakeConnection] = None
        self.reconnects: List[ReconnectEvent] = []
        self.reconnected = threading.Event()
        self.t_reconnected = 0.0

    def on_reconnect(self, event: ReconnectEvent) -> None:
        self.reconnects.append(event)
        if event.state is ReconnectState.reconnected:
            self.t_reconnected = time.monotonic()
            self.reconnected.set()

    @property
    def session(self) -> AvatarSession:
        assert self._session is not None
        return self._session

    @property
    def conn(self) -> FakeConnection:
        assert self._conn is not None
        return self._conn

    def make_plan(self) -> None:
        """Requests of 1 to 8 frames of one size each; the last request may be left open (no ``end``)."""
        group = 0
        while len(self.plan) < self.n:
            length = self.rng.randint(1, 8)
            size = self.rng.randint(60, self.max_frame)
            for i in range(length):
                if len(self.plan) == self.n:
                    break
                self.plan.append(Planned(f"req-{self.seed}-{group}", i == length - 1, size))
            group += 1

    def _next(self, count: int) -> List[Planned]:
        items = self.plan[self.pos : self.pos + count]
        self.pos += len(items)
        return items

    def send(self, count: int) -> None:
        """The stand-in sends the next ``count`` planned frames (they must all be delivered)."""
        for item in self._next(count):
            data = self.conn.send_animation(item.req_id, end=item.end, size=item.size)
            self.sent.append((data, item.end))
            self.via_conn.append(data)

    def framed(self, count: int) -> bytes:
        """The next ``count`` planned frames as raw WebSocket frames, for one ``send_wire`` with the fault."""
        out = []
        for item in self._next(count):
            data = animation_frame(
                self.conn.connection_id or "", item.req_id, item.end, item.size, 1_000_000 + self.pos
            )
            self.sent.append((data, item.end))
            out.append(ws_frame(data))
        return b"".join(out)

    def before(self) -> bytes:
        """The ``k`` frames before the fault, paced as the seed chose. ``coalesced``: returned as wire bytes to
        write together with the fault; otherwise sent (``settled``: and delivered) before this returns."""
        if self.fault.proxy and self.pacing != "settled":
            self.lossy = True  # written just before the proxy breaks: the tail may be lost inside it
        if self.pacing == "coalesced":
            return self.framed(self.k)
        self.send(self.k)
        if self.pacing == "settled":
            self.recorder.wait_frames(len(self.sent), WAIT)
        return b""

    def strike(self) -> None:
        """Mark the fault's moment (call just before injecting it)."""
        self.fault_at = len(self.sent)
        self.t_fault = time.monotonic()

    def rest(self) -> None:
        """The stand-in sends the rest of the plan (after a fault the session survives: all delivered)."""
        self.send(len(self.plan) - self.pos)

    def rest_discarded(self) -> None:
        """The stand-in tries to send the rest of the plan after a fault that ends the session: whatever goes
        out must not be delivered (the SDK trusts nothing after a broken frame or a dead connection)."""
        for item in self._next(len(self.plan) - self.pos):
            try:
                data = self.conn.send_animation(item.req_id, end=item.end, size=item.size)
            except (ConnectionClosed, OSError):
                self.stand_in_failed = True
                return
            self.after.append(data)
            self.via_conn.append(data)

    def rest_raw(self) -> bytes:
        """The rest of the plan as raw frames to write right after a framing fault: never to be delivered.
        (Raw, not through websockets: a websockets send failing on the socket the SDK has shut would make the
        stand-in drop the close frame it received, and lose the record of it.)"""
        out = []
        for item in self._next(len(self.plan) - self.pos):
            data = animation_frame(
                self.conn.connection_id or "", item.req_id, item.end, item.size, 2_000_000 + self.pos
            )
            self.after.append(data)
            out.append(ws_frame(data))
        return b"".join(out)

    def partial(self) -> bytes:
        """The start of the next planned frame, cut where the seed says (``clean``: nothing): what a connection
        that dies mid-frame or mid-message leaves behind. It must never be delivered."""
        way = self.rng.choice(["clean", "mid-frame", "mid-message"])
        self.way = way
        items = self._next(1) if way != "clean" else []
        if not items:
            return b""
        item = items[0]
        data = animation_frame(self.conn.connection_id or "", item.req_id, item.end, item.size, 3_000_000 + self.pos)
        self.after.append(data)
        if way == "mid-frame":
            wire = ws_frame(data)
            return wire[: self.rng.randint(1, len(wire) - 1)]
        parts = split(self.rng, data, self.rng.randint(2, 4))  # the last fragment never comes
        return ws_frame(parts[0], fin=False) + b"".join(ws_frame(p, 0x0, fin=False) for p in parts[1:-1])

    def send_raw(self, data: bytes) -> None:
        """``conn.send_wire``, where the SDK may already have shut the connection (then the write fails, and
        the frames meant to follow the fault count as not sent)."""
        try:
            self.conn.send_wire(data)
        except OSError:
            self.after.clear()


# ---------------------------------------------------------------------------------------- scenarios


def _no_options(run: Run) -> Dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Fault:
    """One fault scenario: how to inject it and what the SDK must do about it."""

    name: str
    inject: Callable[[Run], None]
    code: Optional[AvatarSDKErrorCode]  # what on_error must receive; None: the fault is ignored
    retryable: bool = False
    ends: bool = True  # the session ends (on_close without a close() of ours)
    how: str = ""
    close_code: Optional[int] = None  # the reported error's close_code
    server_code: Optional[str] = None  # the reported error's server_code
    phase: str = "websocket_runtime"
    echo: Optional[int] = None  # the close code the SDK sends the stand-in (None: not checked)
    proxy: bool = False  # the session goes through a FaultProxy
    pacings: Tuple[str, ...] = ("burst", "settled")
    frames: Tuple[int, int] = (1, 24)  # n, the frames the stand-in may send, is drawn from this range
    options: Callable[[Run], Dict[str, Any]] = _no_options  # session options, drawn from the run's seed
    reconnect: bool = False  # the session reconnects after the fault (it must carry on, on a new connection)


def split(rng: random.Random, data: bytes, parts: int) -> List[bytes]:
    cuts = sorted(rng.randint(0, len(data)) for _ in range(parts - 1))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def fragmented(rng: random.Random, opcode: int, payload: bytes) -> bytes:
    """``payload`` as one message in 2 to 4 fragments (possibly empty ones)."""
    parts = split(rng, payload, rng.randint(2, 4))
    frames = [ws_frame(parts[0], opcode, fin=False)]
    frames += [ws_frame(part, 0x0, fin=False) for part in parts[1:-1]]
    frames.append(ws_frame(parts[-1], 0x0))
    return b"".join(frames)


def phrase(rng: random.Random, limit: int = 123) -> str:
    """A close reason or error message that none of the SDK's text rules match (up to ``limit`` bytes)."""
    kind = rng.choice(["empty", "words", "unicode", "longest"])
    if kind == "empty":
        return ""
    pool = WORDS if kind == "words" else WORDS + UNICODE_WORDS
    text = " ".join(rng.choice(pool) for _ in range(60 if kind == "longest" else rng.randint(1, 4)))
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


# -- network and close faults


def cut_mid_stream(run: Run) -> None:
    """The frames before the fault, then the start of the next one if the seed says so (mid-frame or
    mid-message), then the fault's moment: what a connection that breaks now leaves behind."""
    wire = run.before()
    wire += run.partial()
    run.strike()
    if wire:
        run.send_raw(wire)


def drop_fin(run: Run) -> None:
    cut_mid_stream(run)
    run.conn.drop()


def drop_rst(run: Run) -> None:
    assert run.proxy is not None
    cut_mid_stream(run)
    run.proxy.reset()


def dead_peer_options(run: Run) -> Dict[str, Any]:
    interval, timeout = round(run.rng.uniform(0.05, 0.2), 3), round(run.rng.uniform(0.05, 0.2), 3)
    run.notes["budget"] = interval + timeout
    return {"ping_interval": interval, "ping_timeout": timeout}


def dead_peer(run: Run) -> None:
    assert run.proxy is not None
    cut_mid_stream(run)
    run.proxy.blackhole()
    run.rest_discarded()  # swallowed by the black hole
    run.recorder.wait_closed(WAIT)
    waited = time.monotonic() - run.t_fault
    budget = run.notes["budget"]
    assert waited < budget + 2.0, f"dead peer noticed after {waited:.2f}s (interval + timeout {budget:.2f}s)"


def close_with(code: int, *, reason: Optional[str] = None, preceded: bool = False) -> Callable[[Run], None]:
    """The server closes with ``code`` (after a ServerError of the same code if ``preceded``, with 0 to 3
    frames between the two). ``coalesced``: frames, error and close frame in one TCP write."""

    def inject(run: Run) -> None:
        text = phrase(run.rng) if reason is None else reason
        message = phrase(run.rng, 200)
        between = run.rng.randint(0, min(3, run.n - run.k)) if preceded else 0  # frames between error and close
        run.way = f"reason={text!r}" + (f", {between} frames after the error" if preceded else "")
        if preceded:  # one error for the pair: the server's texts, the close's code and reason
            run.expect.update(server_detail=message or None, close_reason=text or None, req_id=None)
        else:
            run.expect.update(close_reason=text or None)
        prefix = run.before()
        run.strike()
        if run.pacing == "coalesced":
            wire = prefix
            if preceded:
                wire += ws_frame(error_message(code, message)) + run.framed(between)
            run.conn.send_wire(wire + ws_frame(struct.pack(">H", code) + text.encode("utf-8"), 0x8))
            return
        if preceded:
            run.conn.send_error(code, message)
            run.send(between)
        run.conn.close(code, text)

    return inject


def error_message(code: int, message: str, req_id: str = "", connection_id: str = "") -> bytes:
    msg = pb.Message(type=pb.MESSAGE_SERVER_ERROR)
    msg.server_error.code = code
    msg.server_error.message = message
    msg.server_error.req_id = req_id
    msg.server_error.connection_id = connection_id
    return msg.SerializeToString()


def stall_options(run: Run) -> Dict[str, Any]:
    return {"send_timeout": round(run.rng.uniform(0.1, 0.25), 3)}


def send_stall(run: Run) -> None:
    """The server stops reading while the client sends large audio chunks: ``send_timeout`` ends it."""
    seconds = run.rng.choice([2.0, 5.0, 10.0])
    run.way = f"chunks of {seconds} s"
    chunk = pcm(seconds)
    run.before()
    run.conn.pause_reading()
    run.strike()

    def fill() -> None:
        for _ in range(5000):  # about 40 MB of kernel buffers fill within ~100 chunks
            run.session.send_audio(chunk)

    err = raised(fill)
    assert (err.code, err.phase, err.retryable) == (C.connectionFailed, "websocket_send", True), repr(err)
    assert err.req_id is not None and err.connection_id == run.conn.connection_id, repr(err)
    run.expect["req_id"] = err.req_id


# -- messages the server should never send


def deliver_message(run: Run, opcode: int, payload: bytes) -> None:
    """Send one whole message (binary or text) as the fault, in a way the seed picks."""
    prefix = run.before()
    way = "coalesced" if run.pacing == "coalesced" else run.rng.choice(["message", "fragmented", "wire"])
    if way == "coalesced":
        whole = ws_frame(payload, opcode) if run.rng.random() < 0.5 else fragmented(run.rng, opcode, payload)
        run.way = f"coalesced, {len(whole)} wire bytes"
        run.strike()
        run.conn.send_wire(prefix + whole)
        return
    run.way = way
    run.strike()
    if way == "wire":
        run.conn.send_wire(ws_frame(payload, opcode))
    elif way == "fragmented" and opcode == 0x2:
        run.conn.send_fragmented(split(run.rng, payload, run.rng.randint(2, 4)))
    elif way == "fragmented":
        run.conn.send_wire(fragmented(run.rng, opcode, payload))
    elif opcode == 0x2:
        run.conn.send_bytes(payload)
    else:
        run.conn.send_text(payload.decode("utf-8"))


def server_error(code: int) -> Callable[[Run], None]:
    """A runtime SERVER_ERROR that does not end the session (for a request, or none)."""

    def inject(run: Run) -> None:
        message = phrase(run.rng, 300)
        sent_ids = [item.req_id for item in run.plan[: run.k]]
        req_id = run.rng.choice(["", "req-unknown", *sent_ids[-1:]])
        connection_id = run.rng.choice(["", run.conn.connection_id or ""])
        run.expect.update(req_id=req_id or None, server_detail=message or None)
        deliver_message(run, 0x2, error_message(code, message, req_id, connection_id))

    return inject


def malformed_bytes(run: Run) -> bytes:
    """Bytes that are no protobuf ``Message`` on any runtime (upb, cpp, pure Python)."""
    rng = run.rng
    kind = rng.choice(["truncated-field", "wire-type", "varint", "cut-frame", "utf8-error", "utf8-req-id"])
    run.notes["malformed"] = kind
    if kind == "truncated-field":  # a length-delimited field that claims more bytes than follow
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        return varint(rng.choice([2, 3, 5, 6, 20]) << 3 | 2) + varint(len(body) + rng.randint(1, 1000)) + body
    if kind == "wire-type":  # wire types 6 and 7 do not exist
        return bytes([rng.randint(1, 15) << 3 | rng.choice([6, 7]), *(rng.randrange(256) for _ in range(4))])
    if kind == "varint":  # the type field's varint never ends
        return b"\x08" + b"\xff" * rng.randint(1, 9)
    if kind == "cut-frame":  # an animation frame cut inside its data field
        frame = animation_frame(run.conn.connection_id or "", "req-cut", False, rng.randint(60, 3000), 7)
        return frame[: rng.randint(1, len(frame) - 3)]  # the frame ends with the 2-byte type field
    if kind == "utf8-error":  # a ServerError whose message is not UTF-8 (proto3 strings must be)
        return b"\x08\x04" + field_bytes(5, field_bytes(4, b"\xff\xfe" + rng.randbytes(rng.randint(0, 8))))
    return b"\x08\x05" + field_bytes(6, field_bytes(2, b"req-\xc3\x28"))  # an animation whose req_id is not UTF-8


def malformed(run: Run) -> None:
    deliver_message(run, 0x2, malformed_bytes(run))


def text_frame(run: Run) -> None:
    text = phrase(run.rng, run.rng.choice([0, 30, 2000]))
    deliver_message(run, 0x1, text.encode("utf-8"))


def empty_frame(run: Run) -> None:
    deliver_message(run, 0x2, b"")


UNKNOWN_TYPES = (1, 3, 6, 7, 8, 9, 11, 12, 42, 99, 1000, 65535, 2**31 - 1, -1)  # not 0, 2, 4, 5, 10


def unknown_type(run: Run) -> None:
    """A message of a type this SDK does not know, with undeclared fields (a newer server's)."""
    rng = run.rng
    kind = rng.choice(UNKNOWN_TYPES)
    extra = [field_bytes(rng.choice([7, 12, 15, 20, 100, 1000]), rng.randbytes(rng.randint(0, 50))) for _ in range(3)]
    fields = [b"\x08" + varint(kind), *extra[: rng.randint(0, 3)]]
    rng.shuffle(fields)
    run.notes["type"] = kind
    deliver_message(run, 0x2, b"".join(fields))


# -- framing faults (they end the session)


def oversize_options(run: Run) -> Dict[str, Any]:
    limit = run.rng.randint(2000, 20000)
    run.max_frame = min(3000, limit // 2)
    run.notes["limit"] = limit
    return {"max_message_size": limit}


def oversize(run: Run) -> None:
    """A message over ``max_message_size``: whole, fragmented (each part under it), or only a header saying so."""
    rng = run.rng
    limit = run.notes["limit"]
    payload = rng.randbytes(rng.randint(limit + 1, 2 * limit))
    way = rng.choice(["message", "fragmented", "header"])
    run.way = f"{way}, {len(payload)} bytes over a {limit}-byte limit"
    if way == "header":
        wire = ws_frame(payload)[:4]  # 0x82, 126, 2-byte size: nothing of the payload follows
    elif way == "fragmented":
        parts = max(3, len(payload) // (limit // 2) + 1)
        wire = fragmented_in(payload, parts)
    else:
        wire = ws_frame(payload)
    prefix = run.before()
    at_limit = exactly(run.conn.connection_id or "", f"req-{run.seed}-limit", limit)  # accepted: the limit is inclusive
    run.sent.append((at_limit, True))
    if run.pacing == "coalesced":
        prefix += ws_frame(at_limit)
    else:
        run.conn.send_bytes(at_limit)
    run.strike()
    if prefix or run.pacing == "coalesced" or way == "header":
        run.send_raw(prefix + wire + run.rest_raw())
        return
    try:  # the SDK may fail the connection while this is still being written
        if way == "fragmented":
            run.conn.send_fragmented(split_even(payload, parts))
        else:
            run.conn.send_bytes(payload)
    except ConnectionClosed:
        run.stand_in_failed = True
    run.send_raw(run.rest_raw())


def exactly(connection_id: str, req_id: str, size: int) -> bytes:
    """An animation frame (the last of its request) of exactly ``size`` bytes."""
    for guess in range(size - 64, size + 64):
        data = animation_frame(connection_id, req_id, True, guess, 4_000_000)
        if len(data) == size:
            return data
    raise AssertionError(f"no animation frame of exactly {size} bytes")


def split_even(data: bytes, parts: int) -> List[bytes]:
    step = -(-len(data) // parts)
    return [data[i : i + step] for i in range(0, len(data), step)]


def fragmented_in(payload: bytes, parts: int) -> bytes:
    pieces = split_even(payload, parts)
    frames = [ws_frame(pieces[0], fin=False)]
    frames += [ws_frame(piece, 0x0, fin=i == len(pieces) - 1) for i, piece in enumerate(pieces[1:], 1)]
    return b"".join(frames)


def invalid_frame_bytes(run: Run) -> bytes:
    """A frame RFC 6455 forbids a server to send."""
    rng = run.rng
    payload = rng.randbytes(rng.randint(0, 20))
    kind = rng.choice(
        [
            "reserved-bit",
            "data-opcode",
            "control-opcode",
            "masked",
            "orphan-continuation",
            "fragmented-control",
            "long-control",
            "interleaved",
        ]
    )
    run.way = kind
    if kind == "reserved-bit":
        return bytes([0x82 | rng.choice([0x40, 0x20, 0x10]), len(payload)]) + payload
    if kind == "data-opcode":
        return ws_frame(payload, rng.randint(0x3, 0x7))
    if kind == "control-opcode":
        return ws_frame(payload, rng.randint(0xB, 0xF))
    if kind == "masked":
        return bytes([0x82, 0x80 | len(payload)]) + rng.randbytes(4) + payload
    if kind == "orphan-continuation":
        return ws_frame(payload, 0x0, fin=rng.random() < 0.5)
    if kind == "fragmented-control":
        return ws_frame(payload, rng.choice([0x8, 0x9, 0xA]), fin=False)
    if kind == "long-control":
        opcode = rng.choice([0x9, 0xA])
        return ws_frame(rng.randbytes(rng.randint(126, 300)), opcode)
    return ws_frame(payload, fin=False) + ws_frame(payload, rng.choice([0x1, 0x2]))  # new message mid-way


def invalid_frame(run: Run) -> None:
    bad = invalid_frame_bytes(run)
    prefix = run.before()
    run.strike()
    run.send_raw(prefix + bad + run.rest_raw())


# -- a slow consumer


def slow_callback_options(run: Run) -> Dict[str, Any]:
    """``transport_frames`` far slower than the stream, with a queue of 1 to 8 messages: the reader must
    stop reading (back-pressure) and lose nothing. ``blocked``: one callback waits until the stand-in has
    sent everything; ``sleepy``: every callback sleeps up to 2 ms."""
    rng = run.rng
    limit = rng.randint(1, 8)
    way = rng.choice(["blocked", "sleepy"])
    block_at = rng.randint(0, run.n - 1)
    delays = [rng.uniform(0, 0.002) for _ in range(run.n + 8)]
    run.max_frame = 800  # at most 60 of them, 48 kB: within the initial TCP window, so the sender never blocks
    run.way = f"{way}, queue of {limit}" + (f", blocked at frame {block_at}" if way == "blocked" else "")
    release = threading.Event()
    run.notes.update(release=release, limit=limit, peak=0, released=True)

    def frames(frame: bytes, last: bool) -> None:
        index = len(run.recorder.frames)
        run.notes["peak"] = max(run.notes["peak"], run.session.backlog.messages)
        if way == "blocked" and index == block_at:
            run.notes["released"] = release.wait(WAIT)
        elif way == "sleepy":
            time.sleep(delays[min(index, len(delays) - 1)])  # the slow work itself, not a wait for something
        run.recorder.transport_frames(frame, last)

    return {"max_queued_frames": limit, "transport_frames": frames}


def slow_callback(run: Run) -> None:
    run.send(run.n)
    run.strike()  # the frames above are the ones the slow consumer holds up
    run.notes["release"].set()
    run.recorder.wait_frames(len(run.sent), WAIT)
    assert run.notes["released"], "the blocked callback was never released"


# -- the table

CLOSE_CODES = [entry for entry in CLOSE_CODE_ERRORS if entry[0] != 1008]  # 1008 (policy): test_session
WIRE_PACINGS = ("burst", "settled", "coalesced")
RECONNECT = ReconnectPolicy(initial_delay=0.0, max_delay=0.05, jitter=0.0, max_attempts=5)

FAULTS: List[Fault] = [
    Fault(
        "drop-fin",
        drop_fin,
        C.connectionClosed,
        retryable=True,
        close_code=1006,
        pacings=WIRE_PACINGS,
        how="stand-in shuts its socket down (FIN), no close frame; clean, mid-frame or mid-message",
    ),
    Fault(
        "drop-rst",
        drop_rst,
        C.connectionClosed,
        retryable=True,
        close_code=1006,
        proxy=True,
        pacings=WIRE_PACINGS,
        how="FaultProxy.reset(): TCP RST both ways; clean, mid-frame or mid-message",
    ),
    *[
        Fault(
            f"close-{code}",
            close_with(code),
            expected,
            retryable=retryable,
            close_code=code,
            echo=code,
            pacings=WIRE_PACINGS,
            how=f"close frame {code}, random reason",
        )
        for code, expected, retryable in CLOSE_CODES
    ],
    Fault(
        "close-4010-expired",
        close_with(4010, reason="session token expired"),
        C.sessionTokenExpired,
        close_code=4010,
        echo=4010,
        pacings=WIRE_PACINGS,
        how='close frame 4010 "session token expired"',
    ),
    *[
        Fault(
            f"error+close-{code}",
            close_with(code, preceded=True),
            expected,
            retryable=retryable,
            server_code=str(code),
            close_code=code,
            echo=code,
            pacings=WIRE_PACINGS,
            how=f"ServerError {code}, 0-3 frames, close frame {code}: reported once",
        )
        for code, expected, retryable in CLOSE_CODES
    ],
    Fault(
        "server-error-3",
        server_error(3),
        C.invalidRequest,
        ends=False,
        server_code="3",
        pacings=WIRE_PACINGS,
        how="runtime ServerError 3 (INVALID_ARGUMENT); the session carries on",
    ),
    Fault(
        "server-error-14",
        server_error(14),
        C.egressUnavailable,
        retryable=True,
        ends=False,
        server_code="14",
        pacings=WIRE_PACINGS,
        how="runtime ServerError 14 (UNAVAILABLE); the session carries on",
    ),
    Fault(
        "malformed-protobuf",
        malformed,
        C.protocolError,
        ends=False,
        pacings=WIRE_PACINGS,
        how="binary message that is not protobuf (6 kinds)",
    ),
    Fault(
        "text-frame",
        text_frame,
        C.protocolError,
        ends=False,
        pacings=WIRE_PACINGS,
        how="text message (0-2000 bytes), whole or fragmented",
    ),
    Fault("empty-frame", empty_frame, None, ends=False, pacings=WIRE_PACINGS, how="empty binary message: ignored"),
    Fault(
        "unknown-type",
        unknown_type,
        None,
        ends=False,
        pacings=WIRE_PACINGS,
        how="message of an unknown type with undeclared fields: ignored",
    ),
    Fault(
        "oversize",
        oversize,
        C.protocolError,
        close_code=1009,
        echo=1009,
        pacings=WIRE_PACINGS,
        options=oversize_options,
        how="message over max_message_size (2-20 kB): whole, fragmented or header only, after one of exactly it",
    ),
    Fault(
        "invalid-frame",
        invalid_frame,
        C.protocolError,
        close_code=1002,
        echo=1002,
        pacings=WIRE_PACINGS,
        how="forbidden frame: RSV bit, bad opcode, masked, bad fragmentation or control frame",
    ),
    Fault(
        "dead-peer",
        dead_peer,
        C.connectionClosed,
        retryable=True,
        close_code=1006,
        proxy=True,
        options=dead_peer_options,
        pacings=WIRE_PACINGS,
        how="FaultProxy.blackhole(), ping_interval and ping_timeout 0.05-0.2 s; clean, mid-frame or mid-message",
    ),
    Fault(
        "send-stall",
        send_stall,
        C.connectionFailed,
        retryable=True,
        phase="websocket_send",
        options=stall_options,
        how="stand-in stops reading during 2-10 s audio chunks, send_timeout 0.1-0.25 s",
    ),
    Fault(
        "slow-callback",
        slow_callback,
        None,
        ends=False,
        frames=(20, 60),
        options=slow_callback_options,
        how="transport_frames blocked or sleeping, max_queued_frames 1-8: no frame lost",
    ),
]
# The drops worth retrying again, with reconnect on: the same error and frames, then a new connection (new
# token, new handshake) on which a new request gets its frames.
RECONNECTED = ("drop-fin", "drop-rst", "close-1011", "close-4002", "close-4503", "error+close-4503")
FAULTS += [
    dataclasses.replace(
        fault, name=f"{fault.name}+reconnect", reconnect=True, how=f"{fault.how}; reconnect on: the session carries on"
    )
    for fault in list(FAULTS)
    if fault.name in RECONNECTED
]


# ------------------------------------------------------------------------------------------- runner


@dataclass
class Outcome:
    seed: int
    ok: bool
    message: str = ""
    to_close: Optional[float] = None  # seconds: fault → on_close (ends) or close() → on_close (carries on)
    to_error: Optional[float] = None  # seconds: fault → on_error
    to_reconnect: Optional[float] = None  # seconds: fault → reconnected (faults run with reconnect)
    before: int = 0  # frames sent before the fault
    delivered: int = 0  # ... of which delivered
    after: int = 0  # frames sent after the fault (must arrive if the session carries on; never if it ended)
    after_delivered: int = 0
    notes: Dict[str, Any] = field(default_factory=dict)


def sdk_threads() -> Set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("avatarsdk-")}


def run_once(fault: Fault, seed: int, service: FakeAvatarService, proxy: Optional[FaultProxy]) -> Outcome:
    run = Run(fault, seed, service, proxy)
    options = fault.options(run)
    run.make_plan()
    threads_before = sdk_threads()
    recorder = run.recorder
    kwargs = service.session_kwargs(**recorder.callbacks())
    if proxy is not None:
        proxy.resume()
        kwargs["ingress_endpoint_url"] = proxy.url
    if fault.reconnect:
        kwargs.update(reconnect=RECONNECT, on_reconnect=run.on_reconnect)
    kwargs.update(options)
    shared = SharedDispatcher(2) if seed % 2 else None  # odd seeds: callbacks on shared threads
    kwargs["dispatcher"] = shared
    session = new_avatar_session(**kwargs)
    run._session = session
    try:
        session.init()
        session.start()
        run._conn = service.connection(-1)
        outcome = _exercise(run)
    except Exception as exc:
        where = f"n={run.n} k={run.k} pacing={run.pacing} way={run.way!r}"
        raise RunFailed(f"{type(exc).__name__}: {exc} [{where}; events {recorder.events[-6:]}]") from exc
    finally:
        if run._conn is not None:
            run._conn.resume_reading()
        session.close()
        if shared is not None:
            shared.close()
    leaked = []
    for thread in sdk_threads() - threads_before:
        thread.join(5)
        if thread.is_alive():
            leaked.append(thread.name)
    if leaked:
        raise RunFailed(f"threads left running: {leaked}")
    return outcome


class RunFailed(AssertionError):
    pass


def raised(call: Callable[[], object]) -> AvatarSDKError:
    """The AvatarSDKError ``call`` raises (an AssertionError if it raises none)."""
    try:
        call()
    except AvatarSDKError as err:
        return err
    raise AssertionError(f"{call} raised no AvatarSDKError")


def _exercise(run: Run) -> Outcome:
    fault, recorder, session, conn = run.fault, run.recorder, run.session, run.conn
    fault.inject(run)
    responses: List[bytes] = []
    response_lasts: List[bool] = []
    respond_on = conn  # where a new request after the fault goes
    if fault.reconnect:
        assert run.reconnected.wait(WAIT), f"no reconnect; events {run.reconnects}"
        assert [e.state for e in run.reconnects] == [ReconnectState.reconnecting, ReconnectState.reconnected]
        done = run.reconnects[-1]
        assert done.previous_connection_id == conn.connection_id and done.cut_req_ids == ()
        assert (done.cause.code, done.cause.retryable) == (fault.code, True), repr(done.cause)
        assert session.connection_id == done.connection_id
        respond_on = next(c for c in run.service.connections if c.connection_id == done.connection_id)
        frames = run.rng.randint(1, 4)  # the session carries on, on the new connection
        req_id = session.send_audio(pcm(0.04 * frames), end=True)
        respond_on.wait_for(lambda: len(respond_on.sent_frames(req_id)) == frames, WAIT)
        responses = respond_on.sent_frames(req_id)
        recorder.wait_for(lambda: recorder.frames[-frames:] == responses, WAIT, "the new request's frames")
        response_lasts = [False] * (frames - 1) + [True]
        began = time.monotonic()
        session.close()
        assert recorder.close_at is not None, "close() returned before on_close"
        to_close = recorder.close_at - began
    elif fault.ends:
        recorder.wait_closed(WAIT)
        assert recorder.close_at is not None
        to_close = recorder.close_at - run.t_fault
        after = raised(lambda: session.send_audio(pcm(0.02)))  # the session is over, for the same reason
        assert after.code is fault.code, repr(after)
        session.close()
    else:
        run.rest()  # frames after the fault arrive too ...
        recorder.wait_frames(len(run.sent), WAIT)
        frames = run.rng.randint(1, 4)  # ... and a new request still gets its frames
        req_id = session.send_audio(pcm(0.04 * frames), end=True)
        conn.wait_for(lambda: len(conn.sent_frames(req_id)) == frames, WAIT)
        recorder.wait_frames(len(run.sent) + frames, WAIT)
        responses = conn.sent_frames(req_id)
        response_lasts = [False] * (frames - 1) + [True]
        began = time.monotonic()
        session.close()
        assert recorder.close_at is not None, "close() returned before on_close"
        to_close = recorder.close_at - began

    # Every frame sent before the fault, once, in order (a prefix of them if the proxy lost the tail); then
    # the new request's frames, where the session carries on.
    expected = [data for data, _ in run.sent] + responses
    lasts = [last for _, last in run.sent] + response_lasts
    got = recorder.frames
    if run.lossy:
        head = len(got) - len(responses)
        assert got[head:] == responses, "the new request's frames differ"
        assert got[:head] == expected[:head], f"delivered {head} frames, not a prefix of the {len(run.sent)} sent"
        assert recorder.lasts == lasts[:head] + response_lasts, "last flags differ"
    else:
        assert len(got) == len(expected), f"delivered {len(got)} frames, sent {len(expected)}"
        assert got == expected, "frames delivered out of order or altered"
        assert recorder.lasts == lasts[: len(got)], "last flags differ"
    if respond_on is conn:
        assert conn.sent_frames() == run.via_conn + responses, "the stand-in's record differs from the run's"
    else:
        assert conn.sent_frames() == run.via_conn, "the stand-in's record differs from the run's"

    # The error, exactly once; on_close exactly once, last.
    if fault.code is None:
        assert recorder.errors == [], f"unexpected errors: {recorder.errors}"
        events = ["frame"] * len(got)
    else:
        assert [e.code for e in recorder.errors] == [fault.code], f"errors: {recorder.errors}"
        err = recorder.errors[0]
        checks: Dict[str, Any] = {
            "retryable": fault.retryable,
            "close_code": fault.close_code,
            "server_code": fault.server_code,
            "phase": fault.phase,
            "connection_id": conn.connection_id,
            **run.expect,
        }
        for name, value in checks.items():
            assert getattr(err, name) == value, f"{name}: {getattr(err, name)!r}, expected {value!r} ({err!r})"
        assert err.connection_id, "empty connection_id"
        at = min(run.fault_at, len(got) - len(responses))
        events = ["frame"] * at + [f"error:{fault.code.value}"] + ["frame"] * (len(got) - at)
    assert recorder.events == [*events, "close"], f"events: {recorder.events}"
    assert recorder.closes == 1

    echo = fault.echo if fault.ends else 1000
    if echo is not None and not run.stand_in_failed:
        conn.wait_closed(WAIT)
        assert conn.client_close_code == echo, f"the SDK closed with {conn.client_close_code}, expected {echo}"
    if respond_on is not conn:  # the reconnected connection was closed by close()
        respond_on.wait_closed(WAIT)
        assert respond_on.client_close_code == 1000, f"the new connection closed with {respond_on.client_close_code}"

    at = min(run.fault_at, len(got) - len(responses))
    notes = {k: v for k, v in run.notes.items() if k in ("peak", "limit")}
    return Outcome(
        run.seed,
        True,
        to_close=to_close,
        to_error=None if recorder.error_at is None else recorder.error_at - run.t_fault,
        to_reconnect=run.t_reconnected - run.t_fault if fault.reconnect else None,
        before=run.fault_at,
        delivered=at,
        after=len(expected) - run.fault_at + len(run.after),
        after_delivered=len(got) - at,
        notes=notes,
    )


def _stats(values: List[float]) -> Optional[Dict[str, float]]:
    if not values:
        return None
    return {"mean_ms": round(statistics.fmean(values) * 1000, 2), "max_ms": round(max(values) * 1000, 2)}


def write_report(fault: Fault, outcomes: List[Outcome], elapsed: float) -> None:
    """One JSON line of the scenario's figures, appended to ``AVATARSDK_FAULT_REPORT``."""
    passed = [o for o in outcomes if o.ok]
    line: Dict[str, Any] = {
        "name": fault.name,
        "how": fault.how,
        "runs": len(outcomes),
        "passed": len(passed),
        "failed_seeds": [o.seed for o in outcomes if not o.ok],
        "expected_code": None if fault.code is None else fault.code.value,
        "retryable": fault.retryable if fault.code is not None else None,
        "ends": fault.ends,
        "seeds": [BASE_SEED, BASE_SEED + RUNS - 1],
        "to_close": _stats([o.to_close for o in passed if o.to_close is not None]),
        "to_error": _stats([o.to_error for o in passed if o.to_error is not None]),
        "reconnect": fault.reconnect,
        "to_reconnect": _stats([o.to_reconnect for o in passed if o.to_reconnect is not None]),
        "frames_before_fault": sum(o.before for o in passed),
        "delivered_before_fault": sum(o.delivered for o in passed),
        "frames_after_fault": sum(o.after for o in passed),
        "delivered_after_fault": sum(o.after_delivered for o in passed),
        "seconds": round(elapsed, 2),
        "python": platform.python_version(),
        "protobuf_implementation": api_implementation.Type(),
    }
    if fault.name == "slow-callback":  # runs in which the queue reached its limit: the reader had to wait
        line["backpressure_runs"] = sum(1 for o in passed if o.notes.get("peak", 0) >= o.notes.get("limit", 1))
    with open(REPORT, "a", encoding="utf-8") as out:
        out.write(json.dumps(line, ensure_ascii=False) + "\n")


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault: Fault, service: FakeAvatarService) -> None:
    outcomes: List[Outcome] = []
    began = time.monotonic()
    proxy = FaultProxy(service.ingress_url).start() if fault.proxy else None
    try:
        for seed in range(BASE_SEED, BASE_SEED + RUNS):
            try:
                outcomes.append(run_once(fault, seed, service, proxy))
            except RunFailed as exc:
                outcomes.append(Outcome(seed, False, str(exc) + "\n" + _origin(exc)))
            service.clear_records()
    finally:
        if proxy is not None:
            proxy.close()
        if REPORT:
            write_report(fault, outcomes, time.monotonic() - began)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        node = f"tests/test_faults.py::test_fault[{fault.name}]"
        lines = [f"{len(failed)} of {len(outcomes)} runs of {fault.name} failed:"]
        lines += [f"  seed {o.seed}: {o.message}" for o in failed[:5]]
        lines.append(f"replay one: AVATARSDK_FAULT_SEED={failed[0].seed} AVATARSDK_FAULT_RUNS=1 pytest '{node}'")
        pytest.fail("\n".join(lines), pytrace=False)


def _origin(exc: BaseException) -> str:
    """Where the run failed: the innermost frames of the original exception."""
    cause = exc.__cause__ or exc
    return "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)[-3:]).rstrip()


# --------------------------------------------------------------------------- invalid close frames


@pytest.mark.parametrize(
    ("body", "close_code"),
    [
        (b"\x03", 1002),  # a 1-byte body: a body starts with a 2-byte code (RFC 6455 5.5.1)
        ((1005).to_bytes(2, "big"), 1002),  # codes an endpoint must never send (RFC 6455 7.4.1)
        ((1006).to_bytes(2, "big"), 1002),
        ((1015).to_bytes(2, "big"), 1002),
        ((999).to_bytes(2, "big"), 1002),
        ((2000).to_bytes(2, "big"), 1002),
        ((5000).to_bytes(2, "big"), 1002),
        ((1000).to_bytes(2, "big") + b"\xff\xfe", 1007),  # a reason that is not UTF-8
    ],
    ids=["1-byte-body", "1005", "1006", "1015", "999", "2000", "5000", "reason-not-utf8"],
)
def test_an_invalid_close_frame_is_a_protocol_error(
    service: FakeAvatarService,
    recorder: Recorder,
    make_session: Callable[..., AvatarSession],
    body: bytes,
    close_code: int,
) -> None:
    """Found by this suite: a close frame with a 1-byte body was taken as a normal close. Every invalid close
    frame is now a protocolError, after the frames that came before it."""
    session = make_session()
    session.init()
    session.start()
    conn = service.connection(-1)
    sent = conn.send_frames("r1", 3, end=False)
    conn.send_wire(bytes([0x88, len(body)]) + body)
    recorder.wait_closed()
    assert recorder.frames == sent
    assert [(e.code, e.close_code) for e in recorder.errors] == [(C.protocolError, close_code)]
