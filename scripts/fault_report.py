"""Run the fault-injection suite with many runs per fault and write its figures into docs/RELIABILITY.md.

Usage:
    python scripts/fault_report.py                  # 200 runs per fault (about 3 minutes on 2 cores)
    python scripts/fault_report.py --runs 50 --seed 1000
    python scripts/fault_report.py --from-report faults.jsonl   # render a saved report, run nothing

It runs ``python -m pytest tests/test_faults.py`` with ``AVATARSDK_FAULT_RUNS``, ``AVATARSDK_FAULT_SEED`` and
``AVATARSDK_FAULT_REPORT`` set (the suite appends one JSON line per fault to that file), then replaces what is
between ``<!-- faults:begin -->`` and ``<!-- faults:end -->`` in docs/RELIABILITY.md with a table of the
figures, the machine and the date. The page is created if it does not exist. The exit status is pytest's:
the table is written even when runs failed (it then says how many).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "RELIABILITY.md"
BEGIN = "<!-- faults:begin -->"
END = "<!-- faults:end -->"
DEFAULT_SEED = 1000

INTRO = f"""# Reliability

How avatarsdk behaves when the service or the network fails: figures measured by the test suite.

## Fault injection

`tests/test_faults.py` injects each fault below into a live session over real loopback sockets: the stand-in
service (`avatarsdk.testing.FakeAvatarService`) produces the protocol faults, and a `FaultProxy` between the
session and the stand-in the network ones (TCP RST, a dead peer). Every fault runs many times, each run with
its own seed, which picks after how many of the stand-in's frames the fault strikes (k of n, in requests of
random length and frame size), how those frames are paced against it (sent just before it, already delivered,
or written in the same TCP write as the fault), and the way it strikes (close reason, which invalid frame,
which malformed bytes, ...). A run passes only if:

- `on_error` received exactly the expected error (code, `retryable`, `close_code`, `server_code`, phase, a
  non-empty `connection_id`), or nothing for the faults the protocol says to ignore;
- `on_close` ran exactly once, after everything else;
- no `avatarsdk-*` thread was left running;
- every frame the stand-in sent before the fault was delivered exactly once, in order, byte for byte, and
  none it sent after a fault that ends the session; when the session carries on, the frames after the fault
  arrived too and a new request still got its frames.

The proxy's faults cut the network: a frame still inside the proxy when it strikes is lost with the
connection, so there the frames delivered must be a prefix of those sent.

**Reproducing a run.** Run `i` of every fault uses the seed `AVATARSDK_FAULT_SEED + i` (base {DEFAULT_SEED}). A
failing run's message names its seed and the command that replays it alone, e.g.
`AVATARSDK_FAULT_SEED=1042 AVATARSDK_FAULT_RUNS=1 python -m pytest 'tests/test_faults.py::test_fault[oversize]'`.
A plain `pytest` run does `AVATARSDK_FAULT_RUNS` runs per fault (25 by default, about half a minute).

**Regenerating the table.** `python scripts/fault_report.py --runs 200` runs the suite with 200 runs per
fault, collects each fault's figures (`AVATARSDK_FAULT_REPORT=<file>` makes the suite write them, one JSON line
per fault) and rewrites the part of this page between the markers below.

{BEGIN}
{END}
"""


def run_suite(runs: int, seed: int, report: Path, extra: List[str]) -> int:
    """Run tests/test_faults.py; return pytest's exit status."""
    env = dict(os.environ)
    env.update(
        AVATARSDK_FAULT_RUNS=str(runs),
        AVATARSDK_FAULT_SEED=str(seed),
        AVATARSDK_FAULT_REPORT=str(report),
    )
    # setup.cfg gives each test 120 s; one test here is one fault's runs (up to ~0.4 s each).
    timeout = max(120, runs * 2)
    command = [sys.executable, "-m", "pytest", "tests/test_faults.py", "-q", f"--timeout={timeout}", *extra]
    print("running:", " ".join(command), f"(AVATARSDK_FAULT_RUNS={runs} AVATARSDK_FAULT_SEED={seed})", flush=True)
    return subprocess.run(command, cwd=REPO, env=env, check=False).returncode


