"""Backoff without waiting: every delay computed with the random part injected, and the reconnect policy's mapping."""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, List

import pytest

from avatarsdk._backoff import NO_RETRIES, Backoff
from avatarsdk.reconnect import ReconnectPolicy


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def no_rand() -> float:
    raise AssertionError("the random part was drawn")


ZERO, HALF, ONE = fixed(0.0), fixed(0.5), fixed(1.0)


def test_defaults() -> None:
    backoff = Backoff()
    assert (backoff.initial, backoff.cap, backoff.multiplier, backoff.jitter) == (0.5, 10.0, 2.0, 1.0)
    assert backoff.retries is None
    assert backoff.deadline is None


def test_no_retries() -> None:
    assert Backoff(retries=0) == NO_RETRIES
    assert NO_RETRIES.next_delay(1, 0.0, rand=ZERO) is None
    # it still computes a delay: only next_delay refuses
    assert NO_RETRIES.delay(1, rand=ZERO) == 0.5


def test_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Backoff().cap = 1.0  # type: ignore[misc]


def test_exponential_growth_without_jitter() -> None:
    backoff = Backoff(initial=0.5, cap=100.0, multiplier=2.0, jitter=0.0)
    assert [backoff.delay(n, rand=ZERO) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_other_multiplier() -> None:
    backoff = Backoff(initial=1.0, cap=1000.0, multiplier=3.0, jitter=0.0)
    assert [backoff.delay(n, rand=ZERO) for n in range(1, 5)] == [1.0, 3.0, 9.0, 27.0]


def test_multiplier_one_keeps_the_wait() -> None:
    backoff = Backoff(initial=0.7, cap=10.0, multiplier=1.0, jitter=0.0)
    assert [backoff.delay(n, rand=ZERO) for n in (1, 2, 50)] == [0.7, 0.7, 0.7]


def test_the_cap_holds() -> None:
    backoff = Backoff(initial=0.5, cap=3.0, multiplier=2.0, jitter=0.0)
    assert [backoff.delay(n, rand=ZERO) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_cap_below_the_initial_wait_wins() -> None:
    assert Backoff(initial=5.0, cap=2.0, jitter=0.0).delay(1, rand=ZERO) == 2.0


@pytest.mark.parametrize("retry", [1030, 5000, 10**6])
def test_huge_retry_numbers_stay_at_the_cap(retry: int) -> None:
    # 2.0 ** 1029 overflows a float (OverflowError): the cap holds
    backoff = Backoff(initial=0.5, cap=8.0, multiplier=2.0, jitter=0.0)
    assert backoff.delay(retry, rand=ZERO) == 8.0
    assert Backoff(cap=8.0, jitter=1.0).delay(retry, rand=HALF) == 4.0
    assert backoff.next_delay(retry, 0.0, rand=ZERO) == 8.0


def test_huge_retry_numbers_with_an_int_multiplier() -> None:
    # 0.5 * 2 ** 1999: an int too large to convert to float (OverflowError too)
    assert Backoff(initial=0.5, cap=6.0, multiplier=2, jitter=0.0).delay(2000, rand=ZERO) == 6.0


def test_full_jitter_spans_zero_to_the_wait() -> None:
    backoff = Backoff(initial=1.0, cap=10.0, multiplier=2.0, jitter=1.0)
    assert backoff.delay(3, rand=ZERO) == 4.0
    assert backoff.delay(3, rand=HALF) == 2.0
    assert backoff.delay(3, rand=fixed(0.25)) == 3.0
    assert backoff.delay(3, rand=ONE) == 0.0


def test_partial_jitter_takes_off_at_most_its_fraction() -> None:
    backoff = Backoff(initial=1.0, cap=10.0, multiplier=2.0, jitter=0.25)
    assert backoff.delay(2, rand=ZERO) == 2.0
    assert backoff.delay(2, rand=ONE) == 1.5
    assert backoff.delay(2, rand=HALF) == 1.75


def test_jitter_applies_after_the_cap() -> None:
    backoff = Backoff(initial=1.0, cap=4.0, multiplier=2.0, jitter=0.5)
    assert backoff.delay(10, rand=ONE) == 2.0


def test_default_rand_is_random() -> None:
    backoff = Backoff(initial=1.0, cap=10.0, jitter=1.0)
    waits = [backoff.delay(1) for _ in range(200)]
    assert all(0.0 < w <= 1.0 for w in waits)
    assert len(set(waits)) > 100
    random.seed(1234)
    first = backoff.delay(2)
    random.seed(1234)
    assert backoff.delay(2) == first == 2.0 * (1.0 - random.Random(1234).random())
    random.seed(1234)
    assert backoff.next_delay(2, 0.0) == first


def test_the_random_part_is_drawn_once_per_delay() -> None:
    draws: List[float] = []

    def rand() -> float:
        draws.append(0.5)
        return 0.5

    Backoff().delay(1, rand=rand)
    assert len(draws) == 1
    Backoff().next_delay(1, 0.0, rand=rand)
    assert len(draws) == 2


# ---------------------------------------------------------------------------------------------- Retry-After


def test_a_longer_retry_after_wins() -> None:
    backoff = Backoff(initial=1.0, jitter=0.0)
    assert backoff.delay(1, 7.5, rand=ZERO) == 7.5
    assert backoff.delay(1, retry_after=1.5, rand=ZERO) == 1.5


def test_a_shorter_retry_after_is_ignored() -> None:
    backoff = Backoff(initial=4.0, jitter=0.0)
    assert backoff.delay(1, 3.0, rand=ZERO) == 4.0
    assert backoff.delay(1, 0.0, rand=ZERO) == 4.0


def test_retry_after_equal_to_the_wait() -> None:
    assert Backoff(initial=2.0, jitter=0.0).delay(1, 2.0, rand=ZERO) == 2.0


def test_retry_after_is_compared_with_the_jittered_wait() -> None:
    backoff = Backoff(initial=4.0, jitter=1.0)
    assert backoff.delay(1, 3.0, rand=HALF) == 3.0  # jittered wait 2.0 < 3.0
    assert backoff.delay(1, 1.0, rand=HALF) == 2.0
    assert backoff.delay(1, None, rand=HALF) == 2.0


def test_retry_after_beyond_the_cap_is_honoured() -> None:
    assert Backoff(cap=8.0, jitter=0.0).delay(1, 60.0, rand=ZERO) == 60.0


# ---------------------------------------------------------------------------------------------- next_delay


def test_next_delay_without_limits() -> None:
    backoff = Backoff(initial=1.0, cap=10.0, jitter=0.0)
    assert backoff.next_delay(1, 0.0, rand=ZERO) == 1.0
    assert backoff.next_delay(3, 1e6, rand=ZERO) == 4.0
    assert backoff.next_delay(10**6, 1e9, rand=ZERO) == 10.0


def test_next_delay_counts_retries() -> None:
    backoff = Backoff(initial=1.0, cap=10.0, jitter=0.0, retries=3)
    assert [backoff.next_delay(n, 0.0, rand=ZERO) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, None, None]


def test_next_delay_with_one_retry() -> None:
    backoff = Backoff(initial=1.0, jitter=0.0, retries=1)
    assert backoff.next_delay(1, 0.0, rand=ZERO) == 1.0
    assert backoff.next_delay(2, 0.0, rand=ZERO) is None


def test_no_retry_left_draws_no_random_part() -> None:
    assert Backoff(retries=2).next_delay(3, 0.0, rand=no_rand) is None


def test_next_delay_within_the_deadline() -> None:
    backoff = Backoff(initial=2.0, cap=10.0, jitter=0.0, deadline=10.0)
    assert backoff.next_delay(1, 0.0, rand=ZERO) == 2.0
    assert backoff.next_delay(1, 7.5, rand=ZERO) == 2.0


def test_a_retry_starting_exactly_at_the_deadline_is_allowed() -> None:
    backoff = Backoff(initial=2.0, cap=10.0, jitter=0.0, deadline=10.0)
    assert backoff.next_delay(1, 8.0, rand=ZERO) == 2.0  # starts at 10.0: not after the deadline


def test_a_retry_starting_after_the_deadline_is_refused() -> None:
    backoff = Backoff(initial=2.0, cap=10.0, jitter=0.0, deadline=10.0)
    assert backoff.next_delay(1, 8.5, rand=ZERO) is None
    assert backoff.next_delay(1, 10.0, rand=ZERO) is None
    assert backoff.next_delay(1, 100.0, rand=ZERO) is None


def test_the_deadline_counts_the_jittered_wait() -> None:
    backoff = Backoff(initial=4.0, cap=10.0, jitter=1.0, deadline=10.0)
    assert backoff.next_delay(1, 7.0, rand=ZERO) is None  # 7 + 4 > 10
    assert backoff.next_delay(1, 7.0, rand=HALF) == 2.0  # 7 + 2 <= 10


def test_the_deadline_counts_retry_after() -> None:
    backoff = Backoff(initial=1.0, cap=10.0, jitter=0.0, deadline=10.0)
    assert backoff.next_delay(1, 5.0, 5.0, rand=ZERO) == 5.0
    assert backoff.next_delay(1, 5.0, 5.5, rand=ZERO) is None
    assert backoff.next_delay(1, 5.0, retry_after=0.5, rand=ZERO) == 1.0


def test_retries_and_deadline_together() -> None:
    backoff = Backoff(initial=1.0, cap=10.0, jitter=0.0, retries=2, deadline=2.0)
    assert backoff.next_delay(1, 0.0, rand=ZERO) == 1.0
    assert backoff.next_delay(2, 0.0, rand=ZERO) == 2.0
    assert backoff.next_delay(2, 0.5, rand=ZERO) is None  # deadline
    assert backoff.next_delay(3, 0.0, rand=ZERO) is None  # retries


def test_retries_zero_allows_none() -> None:
    assert Backoff(retries=0, jitter=0.0).next_delay(1, 0.0, rand=ZERO) is None


# ------------------------------------------------------------------------------------------ ReconnectPolicy


def test_reconnect_policy_maps_onto_backoff() -> None:
    policy = ReconnectPolicy(
        max_attempts=7, initial_delay=0.25, max_delay=3.0, multiplier=1.5, jitter=0.2, deadline=42.0
    )
    assert policy.backoff == Backoff(initial=0.25, cap=3.0, multiplier=1.5, jitter=0.2, retries=7, deadline=42.0)


def test_default_reconnect_policy_backoff() -> None:
    assert ReconnectPolicy().backoff == Backoff(
        initial=0.5, cap=10.0, multiplier=2.0, jitter=0.5, retries=5, deadline=60.0
    )
    assert ReconnectPolicy(deadline=None).backoff.deadline is None


def test_reconnect_policy_delay_is_the_backoff_delay() -> None:
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=5.0, multiplier=2.0, jitter=0.5)
    random.seed(99)
    waits = [policy.delay(n) for n in (1, 2, 3, 4)]
    draws = random.Random(99)
    # attempt n: min(5, 1 * 2 ** (n - 1)) * (1 - 0.5 * random())
    assert waits == [base * (1.0 - 0.5 * draws.random()) for base in (1.0, 2.0, 4.0, 5.0)]


def test_reconnect_policy_without_jitter() -> None:
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=2.0, jitter=0.0, max_attempts=3)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.0]
    backoff = policy.backoff
    assert [backoff.next_delay(n, 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, None]
