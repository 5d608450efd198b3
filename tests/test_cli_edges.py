"""The ``avatarsdk`` command's edges: common options in either place, input checked before credentials and
credentials before decoding, streaming progress, TLS options, output that cannot be written, Ctrl-C."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
import trustme
from conftest import wait_until
from test_cli import clean_env, cli, only_line, service_env, summary, write_wav

from avatarsdk._cli import COMMANDS, _parser
from avatarsdk.audio import load_audio
from avatarsdk.testing import FakeAvatarService, TokenReply

# ---------------------------------------------------------------------------------- common options

COMMAND_ARGS = {"demo": [], "send": ["a.wav"], "serve-local": [], "token": []}
OPTIONS = {
    "verbose": (["-v"], True),
    "verbose (long)": (["--verbose"], True),
    "local": (["--local"], True),
    "ca_bundle": (["--ca-bundle", "ca.pem"], "ca.pem"),
    "insecure": (["--insecure"], True),
}
DEFAULTS = {"verbose": False, "local": False, "ca_bundle": None, "insecure": False}


def parse(argv: List[str]) -> Dict[str, object]:
    args = vars(_parser().parse_args(argv))
    args.pop("func")
    return args


def test_every_command_is_covered() -> None:
    assert sorted(command.NAME for command in COMMANDS) == sorted(COMMAND_ARGS)


@pytest.mark.parametrize("command", sorted(COMMAND_ARGS))
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_common_options_mean_the_same_before_and_after_the_command(command: str, option: str) -> None:
    flags, value = OPTIONS[option]
    dest = option.split()[0]
    rest = COMMAND_ARGS[command]
    before = parse([*flags, command, *rest])
    after = parse([command, *rest, *flags])
    assert before == after
    assert before[dest] == value
    assert {name: before[name] for name in DEFAULTS if name != dest} == {k: v for k, v in DEFAULTS.items() if k != dest}
    neither = parse([command, *rest])
    assert {name: neither[name] for name in DEFAULTS} == DEFAULTS


def test_a_value_given_after_the_command_wins_and_one_before_is_kept() -> None:
    assert parse(["--ca-bundle", "a.pem", "token", "--ca-bundle", "b.pem"])["ca_bundle"] == "b.pem"
    assert parse(["--ca-bundle", "a.pem", "-v", "token", "--show"])["ca_bundle"] == "a.pem"
    assert parse(["-v", "token", "--show"])["verbose"] is True


def test_demo_verbose_after_the_command_shows_debug_logs() -> None:
    for args in (["demo", "-v"], ["-v", "demo"]):
        result = cli(*args, "--seconds", "0.2", "--utterances", "1")
        assert result.returncode == 0, result.stdout + result.stderr
        assert " avatarsdk._core DEBUG " in result.stderr
        assert "fake-token" not in result.stdout + result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_serve_local_refuses_the_tls_options_in_either_place(where: str) -> None:
    args = ["--insecure", "serve-local"] if where == "before" else ["serve-local", "--insecure"]
    result = cli(*args)
    assert result.returncode == 2
    assert only_line(result.stderr) == "error: --insecure: serve-local serves the stand-in and connects nowhere"


def test_demo_honours_avatarsdk_local() -> None:
    with FakeAvatarService(api_key="right") as service:
        env = service_env(service, AVATARSDK_API_KEY="wrong", AVATARSDK_LOCAL="1")
        result = cli("demo", "--seconds", "0.2", "--utterances", "1", env=env)
        assert service.token_requests == []  # the real settings were not used
    assert result.returncode == 0, result.stdout + result.stderr
    assert "avatarsdk demo: built-in stand-in service" in result.stdout


# --------------------------------------------------------------------------------- order of checks


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("folder", "error: folder: is a directory; give the audio files in it"),
        ("empty.wav", "error: empty.wav: the file is empty"),
    ],
)  # fmt: skip
def test_input_errors_come_before_credentials(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.wav").write_bytes(b"")
    result = cli("send", name, cwd=tmp_path)
    assert result.returncode == 2
    assert only_line(result.stderr) == message


def test_credentials_are_checked_before_any_decoding(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 100)
    result = cli("send", str(garbage))
    assert result.returncode == 2
    assert only_line(result.stderr).startswith("error: missing credentials: set ")  # not the file's error


def test_a_long_file_is_sent_while_it_is_decoded_with_progress(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "long.wav", 20.0, rate=8000)
    result = cli("send", "--local", str(audio))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(f"[1/1] {audio}: 20.00 s of audio (" in line and "while it is sent" in line for line in lines)
    quarters = [line.split(": ", 1)[1] for line in lines if " of 20.0 s sent, " in line]
    assert [line.split(" of ")[0] for line in quarters] == ["5.0", "10.0", "15.0", "20.0"], lines  # while sending
    assert summary(result.stdout)["long.wav"]["frames"] == "500"


NO_PYAV = """\
import sys, runpy
sys.modules["av"] = None  # as if the audio extra were not installed
sys.argv[0] = "avatarsdk"
runpy.run_module("avatarsdk", run_name="__main__")
"""


def test_without_pyav_send_decodes_wav_in_pure_python(tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "stereo.wav", 1.0, rate=44100, channels=2)
    with FakeAvatarService() as service:
        result = subprocess.run(
            [sys.executable, "-c", NO_PYAV, "send", str(audio)],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(service_env(service)),
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        req_id = summary(result.stdout)["stereo.wav"]["req_id"]
        received = bytes(service.connection(0).requests[req_id].audio)
    assert "decoded by pure Python while it is sent" in result.stdout
    assert received == load_audio(audio)  # byte for byte what load_audio gives


# ------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAvatarService]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with FakeAvatarService(ssl_context=context) as service:
        service.ca_bundle = str(bundle)  # type: ignore[attr-defined]
        yield service


def tls_env(service: FakeAvatarService) -> Dict[str, str]:
    """The whole environment of a command against ``service`` with no CA bundle variable: the default stores,
    which do not trust the test CA (removed, not emptied: requests 2.26 read an empty ``CURL_CA_BUNDLE`` as
    ``verify=""``, which turned verification off)."""
    env = clean_env(service_env(service))
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "WEBSOCKET_CLIENT_CA_BUNDLE"):
        env.pop(name, None)
    return env


def tls_cli(*args: str, env: Dict[str, str]) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """``cli`` with exactly ``env`` (no CA variable of this process's environment)."""
    return cli(*args, env=env, exact_env=True)


def test_ca_bundle_trusts_the_given_authorities(tls_service: FakeAvatarService, tmp_path: Path) -> None:
    bundle = tls_service.ca_bundle  # type: ignore[attr-defined]
    assert tls_service.console_url.startswith("https://")
    audio = str(write_wav(tmp_path / "a.wav", 0.2))
    env = tls_env(tls_service)
    refused = tls_cli("send", audio, env=env)
    assert refused.returncode == 1
    assert only_line(refused.stderr).startswith("error: connectionFailed: ")
    for args in (
        ["send", audio, "--ca-bundle", bundle],
        ["--ca-bundle", bundle, "token"],
        ["demo", "--ca-bundle", bundle],
    ):
        result = tls_cli(*args, env=env)
        assert result.returncode == 0, (args, result.stdout + result.stderr)
        assert result.stderr == ""


def test_insecure_connects_and_warns_once(tls_service: FakeAvatarService, tmp_path: Path) -> None:
    audio = str(write_wav(tmp_path / "a.wav", 0.2))
    env = tls_env(tls_service)
    for args in (["send", audio, "--insecure"], ["--insecure", "token"], ["--insecure", "demo", "--utterances", "1"]):
        result = tls_cli(*args, env=env)
        assert result.returncode == 0, (args, result.stdout + result.stderr)
        assert result.stderr == (
            "warning: --insecure: the servers' certificates are not checked; credentials can be intercepted\n"
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["send", "--local", "good.wav", "--ca-bundle", "missing.pem"],
            "error: --ca-bundle: expected a PEM file, got 'missing.pem' (no such file)",
        ),
        (["token", "--local", "--ca-bundle", "good.wav", "--insecure"], "error: --ca-bundle and --insecure: give one"),
        (["token", "--local", "--ca-bundle", "good.wav"], "error: --ca-bundle: could not load 'good.wav' as PEM"),
        (["send", "--local", "good.wav", "--ca-bundle", "good.wav"], "error: --ca-bundle: could not load 'good.wav'"),
    ],
)  # fmt: skip
def test_tls_usage_errors(tmp_path: Path, args: List[str], message: str) -> None:
    write_wav(tmp_path / "good.wav", 0.1)
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert only_line(result.stderr).startswith(message)


