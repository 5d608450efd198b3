"""The web relay samples run as users run them: each server in a subprocess on loopback (Flask on Werkzeug's
threaded server, Django on ``manage.py runserver``) against the built-in stand-in, read by a real HTTP client;
the Flask page once in headless Chromium, driven over the DevTools protocol.

Every check compares what the relay delivered with what the stand-in received and sent (``/debug/requests``,
served by the sample in local runs): the audio byte for byte, the frames byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import django
import pytest
import requests
import websocket
from _region_world import RegionWorld
from conftest import unused_port, wait_until

from avatarsdk import iter_audio

ROOT = Path(__file__).resolve().parent.parent
FLASK_SAMPLE = ROOT / "samples" / "flask_relay"
DJANGO_SAMPLE = ROOT / "samples" / "django_relay"
STARLETTE_SAMPLE = ROOT / "samples" / "starlette_relay"
RELAYS = ["flask", "django", "starlette", "django-asgi"]
ASGI_RELAYS = ["starlette", "django-asgi"]
STREAMS_PER_CLIENT = 4  # RELAY_MAX_STREAMS_PER_CLIENT of the servers: the concurrency test opens 4 from one client
PCM_TYPE = {"Content-Type": "application/octet-stream"}  # raw PCM is taken only with its content type
RATE = 16000
MAX_SIZE = 2  # the servers' pool: 4 concurrent utterances must share 2 sessions
STARTUP_TIMEOUT = 30.0  # upper bounds for conditions polled; a test takes as long as the condition needs
CONDITION_TIMEOUT = 15.0

Event = Tuple[str, Dict[str, Any]]


# ---------------------------------------------------------------------------------------- helpers


def tone(seconds: float, rate: int = RATE, channels: int = 1) -> bytes:
    """PCM s16le: a sawtooth-ish ramp, different in every sample (so any reordering shows)."""
    count = int(seconds * rate) * channels
    return b"".join(((i * 37) % 20000 - 10000).to_bytes(2, "little", signed=True) for i in range(count))


def wav_file(seconds: float, rate: int = RATE, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(seconds, rate, channels))
    return buffer.getvalue()


def frames_for(pcm: bytes) -> int:
    """The stand-in's (and the service's) count: one frame per 40 ms of audio."""
    return max(1, round(len(pcm) / 2 / RATE / 0.04))


def client() -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # loopback only: no proxy from the environment
    return http


def server_sent_events(response: requests.Response) -> Iterator[Event]:
    """The events of a relay's response as they arrive: ``event:`` and ``data:`` (JSON) lines, a blank line."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=4096):  # returns what has arrived once 4 KiB or the end did
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            lines = block.decode("utf-8").split("\n")
            assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block[:300]
            yield lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
    assert buffer == b"", f"the stream ended inside an event: {buffer[:300]!r}"


