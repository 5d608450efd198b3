"""samples/connection_pool.py run as users run it: a subprocess against the built-in stand-in."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from _region_world import RegionWorld

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "connection_pool.py"
ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\d+)\s+([\d,]+)\s+([\d.]+) ms\s+([\d.]+) ms\s+([\d.]+) ms$")


def run(*args: str, local_env: bool = False, **extra_env: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARSDK_")}
    if local_env:
        env["AVATARSDK_LOCAL"] = "1"
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, str(SAMPLE), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


@pytest.mark.parametrize(
    ("local_env", "extra"),
    [(False, []), (True, []), (False, ["--dispatch-threads", "2"])],
    ids=["--local", "AVATARSDK_LOCAL=1", "--dispatch-threads"],
)
def test_concurrent_utterances_through_one_pool(local_env: bool, extra: List[str]) -> None:
    flags = ["--utterances", "6", "--concurrency", "3", "--max-size", "2", "--seconds", "0.2", *extra]
    result = run(*([] if local_env else ["--local"]), *flags, local_env=local_env)
    assert result.returncode == 0, result.stderr
    lines: List[str] = result.stdout.splitlines()
    assert lines[0].split() == ["#", "req_id", "frames", "bytes", "wait", "first", "frame", "total"]
    rows = [ROW.match(line) for line in lines[1:7]]
    assert all(rows), lines
    assert sorted(int(m[1]) for m in rows if m) == [1, 2, 3, 4, 5, 6]
    assert {int(m[3]) for m in rows if m} == {5}  # 0.2 s of audio: 5 frames each, every one arrived
    assert len({m[2] for m in rows if m}) == 6  # a request id each
    assert lines[7].startswith("6 of 6 utterances, 30 frames in ")
    created = int(re.search(r"created (\d+)", lines[8])[1])  # type: ignore[index]
    assert lines[8].startswith("pool: max_size 2,") and 1 <= created <= 2
    assert "timeouts 0, failed 0, refused 0" in lines[8]
    cost = re.fullmatch(r"connected: ([\d.]+) session-seconds, at least (\d+) credits? \(.*\)", lines[9])
    assert cost is not None, lines[9]
    seconds, credits = float(cost[1]), int(cost[2])
    assert seconds > 0 and credits == max(created, math.ceil(seconds / 6))  # each session bills 1 at least


def test_without_credentials_it_says_what_to_set() -> None:
    result = run("--utterances", "1")
    assert result.returncode == 2 and "AVATARSDK_API_KEY" in result.stderr


def test_a_region_instead_of_the_urls(tmp_path: Path) -> None:
    with RegionWorld(tmp_path) as world:
        credentials = {"AVATARSDK_" + name.upper(): value for name, value in world.credentials().items()}
        flags = ["--utterances", "2", "--concurrency", "2", "--max-size", "2", "--seconds", "0.2"]
        result = run("--region", "us-west", *flags, **credentials, **world.env())
        hosts = {host for host, _ in world.hosts}
    assert result.returncode == 0, result.stderr
    assert "2 of 2 utterances, 10 frames in " in result.stdout
    assert hosts == {"console.us-west.spatialwalk.cloud", "api.us-west.spatialwalk.cloud"}
    missing = run("--utterances", "1", "--region", "us-west", AVATARSDK_API_KEY="k")
    assert missing.returncode == 2
    assert "set AVATARSDK_APP_ID, AVATARSDK_AVATAR_ID (or use --local" in missing.stderr
