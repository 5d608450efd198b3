"""What the hosting server must allow: the warning for a uWSGI worker without Python threads."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any, Callable, Dict, Iterator

import pytest

from avatarsdk import AvatarSession, _hosting


@pytest.fixture
def in_uwsgi(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Dict[str, Any]], None]]:
    """Pretend to run inside a uWSGI worker with the given ``uwsgi.opt`` (the module exists only there)."""

    def enter(opt: Dict[str, Any]) -> None:
        module = types.ModuleType("uwsgi")
        module.opt = opt  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "uwsgi", module)
        monkeypatch.setattr(_hosting, "_warned", False)

    yield enter


def warnings_of(caplog: pytest.LogCaptureFixture) -> list:  # type: ignore[type-arg]
    return [r for r in caplog.records if "--enable-threads" in r.getMessage()]


def test_a_worker_without_threads_is_warned_once(
    in_uwsgi: Callable[[Dict[str, Any]], None],
    make_session: Callable[..., AvatarSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    in_uwsgi({"master": True, "processes": b"4", "module": b"app:application"})
    with caplog.at_level(logging.WARNING, logger="avatarsdk"):
        make_session()
        make_session()
    found = warnings_of(caplog)
    assert len(found) == 1 and found[0].name == "avatarsdk", [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    "opt",
    [{"enable-threads": True}, {"enable-threads": b"true"}, {"threads": b"4"}, {"threads": [b"1", b"8"]}],
)
def test_threads_turned_on_raise_no_warning(
    opt: Dict[str, Any],
    in_uwsgi: Callable[[Dict[str, Any]], None],
    make_session: Callable[..., AvatarSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    in_uwsgi(opt)
    with caplog.at_level(logging.WARNING, logger="avatarsdk"):
        make_session()
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("opt", [{}, {"enable-threads": b"false"}, {"enable-threads": b"0"}, {"threads": b"0"}])
def test_threads_left_off(opt: Dict[str, Any]) -> None:
    assert not _hosting.threads_enabled(opt)


def test_outside_uwsgi_nothing_is_said(
    make_session: Callable[..., AvatarSession], caplog: pytest.LogCaptureFixture
) -> None:
    assert "uwsgi" not in sys.modules
    with caplog.at_level(logging.WARNING, logger="avatarsdk"):
        make_session()
    assert warnings_of(caplog) == []