def read_report(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def _ms(stats: Optional[Dict[str, float]]) -> str:
    if not stats:
        return "-"
    return f"{stats['mean_ms']:,.1f} / {stats['max_ms']:,.1f}"


def _expected(row: Dict[str, Any]) -> str:
    if row["expected_code"] is None:
        return "none"
    return f"`{row['expected_code']}`" + (", retryable" if row["retryable"] else "")


def _seeds(row: Dict[str, Any]) -> str:
    first, last = row["seeds"]
    return str(first) if first == last else f"{first}-{last}"


def _versions(rows: List[Dict[str, Any]]) -> str:
    parts = []
    for dist in ("websocket-client", "websockets", "protobuf"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} missing")
    implementation = rows[0].get("protobuf_implementation") if rows else None
    if implementation:
        parts[-1] += f" ({implementation})"
    return ", ".join(parts)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit `{head}`" + (" plus uncommitted changes" if dirty else "")


def render(rows: List[Dict[str, Any]], *, seconds: Optional[float], status: Optional[int]) -> str:
    """The generated part of the page: the table, what it was measured on, and notes."""
    runs = sum(row["runs"] for row in rows)
    passed = sum(row["passed"] for row in rows)
    per_fault = sorted({row["runs"] for row in rows})
    base = min(row["seeds"][0] for row in rows)
    command = f"python scripts/fault_report.py --runs {'/'.join(map(str, per_fault))}"
    command += f" --seed {base}" if base != DEFAULT_SEED else ""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!-- generated by scripts/fault_report.py: edit the script, not this part -->",
        "",
        f"Measured {now} by `{command}`: "
        f"{len(rows)} faults, {runs:,} runs, **{passed:,} passed**"
        + (f", {runs - passed:,} failed" if passed != runs else "")
        + (f"; {seconds / 60:.1f} minutes" if seconds is not None else "")
        + (f" (pytest exit status {status})" if status else "")
        + ".",
        f"Machine: {os.cpu_count()} CPUs ({_cpu()}), {platform.system()} {platform.release()}, "
        f"CPython {rows[0].get('python', platform.python_version())}; {_versions(rows)}; {_commit()}.",
        "",
        "| fault | injected as | runs | passed | expected error | session | frames before the fault: "
        "delivered / sent | after it: delivered / sent | fault → `on_error`, ms (mean / max) | → `on_close`, ms "
        "(mean / max) | seeds |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        before = f"{row['delivered_before_fault']:,} / {row['frames_before_fault']:,}"
        after = f"{row['delivered_after_fault']:,} / {row['frames_after_fault']:,}"
        session = "ends" if row["ends"] else "carries on"
        if row.get("reconnect"):
            session = f"reconnects ({_ms(row.get('to_reconnect'))} ms), carries on"
        out.append(
            f"| `{row['name']}` | {row['how']} | {row['runs']} | {row['passed']} | {_expected(row)} | {session} | "
            f"{before} | {after} | {_ms(row['to_error'])} | {_ms(row['to_close'])} | {_seeds(row)} |"
        )
    out += [
        "",
        "- Frames before the fault: in the proxy's faults (`drop-rst`, `dead-peer`) a frame still inside the proxy",
        "  when the network breaks is lost with it; everywhere else every one must arrive.",
        "- Frames after it: where the session carries on, the frames that followed the fault and a new request's,",
        "  all of which must arrive; where it ends, the frames between a ServerError and its close (which must",
        "  arrive) and those the stand-in wrote after a broken frame or into a dead connection (which must not).",
        "- `→ on_close`: from the fault to `on_close` where the fault ends the session; where the session carries",
        "  on, from the `close()` that ends the run.",
        "- `+reconnect`: the same fault with `reconnect` on (no backoff): the same error, then a new token,",
        "  connection and handshake (`reconnects (mean / max ms)`: from the fault to `on_reconnect(reconnected)`),",
        "  and a new request's frames arrive on the new connection; `→ on_close` is then from the `close()`.",
        "- `dead-peer` counts from the moment the proxy stops forwarding; each run's `ping_interval +",
        "  ping_timeout` is 0.1-0.4 s. `send-stall` counts from the moment the stand-in stops reading: the",
        "  socket buffers fill (about 40 MB), then a send blocks for `send_timeout` (0.1-0.25 s).",
    ]
    for row in rows:
        if "backpressure_runs" in row:
            out.append(
                f"- `{row['name']}`: the queue reached its `max_queued_frames` limit (the reader had to stop"
                f" reading) in {row['backpressure_runs']} of {row['passed']} passing runs."
            )
    failed = [row for row in rows if row["failed_seeds"]]
    for row in failed:
        seeds = ", ".join(map(str, row["failed_seeds"][:20]))
        out.append(f"- `{row['name']}` failed with seeds {seeds}.")
    return "\n".join(out)


def write_doc(doc: Path, generated: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.exists() else INTRO
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise SystemExit(f"{doc}: the markers {BEGIN} and {END} are missing")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text[: start + len(BEGIN)] + "\n" + generated + "\n" + text[stop:], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per fault (default 200)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"base seed (default {DEFAULT_SEED})")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page to update (default docs/RELIABILITY.md)")
    parser.add_argument("--keep-report", type=Path, help="also keep the suite's JSON lines in this file")
    parser.add_argument("--from-report", type=Path, help="render this saved report instead of running the suite")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs: expected at least 1")

    status: Optional[int] = None
    seconds: Optional[float] = None
    if args.from_report is not None:
        rows = read_report(args.from_report)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "faults.jsonl"
            began = time.monotonic()
            status = run_suite(args.runs, args.seed, report, args.pytest_args)
            seconds = time.monotonic() - began
            rows = read_report(report)
            if args.keep_report is not None and report.exists():
                args.keep_report.write_text(report.read_text(encoding="utf-8"), encoding="utf-8")
    if not rows:
        print("the suite reported no figures; the page is unchanged", file=sys.stderr)
        return status or 1
    write_doc(args.doc, render(rows, seconds=seconds, status=status))
    total, passed = sum(r["runs"] for r in rows), sum(r["passed"] for r in rows)
    print(f"{args.doc}: {len(rows)} faults, {passed}/{total} runs passed")
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
