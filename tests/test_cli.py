"""The ``avatarsdk`` command as a user runs it: subprocesses of ``python -m avatarsdk``."""

from __future__ import annotations

import fcntl
import math
import os
import pty
import queue
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from _region_world import RegionWorld
from conftest import HAVE_PYAV, needs_pyav, unused_port

from avatarsdk._proto import ingress_v2_pb2 as pb
from avatarsdk.audio import iter_audio
from avatarsdk.framefile import read_frames
from avatarsdk.testing import FakeAvatarService, jsonapi_error

REQ_ID = r"\d{14}_[A-Za-z0-9_-]{12}"
ALL_VARIABLES = [
    "AVATARSDK_API_KEY",
    "AVATARSDK_APP_ID",
    "AVATARSDK_AVATAR_ID",
    "AVATARSDK_CONSOLE_URL",
    "AVATARSDK_INGRESS_URL",
]


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARSDK_")}
    env.update(extra or {})
    return env


def cli(
    *args: str, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None, exact_env: bool = False
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """``python -m avatarsdk ARGS`` in ``cwd``: this process's environment without ``AVATARSDK_*`` plus ``env``,
    or exactly ``env`` (``exact_env``)."""
    return subprocess.run(
        [sys.executable, "-m", "avatarsdk", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=(env or {}) if exact_env else clean_env(env),
        check=False,
    )


def write_wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    count = int(seconds * rate)
    frames = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * 330 * i / rate))) * channels for i in range(count)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def service_env(service: FakeAvatarService, **overrides: str) -> Dict[str, str]:
    env = {
        "AVATARSDK_API_KEY": service.api_key,
        "AVATARSDK_APP_ID": service.app_id,
        "AVATARSDK_AVATAR_ID": service.avatar_id,
        "AVATARSDK_CONSOLE_URL": service.console_url,
        "AVATARSDK_INGRESS_URL": service.ingress_url,
    }
    env.update(overrides)
    return env


ROW = re.compile(
    rf"^(?P<file>\S+)\s+(?P<req_id>{REQ_ID})\s+(?P<audio>[\d.]+) s\s+(?P<frames>\d+)\s+(?P<bytes>[\d,]+)"
    r"\s+(?P<first>-|[\d.]+ ms)\s+(?P<duration>-|[\d.]+ ms)$"
)