# --------------------------------------------------------------------------------- output, Ctrl-C


def run_into(stdout: int, *args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "avatarsdk", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )


@pytest.mark.parametrize("args", [["demo", "--utterances", "1"], ["send", "--local", "a.wav"], ["token", "--local"]])
def test_a_closed_pipe_ends_quietly_with_the_sigpipe_status(tmp_path: Path, args: List[str]) -> None:
    args = [str(write_wav(tmp_path / "a.wav", 0.2)) if arg == "a.wav" else arg for arg in args]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away, as `| head -1` does after its line
    try:
        result = run_into(write_end, *args)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_demo_into_head_prints_one_line_and_no_traceback() -> None:
    result = subprocess.run(
        f"{sys.executable} -m avatarsdk demo --utterances 3 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert result.stdout == "avatarsdk demo: built-in stand-in service (no credentials needed)\n"
    assert result.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["demo", "--utterances", "1"], ["token", "--local"]])
def test_a_full_disk_is_one_error_line(args: List[str]) -> None:
    with open("/dev/full", "w") as full:
        result = run_into(full.fileno(), *args)
    assert result.returncode == 1
    assert result.stderr == "error: cannot write the output: No space left on device\n"


def started_cli(service: FakeAvatarService, command: str, *args: str) -> subprocess.Popen:  # type: ignore[type-arg]
    """``python -m avatarsdk COMMAND ARGS`` against ``service``, started, its output in pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "avatarsdk", command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(service_env(service)),
    )


@pytest.mark.parametrize(("command", "mark"), [("send", "[1/1]"), ("demo", "3. start")])
def test_ctrl_c_ends_with_one_line_and_status_130(tmp_path: Path, command: str, mark: str) -> None:
    audio = str(write_wav(tmp_path / "a.wav", 0.5))
    args = [audio, "--timeout", "60"] if command == "send" else ["--seconds", "0.5", "--utterances", "1"]
    with FakeAvatarService(on_request=lambda conn, request: None) as service:  # never answers: they wait
        proc = started_cli(service, command, *args)
        assert proc.stdout is not None
        seen: Optional[str] = None
        for line in proc.stdout:
            if line.startswith(mark):
                seen = line
                break
        assert seen is not None, proc.communicate(timeout=30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == "interrupted\n"
    assert "Traceback" not in out


@pytest.mark.parametrize("command", ["token", "send", "demo"])
def test_ctrl_c_during_a_token_call_that_is_not_answered_ends_at_once(tmp_path: Path, command: str) -> None:
    """The token call cannot be cut, and nothing is connected yet: the command is not waited for (it would sit
    out the reply's delay, longer than this test waits)."""
    args = {"token": [], "send": [str(write_wav(tmp_path / "a.wav", 0.2))], "demo": []}[command]
    with FakeAvatarService() as service:
        service.script_token(TokenReply(200, {"sessionToken": "late"}, delay=60.0))
        proc = started_cli(service, command, *args)
        try:
            wait_until(lambda: service.token_requests or proc.poll() is not None, "the token call", timeout=30)
            assert proc.poll() is None, proc.communicate()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert (proc.returncode, err) == (130, "interrupted\n"), out
