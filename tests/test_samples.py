"""The samples run as users run them: subprocesses against the built-in stand-in."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import wave
from pathlib import Path
from typing import Dict, List, Optional

from _region_world import RegionWorld

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def read_frames(path: Path) -> List[bytes]:
    data, frames, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        frames.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return frames


def run(
    *args: str, cwd: Path, local_env: bool = False, extra_env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARSDK_")}
    if local_env:
        env["AVATARSDK_LOCAL"] = "1"
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_quickstart_with_a_generated_tone(tmp_path: Path) -> None:
    result = run(str(SAMPLES / "quickstart.py"), "--local", "--out", "out.bin", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frames = read_frames(tmp_path / "out.bin")
    assert len(frames) == 50  # 2 s of audio at 25 fps
    assert "50 frames written to out.bin" in result.stdout


def test_quickstart_with_a_wav_file_and_the_environment_switch(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "in.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(b"\x01\x00" * 24000)  # 1 s
    result = run(str(SAMPLES / "quickstart.py"), "in.wav", cwd=tmp_path, local_env=True)
    assert result.returncode == 0, result.stderr
    assert len(read_frames(tmp_path / "frames.bin")) == 25
    assert "connection id: conn-" in result.stdout and "request id: " in result.stdout


def region_env(world: RegionWorld) -> Dict[str, str]:
    """The stand-in's credentials without URLs, behind the service's real host names (``_region_world``)."""
    names = {"api_key": "AVATARSDK_API_KEY", "app_id": "AVATARSDK_APP_ID", "avatar_id": "AVATARSDK_AVATAR_ID"}
    return {names[name]: value for name, value in world.credentials().items()} | world.env()


def test_quickstart_with_a_region(tmp_path: Path) -> None:
    with RegionWorld(tmp_path) as world:
        result = run(
            str(SAMPLES / "quickstart.py"), "--region", "cn-beijing", cwd=tmp_path, extra_env=region_env(world)
        )
        hosts = world.hosts
    assert result.returncode == 0, result.stderr
    assert len(read_frames(tmp_path / "frames.bin")) == 50
    assert sorted(hosts) == [("api.cn-beijing.spatialwalk.cloud", 443), ("console.cn-beijing.spatialwalk.cloud", 443)]
