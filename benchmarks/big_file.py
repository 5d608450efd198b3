"""``python -m benchmarks big-file``: ``avatarsdk send --local`` of one long WAV file, its wall time, peak RSS
and how long the first chunk took to leave, with and without PyAV (the ``audio`` extra).

    python3 -m benchmarks big-file                         # 10 minutes of 48 kHz stereo, both decoders
    python3 -m benchmarks big-file --minutes 1 --decoders ffmpeg

Each run is a fresh ``python -m avatarsdk`` process; "without PyAV" hides the ``av`` module from it. Peak RSS
is the child's own ``ru_maxrss`` (``os.wait4``). The targets (issue 12): with PyAV, under 10 s and under 200 MB
for 10 minutes. This is not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import wave
from array import array
from pathlib import Path
from typing import Dict, List, Tuple

TARGET_SECONDS = 10.0
TARGET_RSS_MB = 200.0
HIDE_PYAV = (
    "import sys, runpy; sys.modules['av'] = None; sys.argv[0] = 'avatarsdk'; "
    "runpy.run_module('avatarsdk', run_name='__main__')"
)


def write_wav(path: Path, minutes: float, rate: int = 48000) -> None:
    """``minutes`` of a 220 Hz tone (left) and a 330 Hz tone (right), 16-bit, written a second at a time."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        step_l, step_r = 2 * math.pi * 220 / rate, 2 * math.pi * 330 / rate
        for second in range(int(minutes * 60)):
            base = second * rate
            samples = array("h")
            for i in range(base, base + rate):
                samples.append(int(8000 * math.sin(i * step_l)))
                samples.append(int(8000 * math.sin(i * step_r)))
            if sys.byteorder == "big":
                samples.byteswap()
            out.writeframes(samples.tobytes())


def run_send(path: Path, decoder: str) -> Tuple[float, float, float, int]:
    """Wall seconds, peak RSS in MB, seconds until the first progress line, and the exit status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARSDK_")}
    prefix = [sys.executable, "-c", HIDE_PYAV] if decoder == "python" else [sys.executable, "-m", "avatarsdk"]
    args = [*prefix, "send", "--local", "--timeout", "600", str(path)]
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    first_line = math.nan
    for line in proc.stdout:
        if line.startswith("[1/1]") and math.isnan(first_line):
            first_line = time.perf_counter() - started
    _, raw_status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    wall = time.perf_counter() - started
    proc.returncode = status = os.waitstatus_to_exitcode(raw_status)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    if status:
        print(err, file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, first_line, status  # ru_maxrss is in kB on Linux


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks big-file", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the file (default 10)")
    parser.add_argument("--decoders", default="ffmpeg,python", help="ffmpeg, python or both (default both)")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the FFmpeg run meets the targets")
    args = parser.parse_args(argv)
    results: Dict[str, Tuple[float, float, float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        write_wav(path, args.minutes)
        print(f"{path.stat().st_size / 1e6:.0f} MB WAV: {args.minutes:g} min, 48 kHz, stereo, 16-bit")
        for decoder in args.decoders.split(","):
            results[decoder] = run_send(path, decoder)
            wall, rss, first, status = results[decoder]
            print(
                f"{decoder:7} wall {wall:6.1f} s   peak RSS {rss:7.1f} MB   first progress line {first:5.2f} s"
                f"   exit {status}"
            )
    if "ffmpeg" in results and args.minutes == 10.0:
        wall, rss, _, status = results["ffmpeg"]
        ok = status == 0 and wall < TARGET_SECONDS and rss < TARGET_RSS_MB
        verdict = "met" if ok else "MISSED"
        print(f"targets (FFmpeg, 10 min): < {TARGET_SECONDS:g} s and < {TARGET_RSS_MB:g} MB: {verdict}")
        if args.check and not ok:
            return 1
    return 0
