"""``python -m avatarsdk demo`` as a user runs it: a subprocess, against the built-in stand-in or "real" URLs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Dict, Optional

import pytest

from avatarsdk._cli.common import ENV_VARS, credentials_from_env
from avatarsdk.testing import FakeAvatarService


def run_demo(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AVATARSDK_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "avatarsdk", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


def test_demo_runs_the_five_steps_on_the_built_in_stand_in() -> None:
    result = run_demo("--seconds", "1", "--utterances", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "built-in stand-in" in out
    assert re.search(r"2\. init +session token obtained", out)
    assert re.search(r"3\. start +connection id conn-\d+", out)
    req_ids = re.findall(r"4\. send +request (\d{14}_[A-Za-z0-9_-]{12})", out)
    assert len(req_ids) == 2 and req_ids[0] != req_ids[1]
    assert out.count("frames received: 25 (") == 2  # 1 s of audio = 25 frames at 25 fps
    assert re.search(r"first frame after [\d.]+ ms", out)
    assert "5. close    session closed (on_close called: True)" in out
    assert "fake-token" not in out  # the token itself is never printed


def test_demo_uses_credentials_from_the_environment() -> None:
    with FakeAvatarService(api_key="env-key", app_id="env-app", avatar_id="env-avatar") as service:
        env = {
            "AVATARSDK_API_KEY": "env-key",
            "AVATARSDK_APP_ID": "env-app",
            "AVATARSDK_AVATAR_ID": "env-avatar",
            "AVATARSDK_CONSOLE_URL": service.console_url,
            "AVATARSDK_INGRESS_URL": service.ingress_url,
        }
        result = run_demo("--seconds", "0.5", "--utterances", "1", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "real service (credentials from AVATARSDK_* variables)" in result.stdout
        assert len(service.token_requests) == 1 and service.token_requests[0].headers["x-api-key"] == "env-key"
        assert "env-key" not in result.stdout


def test_demo_reports_service_errors_with_their_code() -> None:
    with FakeAvatarService() as service:
        env = {
            "AVATARSDK_API_KEY": "wrong-key",
            "AVATARSDK_APP_ID": service.app_id,
            "AVATARSDK_AVATAR_ID": service.avatar_id,
            "AVATARSDK_CONSOLE_URL": service.console_url,
            "AVATARSDK_INGRESS_URL": service.ingress_url,
        }
        result = run_demo(env=env)
    assert result.returncode == 1
    assert "error: invalidRequest: session token request failed (HTTP 401)" in result.stdout
    assert "wrong-key" not in result.stdout


def test_partial_credentials_are_refused() -> None:
    result = run_demo(env={"AVATARSDK_API_KEY": "k"})
    assert result.returncode == 2
    assert "missing: AVATARSDK_APP_ID" in result.stdout
    with pytest.raises(ValueError, match="AVATARSDK_INGRESS_URL"):
        credentials_from_env({"AVATARSDK_API_KEY": "k"})
    assert credentials_from_env({}) is None
    assert set(ENV_VARS.values()) == {
        "AVATARSDK_API_KEY",
        "AVATARSDK_APP_ID",
        "AVATARSDK_AVATAR_ID",
        "AVATARSDK_CONSOLE_URL",
        "AVATARSDK_INGRESS_URL",
        "AVATARSDK_REGION",
    }
    with pytest.raises(ValueError, match=r"CONSOLE_URL, AVATARSDK_INGRESS_URL \(or AVATARSDK_REGION for"):
        credentials_from_env({"AVATARSDK_API_KEY": "k", "AVATARSDK_APP_ID": "a", "AVATARSDK_AVATAR_ID": "v"})
    given = {"AVATARSDK_API_KEY": "k", "AVATARSDK_APP_ID": "a", "AVATARSDK_AVATAR_ID": "v", "AVATARSDK_REGION": "x"}
    assert credentials_from_env(given) == {"api_key": "k", "app_id": "a", "avatar_id": "v", "region": "x"}


def test_demo_rejects_bad_arguments() -> None:
    result = run_demo("--seconds", "0")
    assert result.returncode == 2 and "must be positive" in result.stdout
    bare = subprocess.run([sys.executable, "-m", "avatarsdk"], capture_output=True, text=True, timeout=60, check=False)
    assert bare.returncode == 2 and "demo" in bare.stdout
