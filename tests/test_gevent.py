"""The SDK under gevent's monkey-patching (gunicorn's gevent worker, gevent's own servers): many concurrent
sessions through a pool and on a shared dispatcher, in a subprocess that patches first
(tests/_gevent_worker.py), against the stand-in in this process; none may block the hub for long."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from avatarsdk.testing import FakeAvatarService

WORKER = Path(__file__).resolve().parent / "_gevent_worker.py"
ROOT = WORKER.parent.parent


def test_sessions_pools_and_the_shared_dispatcher_under_monkey_patching() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARSDK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with FakeAvatarService(frame_interval=0.02) as service:  # paced: the frames of 30 requests overlap
        run = subprocess.run(
            [sys.executable, str(WORKER), json.dumps(service.credentials())],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    assert run.returncode == 0, run.stderr[-5000:]
    assert "Traceback" not in run.stderr and "LoopExit" not in run.stderr, run.stderr[-5000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["streams"] == [10] * 24  # 24 utterances of 10 frames, through a pool of 8
    assert 1 <= result["pool"]["created"] <= 8 and result["pool"]["failed"] == 0, result["pool"]
    assert result["sessions"] == [10] * 6  # 6 sessions of their own on one SharedDispatcher
    # The ticking greenlet ran all along (the hub kept switching) and never waited long for its turn.
    assert result["ticks"] > 50 and result["worst_stall"] < 0.25, result