def summary(stdout: str) -> Dict[str, Dict[str, str]]:
    """The summary table's rows by file name."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["file", "req_id"])
    assert lines[start].split() == ["file", "req_id", "audio", "frames", "bytes", "first", "frame", "duration"]
    rows = {}
    for line in lines[start + 1 :]:
        match = ROW.match(line)
        if match is None:
            break
        row = match.groupdict()
        row["bytes"] = row["bytes"].replace(",", "")
        rows[Path(row.pop("file")).name] = row
    return rows


def only_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------------------------------- send


def test_send_local_prints_a_summary_and_saves_each_request(tmp_path: Path) -> None:
    one = write_wav(tmp_path / "one.wav", 1.0)
    two = write_wav(tmp_path / "two.wav", 0.6, rate=44100, channels=2)  # converted to 16 kHz mono
    out_dir = tmp_path / "frames"
    result = cli("send", "--local", str(one), str(two), "--out", str(out_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "built-in stand-in service" in result.stdout
    rows = summary(result.stdout)
    assert set(rows) == {"one.wav", "two.wav"}
    assert rows["one.wav"]["req_id"] != rows["two.wav"]["req_id"]
    expected_frames = {"one.wav": 25, "two.wav": 15}  # 25 frames per second of audio
    for name, row in rows.items():
        assert int(row["frames"]) == expected_frames[name]
        assert row["first"] != "-" and row["duration"] != "-"
        path = out_dir / f"{Path(name).stem}.{row['req_id']}.frames"
        assert f"saved {expected_frames[name]} frames to {path}" in result.stdout
        frames = list(read_frames(path))
        assert len(frames) == expected_frames[name]
        assert [f.last for f in frames] == [False] * (len(frames) - 1) + [True]
        assert sum(len(f.data) for f in frames) == int(row["bytes"])
        for frame in frames:
            message = pb.Message()
            message.ParseFromString(frame.data)
            assert message.type == pb.MESSAGE_SERVER_RESPONSE_ANIMATION == 5
            assert message.server_response_animation.req_id == row["req_id"]
            assert message.server_response_animation.end == frame.last
    assert rows["one.wav"]["audio"] == "1.00" and rows["two.wav"]["audio"] == "0.60"
    assert result.stderr == ""


def test_send_saves_the_exact_bytes_the_service_sent(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "speech.wav", 1.0, rate=48000)
    with FakeAvatarService() as service:
        result = cli(
            "send", str(audio), "--out", str(tmp_path), "--chunk-ms", "40", "--sample-rate", "24000",
            env=service_env(service),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        req_id = summary(result.stdout)["speech.wav"]["req_id"]
        conn = service.connection(0)
        received = conn.requests[req_id]
        assert conn.configure is not None and conn.configure.sample_rate == 24000
        sent = b"".join(chunk for chunk, _ in iter_audio(audio, sample_rate=24000, chunk_ms=40))
        assert bytes(received.audio) == sent  # decoded as iter_audio decodes (FFmpeg with the audio extra)
        assert received.chunks == 25 and received.ended  # 1 s in chunks of 40 ms, end=True on the last
        saved = [frame.data for frame in read_frames(tmp_path / f"speech.{req_id}.frames")]
        assert saved == conn.sent_frames(req_id)
    assert service.api_key not in result.stdout + result.stderr


def test_flags_override_the_environment(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav", 0.2)
    with FakeAvatarService(api_key="right-key") as service:
        env = service_env(service, AVATARSDK_API_KEY="wrong-key", AVATARSDK_LOCAL="1")
        result = cli("send", str(audio), "--api-key", "right-key", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert [r.headers["x-api-key"] for r in service.token_requests] == ["right-key"]


def test_local_from_the_environment(tmp_path: Path) -> None:
    result = cli("send", str(write_wav(tmp_path / "a.wav", 0.2)), env={"AVATARSDK_LOCAL": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(summary(result.stdout)["a.wav"]["frames"]) == 5


def test_verbose_shows_debug_logs_but_no_secrets(tmp_path: Path) -> None:
    result = cli("send", "--local", "--verbose", str(write_wav(tmp_path / "a.wav", 0.2)))
    assert result.returncode == 0, result.stderr
    assert re.search(r"avatarsdk\.\S+ DEBUG ", result.stderr)
    assert "test-api-key" not in result.stdout + result.stderr
    assert "fake-token" not in result.stdout + result.stderr
    quiet = cli("-v", "send", "--local", str(tmp_path / "a.wav"))  # before the subcommand too
    assert " DEBUG " in quiet.stderr


# ----------------------------------------------------------------------------------------- errors


def test_bad_credentials_exit_1_with_the_code_and_a_hint(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav", 0.2)
    with FakeAvatarService() as service:
        env = service_env(service, AVATARSDK_API_KEY="wrong-key")
        for command in (["send", str(audio)], ["token"]):
            result = cli(*command, env=env)
            assert result.returncode == 1, result.stdout + result.stderr
            line = only_line(result.stderr)
            assert line.startswith("error: invalidRequest: session token request failed (HTTP 401)")
            assert "(hint: check the API key (--api-key / AVATARSDK_API_KEY)" in line
            assert "wrong-key" not in result.stdout + result.stderr


def test_service_errors_during_the_session_exit_1(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav", 0.2)
    with FakeAvatarService() as service:
        service.reject_upgrade(401, jsonapi_error(401, "UNAUTHENTICATED", "Unauthorized", "token is expired"))
        result = cli("send", str(audio), env=service_env(service))
    assert result.returncode == 1
    line = only_line(result.stderr)
    assert line.startswith("error: sessionTokenExpired: ")
    assert "(hint: the session token expired" in line

    def out_of_credits(conn: object, request: object) -> None:
        conn.send_error(4001, "credits exhausted", request.req_id)  # type: ignore[attr-defined]

    with FakeAvatarService(on_request=out_of_credits) as service:
        result = cli("send", str(audio), str(audio), env=service_env(service))
    assert result.returncode == 1
    assert only_line(result.stderr).startswith("error: creditsExhausted: ")
    assert "(hint: the account is out of credits)" in result.stderr


def test_a_request_without_its_last_frame_times_out(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav", 0.2)
    with FakeAvatarService(on_request=lambda conn, request: None) as service:  # never answers
        result = cli("send", str(audio), "--timeout", "0.5", env=service_env(service))
    assert result.returncode == 1
    assert re.fullmatch(
        rf"error: timeout: no frame for 0\.5 s, so no last frame for \S+a\.wav \(request {REQ_ID}\) \(hint: .*\)",
        only_line(result.stderr),
    )


def test_missing_credentials_exit_2_naming_the_variables(tmp_path: Path) -> None:
    audio = str(write_wav(tmp_path / "a.wav", 0.2))
    result = cli("send", audio)
    assert result.returncode == 2
    line = only_line(result.stderr)
    assert line.startswith("error: missing credentials: set ")
    for variable in ALL_VARIABLES:
        assert variable in line
    assert "--api-key" in line and "--local" in line

    partial = cli("send", audio, "--app-id", "app", env={"AVATARSDK_API_KEY": "k", "AVATARSDK_AVATAR_ID": "a"})
    assert partial.returncode == 2
    assert (
        "set AVATARSDK_CONSOLE_URL (--console-url), AVATARSDK_INGRESS_URL (--ingress-url) (or AVATARSDK_REGION"
        " (--region) for the URLs), or use --local" in partial.stderr
    )
    assert "AVATARSDK_APP_ID" not in partial.stderr

    regional = cli("send", audio, "--region", "us-west", env={"AVATARSDK_API_KEY": "k"})
    assert regional.returncode == 2
    assert "set AVATARSDK_APP_ID (--app-id), AVATARSDK_AVATAR_ID (--avatar-id), or use" in regional.stderr

    token = cli("token")
    assert token.returncode == 2
    assert (
        "set AVATARSDK_API_KEY (--api-key), AVATARSDK_CONSOLE_URL (--console-url) (or AVATARSDK_REGION (--region)"
        " for the URLs), or use" in token.stderr
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["send", "--local", "missing.wav"], "error: missing.wav: no such file"),
        pytest.param(
            ["send", "--local", "garbage.wav"],
            "error: garbage.wav: not a WAV file, and FFmpeg cannot decode it",
            marks=needs_pyav,
        ),
        pytest.param(
            ["send", "--local", "garbage.wav"],
            "error: garbage.wav: not a WAV file (no RIFF/WAVE header), and not a recognised audio format",
            marks=pytest.mark.skipif(HAVE_PYAV, reason="without PyAV only"),
        ),
        (["send", "--local", "good.wav", "--chunk-ms", "0"], "error: --chunk-ms: expected a positive"),
        (["send", "--local", "good.wav", "--timeout", "-1"], "error: --timeout: expected a positive"),
        (["send", "--local", "good.wav", "--out", "good.wav"], "error: --out: good.wav is not a directory"),
        (
            ["send", "good.wav", "--api-key", "k", "--app-id", "a", "--avatar-id", "v", "--console-url", "ftp://x",
             "--ingress-url", "https://x"],
            "error: console_endpoint_url: expected a URL with scheme http or https",
        ),
        (
            ["send", "good.wav", "--api-key", "k", "--app-id", "a", "--avatar-id", "v", "--region", "mars"],
            "error: region: expected one of 'us-west', 'ap-northeast', 'cn-beijing', 'spatialreal' or 'auto', got",
        ),
        (["token", "--api-key", "k", "--region", "mars"], "error: region: expected one of 'us-west', 'ap-northeast'"),
        (["token", "--api-key", "k", "--region", "auto"], "error: --region auto: the bootstrap call needs the app id"),
        (["token", "--local", "--expires-in", "0"], "error: --expires-in: expected 1 to 86400 seconds"),
        (["token", "--local", "--expires-in", "86401"], "error: --expires-in: expected 1 to 86400 seconds"),
        (["serve-local", "--port", "70000"], "error: --port: expected a port from 0 (any free one) to 65535"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(tmp_path: Path, args: List[str], message: str) -> None:
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio" * 10)
    write_wav(tmp_path / "good.wav", 0.1)
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert only_line(result.stderr).startswith(message)


def test_argparse_errors_exit_2() -> None:
    assert cli("send").returncode == 2  # no FILE
    result = cli("send", "--local", "x.wav", "--sample-rate", "12345")
    assert result.returncode == 2 and "invalid choice" in result.stderr


MISSING_EXTRA = """\
import sys
sys.modules[sys.argv[1]] = None  # as if the extra were not installed
from avatarsdk.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def test_local_without_the_testing_extra_says_what_to_install(tmp_path: Path) -> None:
    audio = str(write_wav(tmp_path / "a.wav", 0.1))
    for args in (["send", "--local", audio], ["token", "--local"], ["serve-local"]):
        result = subprocess.run(
            [sys.executable, "-c", MISSING_EXTRA, "websockets", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert only_line(result.stderr) == (
            'error: the built-in stand-in needs the testing extra: pip install "avatarsdk[testing]"'
        )


# ------------------------------------------------------------------------------ progress display


def run_on_terminal(args: List[str], timeout: float = 60.0) -> Tuple[int, str, str]:
    """Run ``args`` with stdout on a pseudo-terminal (100 columns); return status, stdout, stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(args, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=clean_env())
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                raise AssertionError(f"no output for {timeout}s; so far: {output.decode(errors='replace')}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
    finally:
        os.close(master)
    status = proc.wait(timeout)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    return status, output.decode(), stderr


def test_a_terminal_gets_a_progress_bar(tmp_path: Path) -> None:
    audio = str(write_wav(tmp_path / "bar.wav", 1.0))
    status, out, err = run_on_terminal([sys.executable, "-m", "avatarsdk", "send", "--local", audio])
    assert status == 0, out + err
    assert re.search(r"\[1/1\] bar\.wav: 100%\|.*\| 25/25 \[", out)
    assert "frame/s" in out
    assert summary(out.replace("\r\n", "\n"))["bar.wav"]["frames"] == "25"


def test_without_tqdm_a_terminal_gets_plain_lines(tmp_path: Path) -> None:
    audio = str(write_wav(tmp_path / "plain.wav", 1.0))
    status, out, err = run_on_terminal([sys.executable, "-c", MISSING_EXTRA, "tqdm", "send", "--local", audio])
    assert status == 0, out + err
    decoder = r"pcm_s16le, 16000 Hz, 1 channel\(s\); decoded by FFmpeg" if HAVE_PYAV else r"WAV 16-bit PCM, .*Python"
    line = rf"\[1/1\] {re.escape(audio)}: 1\.00 s of audio \({decoder} while it is sent\), in chunks of 20 ms"
    assert re.search(line, out)
    assert re.search(rf"\[1/1\] {re.escape(audio)}: request {REQ_ID} done, 25 frames", out)
    assert "%|" not in out


# ------------------------------------------------------------------------------------ serve-local


@pytest.mark.parametrize("fixed_ports", [False, True])
def test_serve_local_serves_until_terminated(tmp_path: Path, fixed_ports: bool) -> None:
    audio = write_wav(tmp_path / "a.wav", 0.4)
    ports = ["--port", str(unused_port()), "--console-port", str(unused_port())] if fixed_ports else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "avatarsdk", "serve-local", *ports],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    lines: queue.Queue[Optional[str]] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        printed = []
        while not printed or printed[-1] != "ready":
            line = lines.get(timeout=30)
            assert line is not None, f"serve-local ended early: {printed} {proc.stderr.read() if proc.stderr else ''}"
            printed.append(line)
        exports = dict(re.findall(r"^export (AVATARSDK_\w+)=(\S+)$", "\n".join(printed), re.MULTILINE))
        assert sorted(exports) == sorted(ALL_VARIABLES)
        assert exports["AVATARSDK_API_KEY"] == "test-api-key"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v2/driveningress", exports["AVATARSDK_INGRESS_URL"])
        assert f"  ingress  {exports['AVATARSDK_INGRESS_URL']}" in printed
        if fixed_ports:
            assert exports["AVATARSDK_INGRESS_URL"].startswith(f"http://127.0.0.1:{ports[1]}/")
            assert exports["AVATARSDK_CONSOLE_URL"] == f"http://127.0.0.1:{ports[3]}"

        result = cli("send", str(audio), env=exports)
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary(result.stdout)["a.wav"]["frames"] == "10"
        token = cli("token", "--show", env=exports)
        assert token.returncode == 0 and token.stdout.splitlines()[-1].startswith("fake-token-")
    finally:
        proc.terminate()
        status = proc.wait(timeout=30)
        reader.join(10)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert status == 0
    assert "stopped" in rest
    assert proc.stderr is not None and proc.stderr.read() == ""
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()


# ------------------------------------------------------------------------------------------ token


def test_token_prints_its_expiry_and_hides_the_token() -> None:
    with FakeAvatarService() as service:
        env = service_env(service)
        before = datetime.now(timezone.utc)
        hidden = cli("token", "--expires-in", "600", env=env)
        shown = cli("token", "--show", env=env)
        issued = service.issued_tokens
        sent = [r.json["expireAt"] for r in service.token_requests]
    assert hidden.returncode == 0 and shown.returncode == 0, hidden.stderr + shown.stderr
    host = service.console_url.split("//")[1]
    match = re.fullmatch(
        rf"session token from {re.escape(host)}: expires (\S+ \S+) UTC \(in 600 s\)\n"
        r"\(the token is not shown; --show prints it\)\n",
        hidden.stdout,
    )
    assert match, hidden.stdout
    expires = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert before + timedelta(seconds=598) <= expires <= datetime.now(timezone.utc) + timedelta(seconds=600)
    assert int(expires.timestamp()) == sent[0]  # the expiry printed is the one requested
    assert not any(token in hidden.stdout for token in issued)
    assert shown.stdout.splitlines()[0].endswith("(in 3600 s)")
    assert shown.stdout.splitlines()[1] == issued[1]


def test_token_local() -> None:
    result = cli("token", "--local", "--show", "--expires-in", "60")
    assert result.returncode == 0, result.stderr
    assert re.match(r"session token from 127\.0\.0\.1:\d+: expires .* UTC \(in 60 s\)\nfake-token-", result.stdout)


# ------------------------------------------------------------------------------------------ regions


def world_env(world: RegionWorld, **extra: str) -> Dict[str, str]:
    """The stand-in's credentials but no URL, and the proxy and CA that put it behind the real host names."""
    return {
        "AVATARSDK_API_KEY": world.service.api_key,
        "AVATARSDK_APP_ID": world.service.app_id,
        "AVATARSDK_AVATAR_ID": world.service.avatar_id,
        **world.env(),
        **extra,
    }


def test_send_with_a_region_from_the_environment(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav", 0.2)
    with RegionWorld(tmp_path) as world:
        result = cli("send", str(audio), env=world_env(world, AVATARSDK_REGION="ap-northeast"))
        hosts = world.hosts
    assert result.returncode == 0, result.stdout + result.stderr
    assert "avatarsdk send: 1 file(s) to region ap-northeast" in result.stdout
    assert int(summary(result.stdout)["a.wav"]["frames"]) == 5
    assert sorted(hosts) == [
        ("api.ap-northeast.spatialwalk.cloud", 443),
        ("console.ap-northeast.spatialwalk.cloud", 443),
    ]


def test_the_region_flag_wins_over_the_variable_and_a_url_over_the_region(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "a.wav", 0.1)
    with RegionWorld(tmp_path) as world:
        env = world_env(world, AVATARSDK_REGION="mars", AVATARSDK_INGRESS_URL=world.service.ingress_url)
        result = cli("send", str(audio), "--region", "cn-beijing", env=env)
        hosts = world.hosts
    assert result.returncode == 0, result.stdout + result.stderr
    assert hosts == [("console.cn-beijing.spatialwalk.cloud", 443)]  # the ingress given: no tunnel to it


def test_token_with_the_spatialreal_preset_and_with_auto(tmp_path: Path) -> None:
    with RegionWorld(tmp_path, bootstrap_region="eu-central") as world:
        preset = cli("token", "--region", "spatialreal", env=world_env(world))
        auto = cli("token", "--region", "auto", "--show", env=world_env(world))
        requests = world.service.token_requests
        bootstrap = world.service.bootstrap_requests
    assert preset.returncode == 0 and auto.returncode == 0, preset.stderr + auto.stderr
    assert preset.stdout.startswith("session token from api.spatialreal.cloud: expires ")
    assert auto.stdout.startswith("session token from console.eu-central.spatialwalk.cloud: expires ")
    assert [r.path for r in requests] == ["/v1/auth/session-token", "/v1/console/session-tokens"]
    assert [r.json["appId"] for r in requests] == [world.service.app_id] * 2
    assert len(bootstrap) == 1
    assert auto.stdout.splitlines()[1] == world.service.issued_tokens[1]


# ------------------------------------------------------------------------------------- entry point


def test_console_script_and_help() -> None:
    script = Path(sys.executable).parent / ("avatarsdk.exe" if os.name == "nt" else "avatarsdk")
    assert script.exists(), f"{script} missing: reinstall the package (pip install -e .)"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    for command in ("demo", "send", "serve-local", "token"):
        assert command in result.stdout
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.stdout.startswith("avatarsdk ")


def test_serve_local_on_a_busy_port_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = cli("serve-local", "--port", str(busy.getsockname()[1]))
    assert result.returncode == 2
    assert only_line(result.stderr).startswith("error: cannot listen on 127.0.0.1")
