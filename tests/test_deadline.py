"""Deadline without waiting: the module's clock is replaced by one the test moves by hand."""

from __future__ import annotations

from typing import Iterator

import pytest

from avatarsdk import _deadline
from avatarsdk._deadline import Deadline


class FakeClock:
    """Stands in for the ``time`` module inside ``avatarsdk._deadline``: ``monotonic()`` returns ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(_deadline, "time", fake)
    yield fake


def test_no_limit_never_passes(clock: FakeClock) -> None:
    deadline = Deadline(None)
    assert deadline.remaining() is None
    assert deadline.lock_timeout() == -1
    assert deadline.passed() is False
    clock.now += 1e9
    assert deadline.remaining() is None
    assert deadline.lock_timeout() == -1
    assert deadline.passed() is False


def test_remaining_counts_down_from_the_timeout(clock: FakeClock) -> None:
    deadline = Deadline(2.5)
    assert deadline.remaining() == 2.5
    assert deadline.lock_timeout() == 2.5
    clock.now += 1.0
    assert deadline.remaining() == 1.5
    assert deadline.lock_timeout() == 1.5
    assert deadline.passed() is False


def test_remaining_is_zero_once_passed_never_negative(clock: FakeClock) -> None:
    deadline = Deadline(2.0)
    clock.now += 2.0
    assert deadline.remaining() == 0.0
    assert deadline.lock_timeout() == 0.0
    clock.now += 5.0
    assert deadline.remaining() == 0.0
    assert deadline.lock_timeout() == 0.0
    assert isinstance(deadline.remaining(), float)


def test_passed_at_exactly_the_deadline_not_before(clock: FakeClock) -> None:
    deadline = Deadline(2.0)
    clock.now += 1.999
    assert deadline.passed() is False
    clock.now = 1002.0
    assert deadline.passed() is True
    clock.now += 1.0
    assert deadline.passed() is True


def test_zero_timeout_has_passed_at_once(clock: FakeClock) -> None:
    deadline = Deadline(0)
    assert deadline.passed() is True
    assert deadline.remaining() == 0.0
    assert deadline.lock_timeout() == 0.0


def test_extended_is_later_by_the_seconds_given(clock: FakeClock) -> None:
    deadline = Deadline(2.0)
    later = deadline.extended(3.0)
    assert later is not deadline
    assert later.remaining() == 5.0
    assert deadline.remaining() == 2.0  # the original is unchanged
    clock.now += 4.0
    assert deadline.passed() is True
    assert later.passed() is False
    assert later.remaining() == 1.0
    clock.now += 1.0
    assert later.passed() is True


def test_extended_counts_from_the_original_point_not_from_now(clock: FakeClock) -> None:
    deadline = Deadline(2.0)
    clock.now += 1.5
    later = deadline.extended(1.0)
    assert later.remaining() == 1.5  # (1000 + 2 + 1) - 1001.5


def test_extending_no_limit_stays_no_limit(clock: FakeClock) -> None:
    later = Deadline(None).extended(3.0)
    assert isinstance(later, Deadline)
    assert later.remaining() is None
    assert later.lock_timeout() == -1
    assert later.passed() is False


def test_real_clock() -> None:
    deadline = Deadline(3600.0)
    left = deadline.remaining()
    assert left is not None and 3599.0 < left <= 3600.0
    assert deadline.passed() is False
    assert Deadline(-1.0).passed() is True