class Relay:
    """A relay sample in a subprocess, with a client for it; its output goes to a log file (a pipe nobody
    reads could fill up and block the server)."""

    def __init__(self, name: str, args: List[str], env: Dict[str, str], port: int, log_path: Path) -> None:
        self.name = name
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.http = client()
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def url(self, path: str) -> str:
        return self.base + path

    def wait_ready(self) -> None:
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} relay exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.http.get(self.url("/stats"), timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(answers, f"the {self.name} relay to answer", STARTUP_TIMEOUT, interval=0.05)

    def stats(self) -> Dict[str, Any]:
        response = self.http.get(self.url("/stats"), timeout=10)
        assert response.status_code == 200, response.text
        result: Dict[str, Any] = response.json()
        return result

    def record(self, req_id: str) -> Dict[str, Any]:
        """What the stand-in in the relay's process received and sent for ``req_id``."""
        response = self.http.get(self.url(f"/debug/requests/{req_id}"), timeout=10)
        assert response.status_code == 200, response.text
        result: Dict[str, Any] = response.json()
        return result

    def speak(self, method: str = "POST", **kwargs: Any) -> List[Event]:
        """One utterance (``kwargs`` for requests: ``data``, ``headers``, ``files``); all its events."""
        with client() as http, http.request(method, self.url("/speak"), stream=True, timeout=30, **kwargs) as response:
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.headers["Cache-Control"] == "no-cache"
            return list(server_sent_events(response))

    def stop(self) -> int:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the {self.name} relay did not stop on SIGTERM:\n{self.log()}") from None


def decoded(data: bytes) -> bytes:
    """What the relay decodes an upload to (FFmpeg with the audio extra, else pure Python)."""
    return b"".join(chunk for chunk, _ in iter_audio(data, sample_rate=RATE))


def check_utterance(relay: Relay, events: List[Event], pcm: bytes, source: str) -> str:
    """The events of one utterance match the audio sent and the stand-in's records; returns the req_id."""
    count = frames_for(pcm)
    assert [kind for kind, _ in events] == ["start"] + ["frame"] * count + ["end"], [k for k, _ in events][:5]
    start, end = events[0][1], events[-1][1]
    frames = [data for kind, data in events if kind == "frame"]
    assert start["source"] == source
    assert (start["sample_rate"], start["expected_frames"]) == (RATE, count)
    assert base64.b64decode(start["audio"]) == pcm  # the audio the client plays with the frames
    assert [f["seq"] for f in frames] == list(range(1, count + 1))
    assert [f["last"] for f in frames] == [False] * (count - 1) + [True]
    req_id = frames[0]["req_id"]
    assert req_id and {f["req_id"] for f in frames} == {req_id}
    relayed = [base64.b64decode(f["data"]) for f in frames]
    assert (end["req_id"], end["frames"], end["bytes"]) == (req_id, count, sum(map(len, relayed)))
    assert end["wait_ms"] >= 0 and 0 <= end["first_frame_ms"] <= end["total_ms"]

    record = relay.record(req_id)  # what the stand-in saw
    assert record["ended"] and not record["interrupted"]
    assert (record["audio_bytes"], record["audio_sha256"]) == (len(pcm), hashlib.sha256(pcm).hexdigest())
    assert [base64.b64decode(f) for f in record["frames"]] == relayed  # byte for byte, in order
    return str(req_id)


def sample_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVATARSDK_", "RELAY_", "DJANGO_"))}
    env.update(extra)
    return env


def relay_command(name: str, port: int, env: Dict[str, str], *, other_switch: bool = False) -> List[str]:
    """The command that serves sample ``name`` on ``port`` against the stand-in (``env`` gets its variables):
    the issue's command, or (``other_switch``) the other way to ask for the stand-in (``AVATARSDK_LOCAL=1``
    for Flask and Starlette, ``--local`` for Django)."""
    env["RELAY_MAX_STREAMS_PER_CLIENT"] = str(STREAMS_PER_CLIENT)
    if name in ("flask", "starlette"):  # app.py --local --port PORT
        sample = FLASK_SAMPLE if name == "flask" else STARLETTE_SAMPLE
        args = [sys.executable, str(sample / "app.py"), "--port", str(port), "--max-size", str(MAX_SIZE)]
        if other_switch:
            env["AVATARSDK_LOCAL"] = "1"
        else:
            args.append("--local")
        return args
    env["RELAY_MAX_SIZE"] = str(MAX_SIZE)
    if name == "django-asgi":  # uvicorn serving relay_site.asgi, as docs/DEPLOYMENT.md says
        env["AVATARSDK_LOCAL"] = "1"
        app_dir = ["--app-dir", str(DJANGO_SAMPLE)]
        return [sys.executable, "-m", "uvicorn", *app_dir, "relay_site.asgi:application", "--port", str(port)]
    # AVATARSDK_LOCAL=1 manage.py runserver 127.0.0.1:PORT --noreload
    args = [sys.executable, str(DJANGO_SAMPLE / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"]
    if other_switch:
        args.append("--local")
    else:
        env["AVATARSDK_LOCAL"] = "1"
    return args


def start_relay(name: str, tmp: Path, *, other_switch: bool = False, **extra: str) -> Relay:
    """Start a sample against the built-in stand-in (``extra``: more environment variables)."""
    port = unused_port()
    env = sample_env()
    args = relay_command(name, port, env, other_switch=other_switch)
    env.update(extra)
    relay = Relay(name, args, env, port, tmp / "server.log")
    try:
        relay.wait_ready()
    except BaseException:
        relay.stop()
        raise
    return relay


def stop_relay(relay: Relay) -> None:
    """Stop the relay as an operator would (SIGTERM): it must exit 0, having logged no traceback."""
    code = relay.stop()
    log = relay.log()
    # uvicorn's command line ends by raising the signal again once it has shut down: a supervisor sees SIGTERM.
    expected = (0, -signal.SIGTERM) if relay.name == "django-asgi" else (0,)
    assert code in expected, f"the {relay.name} relay exited with {code}:\n{log}"
    assert "Traceback" not in log, log
    assert "synchronous iterators" not in log, log  # Django under ASGI: no buffered stream


@pytest.fixture(scope="module")
def flask_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    relay = start_relay("flask", tmp_path_factory.mktemp("flask_relay"))
    yield relay
    stop_relay(relay)
    assert "relay: stopped" in relay.log()


@pytest.fixture(scope="module")
def relays(tmp_path_factory: pytest.TempPathFactory, flask_relay: Relay) -> Iterator[Dict[str, Relay]]:
    """One server of each sample for the module, started on first use."""
    started: Dict[str, Relay] = {"flask": flask_relay}
    yield started
    for name, relay in started.items():
        if name != "flask":
            stop_relay(relay)


@pytest.fixture(params=RELAYS)
def relay(request: pytest.FixtureRequest, relays: Dict[str, Relay], tmp_path_factory: pytest.TempPathFactory) -> Relay:
    name: str = request.param
    if name not in relays:
        relays[name] = start_relay(name, tmp_path_factory.mktemp(name.replace("-", "_") + "_relay"))
    return relays[name]


# ------------------------------------------------------------------------------------------ tests


def test_a_wav_upload_is_relayed_frame_for_frame(relay: Relay) -> None:
    wav = wav_file(1.0, rate=24000, channels=2)  # resampled and downmixed by iter_audio in the relay
    events = relay.speak(data=wav, headers={"Content-Type": "audio/wav"})
    check_utterance(relay, events, decoded(wav), "wav")  # 25 frames


def test_concurrent_utterances_share_the_pool(relay: Relay) -> None:
    pcm, wav, upload = tone(0.4), wav_file(0.6), wav_file(0.8)
    calls: List[Tuple[str, Dict[str, Any]]] = [
        ("POST", {"data": pcm, "headers": {"Content-Type": "application/octet-stream"}}),
        ("POST", {"data": wav}),
        ("POST", {"files": {"audio": ("hello.wav", upload, "audio/wav")}}),
        ("GET", {}),  # the bundled clip
    ]
    with ThreadPoolExecutor(len(calls)) as workers:
        results = list(workers.map(lambda call: relay.speak(call[0], **call[1]), calls))
    clip = base64.b64decode(results[3][0][1]["audio"])
    assert len(clip) == 2 * RATE * 2  # 2 s
    as_sent = [pcm, decoded(wav), decoded(upload), clip]
    expected = list(zip(as_sent, ["pcm", "wav", "upload", "clip"]))
    req_ids = {check_utterance(relay, events, *want) for events, want in zip(results, expected)}
    assert len(req_ids) == 4
    stats = wait_until(lambda: (s := relay.stats())["in_use"] == 0 and s, "every session back in the pool")
    assert stats["max_size"] == MAX_SIZE and 1 <= stats["created"] <= MAX_SIZE, stats  # 4 utterances, <= 2 sessions
    assert (stats["timeouts"], stats["failed"], stats["discarded"]) == (0, 0, 0), stats


def test_a_client_that_goes_away_interrupts_its_request(relay: Relay) -> None:
    pcm = tone(3.0)  # 75 frames over 3 s; the client leaves after 2
    seen: List[Event] = []
    with (
        client() as http,
        http.post(relay.url("/speak"), data=pcm, headers=PCM_TYPE, stream=True, timeout=30) as response,
    ):
        assert response.status_code == 200
        for kind, data in server_sent_events(response):
            seen.append((kind, data))
            if kind == "frame" and data["seq"] == 2:
                break
    # Leaving the block closed the connection: the server's next write fails, it closes the response, and
    # the pool gets its session back after telling the service to stop (CLIENT_INTERRUPT).
    req_id = seen[-1][1]["req_id"]
    if relay.name == "django-asgi" and django.VERSION < (5, 0):
        # Django 4.2's ASGI handler does not listen for the client's disconnect (5.0 does, and cancels the
        # response), and uvicorn drops writes to a closed connection: the stream runs to its end.
        every = frames_for(pcm)
        record = wait_until(lambda: len((r := relay.record(req_id))["frames"]) == every and r, "its last frame")
        assert not record["interrupted"]
    else:
        record = wait_until(lambda: (r := relay.record(req_id))["interrupted"] and r, "the interrupt")
        assert 2 <= len(record["frames"]) < frames_for(pcm), len(record["frames"])
    wait_until(lambda: relay.stats()["in_use"] == 0, "the session to be back in the pool")
    # The session went back healthy: the next utterance is served as usual.
    short = tone(0.2)
    check_utterance(relay, relay.speak(data=short, headers=PCM_TYPE), short, "pcm")
    stats = relay.stats()
    assert (stats["discarded"], stats["failed"]) == (0, 0), stats


def test_audio_it_cannot_take_is_refused_before_any_session_is_used(relay: Relay) -> None:
    before = relay.stats()
    cases: List[Tuple[Dict[str, Any], int, str]] = [
        ({"data": b"\x00" * 1001, "headers": PCM_TYPE}, 400, "even number of bytes"),  # whole samples
        ({"data": b"RIFF\x24\x00\x00\x00WAVEjunk"}, 400, "WAV"),  # a WAV header, then garbage
        ({"files": {"other": ("a.wav", wav_file(0.1), "audio/wav")}}, 400, "'audio'"),
    ]
    with client() as http:
        for kwargs, status, text in cases:
            response = http.post(relay.url("/speak"), timeout=10, **kwargs)
            assert (response.status_code, response.json()["error"]) == (status, "bad_audio"), response.text
            assert text in response.json()["message"]
    after = relay.stats()
    assert (after["created"], after["in_use"]) == (before["created"], 0)


def test_every_rejection_has_one_json_shape(relay: Relay) -> None:
    """Raw PCM only with its content type (415), and the frameworks' own 404, 405 and 413 as JSON."""
    too_big = b"\x00" * (32 * 1024 * 1024 + 2)  # relaying.MAX_UPLOAD, and then some
    cases: List[Tuple[str, str, Dict[str, Any], int, str]] = [
        ("POST", "/speak", {"data": tone(0.1)}, 415, "unsupported_media_type"),  # no Content-Type
        (
            "POST",
            "/speak",
            {"data": tone(0.1), "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ("PUT", "/speak", {"data": b""}, 405, "method_not_allowed"),
        ("GET", "/no-such-page", {}, 404, "not_found"),
        ("GET", "/debug/requests/no-such-request", {}, 404, "not_found"),
        ("POST", "/speak", {"data": too_big, "headers": PCM_TYPE}, 413, "request_entity_too_large"),
    ]
    with client() as http:
        for method, path, kwargs, status, code in cases:
            response = http.request(method, relay.url(path), timeout=30, **kwargs)
            assert response.status_code == status, (method, path, response.text[:300])
            assert response.headers["Content-Type"].startswith("application/json"), (path, response.headers)
            body = response.json()
            assert set(body) == {"error", "message"} and body["error"] == code and body["message"], body
    assert relay.stats()["in_use"] == 0


def test_the_frames_are_streamed_as_they_come(relay: Relay) -> None:
    """The stand-in paces frames like the service (one per 40 ms): each arrives before the last is produced,
    under ASGI as under WSGI (nothing buffers the stream)."""
    pcm = tone(1.2)  # 30 frames over 1.2 s
    arrivals: List[Tuple[str, float]] = []
    with (
        client() as http,
        http.post(relay.url("/speak"), data=pcm, headers=PCM_TYPE, stream=True, timeout=30) as response,
    ):
        assert response.status_code == 200, response.text
        for kind, _ in server_sent_events(response):
            arrivals.append((kind, time.monotonic()))
    frames = [at for kind, at in arrivals if kind == "frame"]
    assert len(frames) == frames_for(pcm)
    assert frames[-1] - frames[0] >= 0.6, frames[-1] - frames[0]  # 29 intervals of 40 ms, not one burst
    assert frames[len(frames) // 2] - frames[0] >= 0.25


@pytest.mark.parametrize("name", RELAYS)
def test_a_token_and_a_limit_per_client(name: str, tmp_path: Path) -> None:
    """With RELAY_TOKEN, only callers with the bearer token are served; RELAY_MAX_STREAMS_PER_CLIENT=1 turns a
    client's second concurrent stream away with 429 until the first ends."""
    relay = start_relay(name, tmp_path, RELAY_TOKEN="s3cret-token", RELAY_MAX_STREAMS_PER_CLIENT="1")
    bearer = {"Authorization": "Bearer s3cret-token"}
    try:
        with client() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
                response = http.post(relay.url("/speak"), headers=headers, timeout=10)
                assert response.status_code == 401 and response.json()["error"] == "unauthorized", response.text
                assert "s3cret" not in response.text
            with http.post(relay.url("/speak"), headers=bearer, stream=True, timeout=30) as first:
                assert first.status_code == 200
                events = server_sent_events(first)
                assert next(events)[0] == "start"
                second = client().post(relay.url("/speak"), headers=bearer, timeout=10)
                assert second.status_code == 429 and second.json()["error"] == "too_many_streams", second.text
            wait_until(lambda: relay.stats()["in_use"] == 0, "the first stream to end")
            assert relay.speak(headers=bearer)[-1][0] == "end"  # its slot was given back
        assert relay.stats()["created"] == 1  # the rejected calls used no session
    finally:
        stop_relay(relay)


@pytest.mark.parametrize("name", ["flask", "django", "starlette"])
def test_the_real_service_is_not_served_on_an_open_address_without_a_token(name: str) -> None:
    credentials = {var: "x" for var in ("API_KEY", "APP_ID", "AVATAR_ID")}
    env = sample_env(**{f"AVATARSDK_{k}": v for k, v in credentials.items()}, AVATARSDK_REGION="us-west")
    port = str(unused_port())
    if name == "django":
        args = [str(DJANGO_SAMPLE / "manage.py"), "runserver", f"0.0.0.0:{port}", "--noreload"]
    else:
        sample = FLASK_SAMPLE if name == "flask" else STARLETTE_SAMPLE
        args = [str(sample / "app.py"), "--host", "0.0.0.0", "--port", port]
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 2 and "RELAY_TOKEN" in result.stderr, result.stderr


def test_without_a_token_the_real_service_serves_loopback_clients_only() -> None:
    sys.path.insert(0, str(ROOT / "samples" / "relay_common"))
    from guard import Guard, Rejected

    guard = Guard(local=False)
    for client_address in ("127.0.0.1", "::1", "127.0.0.9"):
        guard.check(None, client_address)
    for client_address in ("10.1.2.3", "192.0.2.7", "unknown"):
        with pytest.raises(Rejected) as info:
            guard.check(None, client_address)
        assert info.value.status == 403
    Guard(local=True).check(None, "192.0.2.7")  # the stand-in spends nothing
    leave = guard.enter("192.0.2.7")
    leave()
    leave()  # once only
    guard.enter("192.0.2.7")


@pytest.mark.parametrize("name", ["flask", "django", "starlette"])
def test_without_credentials_it_says_what_to_set(name: str) -> None:
    if name in ("flask", "starlette"):
        sample = FLASK_SAMPLE if name == "flask" else STARLETTE_SAMPLE
        args = [str(sample / "app.py"), "--port", str(unused_port())]
    else:
        args = [str(DJANGO_SAMPLE / "manage.py"), "check"]
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=sample_env(), check=False
    )
    assert result.returncode in (1, 2) and "AVATARSDK_API_KEY" in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["flask", "django", "starlette"])
def test_the_other_switch_for_the_stand_in(name: str, tmp_path: Path) -> None:
    relay = start_relay(name, tmp_path, other_switch=True)
    try:
        assert relay.stats()["local"] is True
    finally:
        stop_relay(relay)


@pytest.mark.parametrize("name", ["flask", "django"])
def test_a_region_instead_of_the_urls(name: str, tmp_path: Path) -> None:
    """``--region`` gives the URLs; the stand-in sits behind the service's real host names (``_region_world``)."""
    port = unused_port()
    with RegionWorld(tmp_path) as world:
        credentials = {"AVATARSDK_" + key.upper(): value for key, value in world.credentials().items()}
        env = sample_env(**credentials, **world.env())
        if name == "flask":
            args = [sys.executable, str(FLASK_SAMPLE / "app.py"), "--port", str(port), "--region", "ap-northeast"]
        else:
            args = [sys.executable, str(DJANGO_SAMPLE / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"]
            args += ["--region", "ap-northeast"]
        relay = Relay(name, args, env, port, tmp_path / "server.log")
        try:
            relay.wait_ready()
            events = relay.speak("GET")  # the bundled clip
            frames = [base64.b64decode(data["data"]) for kind, data in events if kind == "frame"]
            found = world.service.find_request(events[-1][1]["req_id"])
            assert found is not None and frames == found[0].sent_frames(found[1].req_id)
            assert relay.stats()["local"] is False
        finally:
            stop_relay(relay)
        hosts = {host for host, _ in world.hosts}
    assert hosts == {"console.ap-northeast.spatialwalk.cloud", "api.ap-northeast.spatialwalk.cloud"}
    assert "avatar service: region ap-northeast" in relay.log() or "against region ap-northeast" in relay.log()


def test_both_samples_serve_the_one_shared_page() -> None:
    """samples/relay_common holds the page both samples serve: it has no template syntax, so Jinja and Django
    render it unchanged (and the browser test of the Flask page covers both)."""
    page = (ROOT / "samples" / "relay_common" / "templates" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"\{[{%#]", page)
    for sample in (FLASK_SAMPLE, DJANGO_SAMPLE, STARLETTE_SAMPLE):
        assert not list(sample.rglob("index.html")) and not list(sample.rglob("relaying.py")), sample


# ------------------------------------------------------------------------------- headless Chromium


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target (commands in order; events ignored)."""

    def __init__(self, ws_url: str) -> None:
        # suppress_origin: Chromium refuses DevTools connections that carry an Origin it was not told to allow.
        self._ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._next_id = 0

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                result: Dict[str, Any] = reply["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, f"{expression}: {result['exceptionDetails']}"
        return result["result"].get("value")

    def close(self) -> None:
        self._ws.close()


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("this test needs headless Chromium: apt-get install chromium (Debian's; .ci/run installs it)")
    return path


def launch_chromium(profile: Path, log_path: Path) -> Tuple[subprocess.Popen, int]:  # type: ignore[type-arg]
    """Headless Chromium with DevTools on a port it picks itself (written to DevToolsActivePort in its
    profile: no race for a free port); returns the process and that port."""
    args = [
        chromium_path(),
        "--headless",
        "--no-sandbox",  # as root, as CI runs
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    with open(log_path, "wb") as log:
        # A session of its own: the browser's helper processes are stopped with it, as one group.
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def port() -> Optional[int]:
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            lines = (profile / "DevToolsActivePort").read_text().split("\n")  # the port, then the browser's path
        except FileNotFoundError:
            return None
        return int(lines[0]) if len(lines) >= 2 and lines[0].isdigit() else None

    try:
        return proc, wait_until(port, "chromium's DevTools port", STARTUP_TIMEOUT, interval=0.05)
    except BaseException:
        stop_chromium(proc)
        raise


def stop_chromium(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of the process this test started
    except ProcessLookupError:
        return
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_the_page_shows_the_frames_arriving_in_headless_chromium(flask_relay: Relay, tmp_path: Path) -> None:
    relay = flask_relay
    browser, port = launch_chromium(tmp_path / "profile", tmp_path / "chromium.log")
    page: Optional[DevTools] = None
    try:
        with client() as http:
            listing = f"http://127.0.0.1:{port}/json/list"
            targets = wait_until(
                lambda: [t for t in http.get(listing, timeout=10).json() if t["type"] == "page"], "chromium's page"
            )
        page = DevTools(targets[0]["webSocketDebuggerUrl"])
        page.call("Page.navigate", url=relay.url("/"))
        loaded = "document.readyState === 'complete' && typeof window.relayState === 'object'"
        wait_until(lambda: page and page.evaluate(loaded), "the page to load")
        assert page.evaluate("document.querySelector('#frames').textContent") == "0"

        page.evaluate("document.querySelector('#speak').click()")
        seen: List[int] = []

        def finished() -> bool:
            assert page is not None
            frames, requests_done, errors = page.evaluate("[relayState.frames, relayState.requests, relayState.errors]")
            seen.append(frames)
            return bool(requests_done or errors)

        wait_until(finished, "the page to finish the request", timeout=30)
        state = page.evaluate("JSON.parse(JSON.stringify(relayState))")
        shot = page.call("Page.captureScreenshot")["data"]  # for a look when this test fails
        (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
        assert (state["errors"], state["error"], state["status"]) == (0, None, "done"), state
        assert (state["frames"], state["requests"]) == (50, 1)  # the bundled 2 s clip
        assert any(0 < n < 50 for n in seen), seen  # counts seen in between: the frames arrived one by one
        current = state["current"]
        assert current["frames"] == current["expected"] == 50
        assert 0 < current["firstFrameMs"] <= current["latencyMs"]
        assert 10 < current["fps"] < 60, current["fps"]  # the stand-in's 25 frames a second, give or take load
        dom = page.evaluate(
            "({frames: document.querySelector('#frames').textContent,"
            " request: document.querySelector('#request-frames').textContent,"
            " reqId: document.querySelector('#req-id').textContent,"
            " status: document.querySelector('#status').textContent,"
            " rows: document.querySelectorAll('#history tr').length})"
        )
        assert dom == {"frames": "50", "request": "50 of 50", "reqId": state["lastReqId"], "status": "done", "rows": 1}

        record = relay.record(state["lastReqId"])  # the page got every byte the stand-in sent
        assert len(record["frames"]) == 50 and not record["interrupted"]
        assert state["bytes"] == sum(len(base64.b64decode(f)) for f in record["frames"])
    finally:
        if page is not None:
            page.close()
        stop_chromium(browser)
