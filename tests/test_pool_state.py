"""The pool's lending state driven directly, without sockets, threads or clocks: lending order, waiting
borrowers, max_size, health, refresh, warm-up, returns, close and the counts."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avatarsdk._backoff import Backoff
from avatarsdk._pool_state import (
    AGE_MARGIN,
    AGED,
    DUE,
    ENDED,
    IDLE,
    POOL_CLOSED,
    REFUSAL_BACKOFF,
    Entry,
    Fate,
    LendingState,
    Step,
    age_margin,
)

NOW = 1000.0  # a monotonic time
LIFETIME, MARGIN = 100.0, 10.0  # due 90 s after it is made
EXACT = Backoff(initial=0.5, cap=5.0, multiplier=2.0, jitter=0.0)  # REFUSAL_BACKOFF without its jitter


class FakeSession:
    """What the state may read of a session: whether it has ended."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False


class Made:
    """The state's ``make``: records the entry each session was made for."""

    def __init__(self) -> None:
        self.entries: List[Entry[FakeSession]] = []

    def __call__(self, entry: Entry[FakeSession]) -> FakeSession:
        self.entries.append(entry)
        return FakeSession(len(self.entries))


def new_state(
    max_size: int = 3,
    min_idle: int = 0,
    generation: int = 0,
    closed: bool = False,
    make: Any = None,
    max_idle: Optional[float] = None,
    max_age: Optional[float] = None,
    backoff: Backoff = EXACT,
) -> LendingState[FakeSession]:
    return LendingState(
        max_size=max_size,
        min_idle=min_idle,
        lifetime=LIFETIME,
        margin=MARGIN,
        generation=generation,
        make=make or Made(),
        closed=closed,
        max_idle=max_idle,
        max_age=max_age,
        refusal_backoff=backoff,
    )


def counts(**changed: int) -> Dict[str, int]:
    zero = {"idle": 0, "in_use": 0, "creating": 0, "created": 0, "discarded": 0, "waits": 0, "timeouts": 0, "failed": 0}
    return {**zero, "refused": 0, "closed_idle": 0, "closed_age": 0, **changed}


def counted(state: LendingState[FakeSession], now: float = NOW) -> Dict[str, Any]:
    """The state's counts at ``now`` without the connected time."""
    tally: Dict[str, Any] = dataclasses.asdict(state.counts(now))
    del tally["connected_seconds"]
    return tally


def start(state: LendingState[FakeSession], now: float = NOW) -> Entry[FakeSession]:
    """A new entry, counted as starting (no idle entry to lend)."""
    step = state.borrow(None, now)
    assert step.lent is None and step.stale == [] and step.start is not None
    return step.start


def idle_entries(state: LendingState[FakeSession], n: int, now: float = NOW) -> List[Entry[FakeSession]]:
    """``n`` started idle entries made at ``now``, the last one the most recently returned."""
    return idle_at(state, *[now] * n)


def idle_at(state: LendingState[FakeSession], *nows: float) -> List[Entry[FakeSession]]:
    """Started idle entries made at ``nows`` (added to a state with no idle entry)."""
    entries = [start(state, now) for now in nows]
    for entry, now in zip(entries, nows):
        assert state.started(entry, lend=False, now=now) is True
    return entries


def lend(state: LendingState[FakeSession], now: float = NOW) -> Entry[FakeSession]:
    step = state.borrow(None, now)
    assert step.lent is not None and step.start is None
    return step.lent


# ------------------------------------------------------------------------------------------- entries


def test_a_new_entry_is_due_lifetime_less_margin_after_it_is_made() -> None:
    made = Made()
    state = new_state(generation=7, make=made)
    entry = start(state, now=NOW)
    assert made.entries == [entry] and entry.session.number == 1  # made once, for this entry
    assert entry.refresh_at == NOW + LIFETIME - MARGIN == 1090.0
    assert (entry.generation, entry.failure, entry.from_idle) == (7, None, False)
    assert entry.idle_since == math.inf and entry.retire_at == math.inf  # never idle yet; no max_age
    assert entry.due(1090.0) is True  # exactly at the refresh time
    assert entry.due(1089.999) is False
    assert state.unfit(entry, 1089.999) is None
    assert state.unfit(entry, 1090.0) == DUE == "its token expires within refresh_margin"


def test_unfit_names_the_failure_first_then_the_end_then_the_refresh() -> None:
    state = new_state()
    entry = start(state)
    entry.session.closed = True
    assert state.unfit(entry, NOW) == ENDED == "the session has ended"
    assert state.unfit(entry, NOW + 500) == ENDED
    entry.failure = "it reported an error (x)"
    assert state.unfit(entry, NOW + 500) == "it reported an error (x)"


def test_a_fresh_state_is_empty_and_open() -> None:
    state: LendingState[FakeSession] = LendingState(
        max_size=3, min_idle=0, lifetime=LIFETIME, margin=MARGIN, generation=0, make=Made()
    )
    assert counted(state) == counts()
    assert state.closed is False and state.busy is False and state.size() == 0 and state.entries() == []
    assert (state.max_size, state.min_idle, state.lifetime, state.margin) == (3, 0, LIFETIME, MARGIN)
    assert (state.max_idle, state.max_age, state.refusal_backoff) == (None, None, REFUSAL_BACKOFF)
    assert state.counts(NOW).connected_seconds == 0.0 and state.hold_until == -math.inf


# ------------------------------------------------------------------------------------------- lending


def test_idle_entries_are_lent_most_recently_returned_first() -> None:
    state = new_state(max_size=3)
    a, b, c = idle_entries(state, 3)
    assert list(state.idle) == [a, b, c]
    assert lend(state) is c and lend(state) is b
    assert c.from_idle is True and b.from_idle is True and a.from_idle is False
    assert state.lent == {b, c} and list(state.idle) == [a]
    assert state.give_back(c, None, NOW) == (Fate.KEPT, "")
    assert list(state.idle) == [a, c] and lend(state) is c  # returned last, lent first
    assert counted(state) == counts(idle=1, in_use=2, created=3)


def test_a_borrower_lent_a_fit_entry_gets_the_unfit_ones_above_it_to_close() -> None:
    state = new_state(max_size=4)
    a, b, c, d = idle_entries(state, 4)
    c.failure = "it reported an error (y)"
    d.session.closed = True
    step = state.borrow(None, NOW)
    assert step == Step(stale=[(d, ENDED), (c, "it reported an error (y)")], lent=b)
    assert list(state.idle) == [a] and state.lent == {b}
    assert counted(state) == counts(idle=1, in_use=1, created=4, discarded=2)
    assert state.closing == 2 and state.size() == 4  # closing ones still count against max_size
    state.closed_one()
    state.closed_one()
    assert state.closing == 0 and state.size() == 2


def test_only_unfit_idle_entries_are_handed_back_without_a_start() -> None:
    state = new_state(max_size=3)
    (a,) = idle_entries(state, 1)
    step = state.borrow(None, NOW + LIFETIME)  # due: closed first, then the borrower looks again
    assert step == Step(stale=[(a, DUE)])
    assert state.starting == set() and state.size() == 1 and counted(state)["discarded"] == 1
    state.closed_one()
    again = state.borrow(None, NOW + LIFETIME)
    assert again.start is not None and again.start.refresh_at == NOW + LIFETIME + LIFETIME - MARGIN


def test_a_start_is_reserved_only_below_max_size_counting_every_kind_of_entry() -> None:
    state = new_state(max_size=4)
    a, b = idle_entries(state, 2)
    assert lend(state) is b
    a.failure = "spoiled"
    assert state.borrow(None, NOW) == Step(stale=[(a, "spoiled")])  # a is closing now, b lent
    starting = start(state)
    assert state.size() == 3  # lent, closing, starting
    fourth = state.borrow(None, NOW)
    assert fourth.start is not None and state.size() == 4 == state.max_size
    assert state.borrow(None, NOW) == Step()  # full: wait
    assert state.starting == {starting, fourth.start}
    state.closed_one()
    assert state.size() == 3 and state.borrow(None, NOW).start is not None


def test_max_size_one_lends_then_makes_the_borrower_wait() -> None:
    state = new_state(max_size=1)
    entry = start(state)
    assert state.borrow(None, NOW) == Step()
    assert state.started(entry, lend=True, now=NOW) is True
    assert state.borrow(None, NOW) == Step() and state.size() == 1
    assert counted(state) == counts(in_use=1, created=1)


def test_waiting_borrowers_are_served_first_come_first_served() -> None:
    state = new_state(max_size=1)
    (entry,) = idle_entries(state, 1)
    assert lend(state) is entry
    first = state.queue(None)
    second = state.queue(None)
    assert first is not second and list(state.waiters) == [first, second]
    assert state.queue(first) is first and len(state.waiters) == 2  # already in line: counted once
    assert counted(state)["waits"] == 2
    assert state.give_back(entry, None, NOW) == (Fate.KEPT, "")
    assert state.borrow(second, NOW) == Step() and state.borrow(None, NOW) == Step()  # neither is first
    assert list(state.idle) == [entry]
    assert state.borrow(first, NOW) == Step(lent=entry)
    assert list(state.waiters) == [second]  # served: out of the queue
    state.give_back(entry, None, NOW)
    assert state.borrow(second, NOW) == Step(lent=entry) and list(state.waiters) == []


def test_a_waiting_borrower_served_with_a_start_leaves_the_queue() -> None:
    state = new_state(max_size=1)
    entry = start(state)
    ticket = state.queue(None)
    state.start_failed(entry)
    step = state.borrow(ticket, NOW)
    assert step.start is not None and list(state.waiters) == []


def test_a_waiting_borrower_handed_only_stale_entries_keeps_its_place() -> None:
    state = new_state(max_size=1)
    (entry,) = idle_entries(state, 1)
    entry.failure = "gone"
    ticket = state.queue(None)
    later = state.queue(None)
    assert state.borrow(ticket, NOW) == Step(stale=[(entry, "gone")])
    assert list(state.waiters) == [ticket, later]


def test_leaving_the_queue_lets_the_next_borrower_be_served() -> None:
    state = new_state(max_size=1)
    first, second, third = state.queue(None), state.queue(None), state.queue(None)
    state.leave(second)
    assert list(state.waiters) == [first, third]
    state.leave(first)
    assert state.borrow(third, NOW).start is not None and list(state.waiters) == []
    assert counted(state) == counts(creating=1, waits=3)


def test_a_borrower_that_gives_up_is_counted_and_told_what_held_the_slots() -> None:
    state = new_state(max_size=3)
    lent = idle_entries(state, 2)
    lend(state)
    lend(state)
    start(state)
    state.give_back(lent[0], "bad", NOW)  # discarded: closing
    ticket = state.queue(None)
    state.queue(None)
    assert state.timed_out() == "1 lent, 1 starting, 1 closing; 2 borrowers waiting"
    assert counted(state)["timeouts"] == 1
    state.leave(ticket)
    assert state.timed_out() == "1 lent, 1 starting, 1 closing; 1 borrowers waiting"
    assert counted(state)["timeouts"] == 2


def test_a_failing_make_reserves_nothing() -> None:
    def make(entry: Entry[FakeSession]) -> FakeSession:
        raise RuntimeError("no session")

    state = new_state(max_size=1, make=make)
    ticket = state.queue(None)
    with pytest.raises(RuntimeError):
        state.borrow(ticket, NOW)
    assert state.starting == set() and state.size() == 0 and list(state.waiters) == [ticket]


# -------------------------------------------------------------------------------------- starts, ends


def test_a_started_entry_is_lent_or_idle_and_counted() -> None:
    state = new_state()
    for_borrower, warm = start(state), start(state)
    assert counted(state) == counts(creating=2)
    assert state.started(for_borrower, lend=True, now=NOW) is True
    assert state.started(warm, lend=False, now=NOW) is True
    assert state.lent == {for_borrower} and list(state.idle) == [warm] and state.starting == set()
    assert for_borrower.from_idle is False
    assert counted(state) == counts(idle=1, in_use=1, created=2)


def test_a_failed_start_frees_its_slot_and_is_counted() -> None:
    state = new_state(max_size=1)
    entry = start(state)
    state.start_failed(entry)
    assert state.starting == set() and state.size() == 0
    assert counted(state) == counts(failed=1)
    state.start_failed(start(state))
    assert counted(state) == counts(failed=2)


def test_starts_ending_after_close_are_not_counted_and_go_nowhere() -> None:
    state = new_state()
    ok, lent, failed = start(state), start(state), start(state)
    assert state.close() == []
    assert state.started(ok, lend=False, now=NOW) is False
    assert state.started(lent, lend=True, now=NOW) is False
    state.start_failed(failed)
    assert counted(state) == counts() and state.busy is False and state.entries() == []


def test_a_returned_entry_is_kept_when_fit() -> None:
    state = new_state()
    (entry,) = idle_entries(state, 1)
    lend(state)
    assert state.give_back(entry, None, NOW + 89.999) == (Fate.KEPT, "")
    assert list(state.idle) == [entry] and state.lent == set()


@pytest.mark.parametrize(
    ("failure", "closed", "due", "reason"),
    [
        ("the borrower's block raised X (y)", False, False, "the borrower's block raised X (y)"),
        (None, True, False, ENDED),
        (None, False, True, DUE),
        ("", False, True, DUE),  # an empty failure is no failure
        ("sending failed (z)", True, True, "sending failed (z)"),
    ],
)
def test_a_returned_entry_that_failed_ended_or_is_due_is_discarded(
    failure: Optional[str], closed: bool, due: bool, reason: str
) -> None:
    state = new_state()
    (entry,) = idle_entries(state, 1)
    lend(state)
    entry.session.closed = closed
    assert state.give_back(entry, failure, NOW + (90.0 if due else 0.0)) == (Fate.DISCARDED, reason)
    assert state.idle == type(state.idle)() and state.lent == set()
    assert counted(state) == counts(created=1, discarded=1)
    assert state.closing == 1 and state.busy is True
    state.closed_one()
    assert state.closing == 0 and state.busy is False


def test_an_entry_returned_twice_or_never_lent_is_ignored() -> None:
    state = new_state()
    a, b = idle_entries(state, 2)
    assert lend(state) is b
    assert state.give_back(b, "bad", NOW) == (Fate.DISCARDED, "bad")
    assert state.give_back(b, None, NOW) == (Fate.NOT_LENT, "")
    assert state.give_back(a, None, NOW) == (Fate.NOT_LENT, "")  # idle, not lent
    assert list(state.idle) == [a] and counted(state) == counts(idle=1, created=2, discarded=1)


def test_an_entry_returned_after_close_is_closed_uncounted() -> None:
    state = new_state()
    (entry,) = idle_entries(state, 1)
    lend(state)
    state.close()
    assert state.give_back(entry, "bad", NOW) == (Fate.CLOSE, POOL_CLOSED)
    assert POOL_CLOSED == "the pool is closed"
    assert state.lent == set() and state.closing == 0 and counted(state) == counts(created=1)


def test_an_idle_entry_that_reports_an_error_is_taken_out_to_be_closed() -> None:
    state = new_state()
    a, b = idle_entries(state, 2)
    assert state.spoiled(a, "it reported an error (e)", ended=False) is True
    assert a.failure == "it reported an error (e)" and list(state.idle) == [b]
    assert counted(state) == counts(idle=1, created=2, discarded=1) and state.closing == 1
    assert state.spoiled(a, "later", ended=False) is False  # already out: the first reason stays
    assert a.failure == "it reported an error (e)" and state.closing == 1


def test_idle_entries_that_fail_one_after_another_are_all_counted() -> None:
    state = new_state()
    a, b, c = idle_entries(state, 3)
    assert state.spoiled(a, "it reported an error (e)", ended=False) is True
    assert state.spoiled(b, "it reported an error (e)", ended=False) is True
    assert state.spoiled(c, ENDED, ended=True) is True
    assert counted(state) == counts(created=3, discarded=3) and state.closing == 2 and state.size() == 2


def test_an_idle_entry_that_ended_is_taken_out_with_nothing_to_close() -> None:
    state = new_state()
    (entry,) = idle_entries(state, 1)
    assert state.spoiled(entry, ENDED, ended=True) is True
    assert entry.failure == ENDED and list(state.idle) == []
    assert counted(state) == counts(created=1, discarded=1) and state.closing == 0 and state.size() == 0


def test_a_lent_entry_that_fails_stays_with_its_borrower_until_returned() -> None:
    state = new_state()
    (entry,) = idle_entries(state, 1)
    lend(state)
    assert state.spoiled(entry, "it reported an error (e)", ended=False) is False
    assert state.lent == {entry} and counted(state) == counts(in_use=1, created=1)
    assert state.give_back(entry, None, NOW) == (Fate.DISCARDED, "it reported an error (e)")


def test_closed_one_frees_one_slot() -> None:
    state = new_state()
    a, b = idle_entries(state, 2)
    lend(state)
    lend(state)
    state.give_back(a, "x", NOW)
    state.give_back(b, "y", NOW)
    assert state.closing == 2
    state.closed_one()
    assert state.closing == 1 and state.busy is True
    state.closed_one()
    assert state.closing == 0 and state.busy is False


# ------------------------------------------------------------------------------------ maintenance


def test_upkeep_takes_out_every_unfit_idle_entry_before_anything_else() -> None:
    state = new_state(max_size=5, min_idle=5)
    a, b, c, d = idle_at(state, NOW, NOW, NOW, NOW + 50)
    b.failure = "bad"
    step = state.upkeep(NOW + 90, retry_at=0.0)  # a and c due, b failed, d fine
    assert step == Step(stale=[(a, DUE), (b, "bad"), (c, DUE)])
    assert list(state.idle) == [d] and state.closing == 3
    assert counted(state) == counts(idle=1, created=4, discarded=3)


def test_upkeep_sleeps_until_the_next_refresh_when_min_idle_is_met() -> None:
    state = new_state(max_size=3, min_idle=2)
    idle_at(state, NOW + 5, NOW)
    assert state.upkeep(NOW + 1, retry_at=0.0) == Step(wake=NOW + 90)
    assert new_state().upkeep(NOW, retry_at=0.0) == Step(wake=math.inf)  # nothing idle, no min_idle


def test_upkeep_warms_one_while_below_min_idle_and_max_size() -> None:
    made = Made()
    state = new_state(max_size=3, min_idle=2, make=made)
    (first,) = idle_entries(state, 1)
    step = state.upkeep(NOW + 1, retry_at=NOW + 1)  # exactly at the end of the backoff
    assert step.start is not None and step == Step(start=step.start, wake=NOW + 90)
    assert step.start.refresh_at == NOW + 1 + LIFETIME - MARGIN and step.start.from_idle is False
    assert made.entries[-1] is step.start and state.starting == {step.start}
    assert state.started(step.start, lend=False, now=NOW) and list(state.idle) == [first, step.start]
    assert state.upkeep(NOW + 1, retry_at=0.0) == Step(wake=NOW + 90)  # min_idle met


def test_upkeep_warms_the_first_session_of_an_empty_pool() -> None:
    state = new_state(max_size=1, min_idle=1)
    step = state.upkeep(NOW, retry_at=0.0)
    assert step.start is not None and step.stale == [] and step.wake == math.inf
    assert state.upkeep(NOW, retry_at=0.0) == Step()  # max_size reached by the start


def test_upkeep_waits_for_the_backoff_then_warms() -> None:
    state = new_state(max_size=3, min_idle=2)
    idle_entries(state, 1)  # due at NOW + 90
    assert state.upkeep(NOW, retry_at=NOW + 30) == Step(wake=NOW + 30)  # the backoff ends first
    assert state.upkeep(NOW, retry_at=NOW + 200) == Step(wake=NOW + 90)  # the refresh comes first
    assert state.upkeep(NOW + 29.999, retry_at=NOW + 30).start is None
    assert state.upkeep(NOW + 30, retry_at=NOW + 30).start is not None
    assert new_state(min_idle=1).upkeep(NOW, retry_at=NOW + 4) == Step(wake=NOW + 4)


def test_upkeep_does_not_warm_beyond_max_size() -> None:
    state = new_state(max_size=2, min_idle=2)
    idle_entries(state, 2)
    lend(state)
    assert state.size() == 2 and len(state.idle) == 1
    assert state.upkeep(NOW, retry_at=0.0) == Step(wake=NOW + 90)  # lent + idle fill max_size
    (lent,) = state.lent
    state.give_back(lent, "bad", NOW)
    assert state.size() == 2 and state.upkeep(NOW, retry_at=0.0) == Step(wake=NOW + 90)  # closing counts too
    state.closed_one()
    assert state.upkeep(NOW, retry_at=0.0).start is not None


def test_upkeep_with_min_idle_zero_never_warms() -> None:
    state = new_state(max_size=3, min_idle=0)
    assert state.upkeep(NOW, retry_at=0.0) == Step()
    assert state.starting == set()


# -------------------------------------------------------------------------------------- retirement


def test_the_age_margin_is_a_minute_or_a_quarter_of_the_age() -> None:
    assert AGE_MARGIN == 60.0
    assert age_margin(540.0) == 60.0 and age_margin(240.0) == 60.0
    assert age_margin(200.0) == 50.0 and age_margin(2.0) == 0.5


def test_an_entry_is_not_lent_from_its_age_margin_before_max_age() -> None:
    state = new_state(max_age=240.0)
    entry = start(state, now=NOW)
    assert entry.retire_at == NOW + 240.0 - 60.0 == 1180.0
    assert start(new_state(), now=NOW).retire_at == math.inf  # no max_age: never
    assert entry.aged(1179.999) is False and entry.aged(1180.0) is True
    entry.refresh_at = math.inf  # the token is not what retires it here
    assert state.unfit(entry, 1179.999) is None
    assert state.unfit(entry, 1180.0) == AGED == "it is near max_session_age"
    entry.refresh_at = 1100.0
    assert state.unfit(entry, 1180.0) == DUE  # the token first: it is the older rule


def test_a_borrower_is_never_handed_an_aged_entry() -> None:
    state = new_state(max_size=2, max_age=400.0)  # not lent from 340 s of age
    old, young = idle_at(state, NOW, NOW + 50)
    old.refresh_at = young.refresh_at = math.inf
    assert lend(state, NOW + 339.999) is young  # LIFO
    state.give_back(young, None, NOW + 339.999)
    assert lend(state, NOW + 389.999) is young  # old is aged, but young comes first and is fit
    state.give_back(young, None, NOW + 389.999)
    assert state.borrow(None, NOW + 390.0) == Step(stale=[(young, AGED), (old, AGED)])
    assert counted(state) == counts(created=2, closed_age=2)  # not in discarded


def test_a_lent_entry_past_its_age_is_retired_when_returned() -> None:
    state = new_state(max_age=100.0)  # lent until NOW + 75
    (entry,) = idle_entries(state, 1)
    lend(state, NOW + 74.999)
    assert state.give_back(entry, None, NOW + 80) == (Fate.DISCARDED, AGED)
    assert counted(state) == counts(created=1, closed_age=1) and state.closing == 1


def test_upkeep_retires_aged_idle_entries_and_wakes_for_the_next() -> None:
    state = new_state(max_size=3, max_age=100.0)
    a, _ = idle_at(state, NOW, NOW + 10)
    assert state.upkeep(NOW + 20, retry_at=0.0) == Step(wake=NOW + 75)  # a's retirement comes before its refresh
    assert state.upkeep(NOW + 75, retry_at=0.0) == Step(stale=[(a, AGED)])
    assert state.upkeep(NOW + 75, retry_at=0.0) == Step(wake=NOW + 85)
    assert counted(state) == counts(idle=1, created=2, closed_age=1)


def test_an_idle_entry_is_closed_max_idle_after_it_was_returned() -> None:
    state = new_state(max_size=3, max_idle=30.0)
    (entry,) = idle_entries(state, 1)
    assert entry.idle_since == NOW  # idle since its start
    lend(state, NOW + 5)
    assert state.give_back(entry, None, NOW + 10) == (Fate.KEPT, "")
    assert entry.idle_since == NOW + 10
    assert state.upkeep(NOW + 39.999, retry_at=0.0) == Step(wake=NOW + 40)
    assert state.upkeep(NOW + 40, retry_at=0.0) == Step(stale=[(entry, IDLE)])
    assert IDLE == "it was idle for max_idle_time"
    assert counted(state) == counts(created=1, closed_idle=1) and state.closing == 1


def test_a_borrower_may_still_take_an_entry_idle_longer_than_max_idle() -> None:
    state = new_state(max_idle=30.0)
    (entry,) = idle_entries(state, 1)
    assert lend(state, NOW + 80) is entry  # fit: the maintenance thread had not closed it yet


def test_max_idle_spares_the_min_idle_most_recently_returned() -> None:
    state = new_state(max_size=4, min_idle=2, max_idle=30.0)
    a, b, c, d = idle_at(state, NOW, NOW + 1, NOW + 2, NOW + 3)
    assert state.upkeep(NOW + 10, retry_at=0.0) == Step(wake=NOW + 30)  # a goes first
    assert state.upkeep(NOW + 31, retry_at=0.0) == Step(stale=[(a, IDLE), (b, IDLE)])
    assert list(state.idle) == [c, d]
    assert state.upkeep(NOW + 80, retry_at=0.0) == Step(wake=NOW + 2 + 90)  # c and d stay (their refresh)
    assert counted(state) == counts(idle=2, created=4, closed_idle=2)


def test_max_idle_zero_closes_a_returned_entry_at_the_next_upkeep() -> None:
    state = new_state(max_idle=0.0)
    (entry,) = idle_entries(state, 1)
    assert state.upkeep(NOW, retry_at=0.0) == Step(stale=[(entry, IDLE)])


def test_without_max_idle_idle_entries_wait_for_their_refresh() -> None:
    state = new_state(max_size=2)
    idle_entries(state, 2)
    assert state.upkeep(NOW + 89, retry_at=0.0) == Step(wake=NOW + 90)


# -------------------------------------------------------------------------------- refusals, billing


def test_a_refused_start_frees_its_slot_and_pauses_new_starts() -> None:
    state = new_state(max_size=2)
    entry = start(state)
    ticket = state.start_refused(entry, NOW, requeue=True)
    assert ticket is not None and list(state.waiters) == [ticket]
    assert state.starting == set() and state.size() == 0
    assert counted(state) == counts(refused=1)  # not failed, not a wait
    assert state.hold_until == NOW + 0.5 and state.refusals == 1
    assert state.borrow(ticket, NOW + 0.499) == Step(wake=NOW + 0.5)  # no start yet: wake when it may
    assert list(state.waiters) == [ticket]
    again = state.borrow(ticket, NOW + 0.5)
    assert again.start is not None and list(state.waiters) == []


def test_a_refused_borrower_waits_first_in_line_and_gets_a_returned_entry_at_once() -> None:
    state = new_state(max_size=2)
    (held,) = idle_entries(state, 1)
    lend(state)
    refused = start(state)
    later = state.queue(None)
    ticket = state.start_refused(refused, NOW, requeue=True)
    assert list(state.waiters) == [ticket, later]
    assert state.borrow(later, NOW + 10) == Step()  # not its turn
    state.give_back(held, None, NOW + 0.1)
    assert state.borrow(ticket, NOW + 0.1) == Step(lent=held)  # during the pause: lending goes on
    assert state.borrow(later, NOW + 0.2) == Step(wake=NOW + 0.5)


def test_refusals_in_a_row_back_off_longer_until_a_start_succeeds() -> None:
    state = new_state(max_size=1)
    waits = []
    for n in range(6):
        now = NOW + 100 * n
        assert state.start_refused(start(state, now), now, requeue=False) is None
        waits.append(state.hold_until - now)
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0] and state.refusals == 6 and state.waiters == type(state.waiters)()
    entry = start(state, NOW + 1000)
    assert state.started(entry, lend=True, now=NOW + 1000) is True
    assert (state.refusals, state.hold_until) == (0, -math.inf)
    assert counted(state) == counts(in_use=1, created=1, refused=6)


def test_refusal_backoff_has_jitter_to_spread_the_pools_of_several_processes() -> None:
    assert (REFUSAL_BACKOFF.initial, REFUSAL_BACKOFF.cap, REFUSAL_BACKOFF.jitter) == (0.5, 5.0, 0.5)
    state = new_state(backoff=REFUSAL_BACKOFF)
    state.start_refused(start(state), NOW, requeue=False)
    assert NOW + 0.25 <= state.hold_until <= NOW + 0.5


def test_a_refused_start_after_close_is_not_counted_and_queues_nobody() -> None:
    state = new_state()
    entry = start(state)
    state.close()
    assert state.start_refused(entry, NOW, requeue=True) is None
    assert counted(state) == counts() and list(state.waiters) == [] and state.hold_until == -math.inf


def test_upkeep_does_not_warm_during_the_pause_after_a_refusal() -> None:
    state = new_state(max_size=2, min_idle=1)
    step = state.upkeep(NOW, retry_at=0.0)
    assert step.start is not None
    state.start_refused(step.start, NOW, requeue=False)
    assert state.upkeep(NOW, retry_at=0.0) == Step(wake=NOW + 0.5)
    assert state.upkeep(NOW, retry_at=NOW + 3) == Step(wake=NOW + 3)  # its own backoff is longer
    assert state.upkeep(NOW + 0.5, retry_at=0.0).start is not None


def test_a_borrower_that_may_not_start_is_only_lent_idle_entries() -> None:
    state = new_state(max_size=2)
    assert state.borrow(None, NOW, may_start=False) == Step()
    (entry,) = idle_entries(state, 1)
    assert state.borrow(None, NOW, may_start=False) == Step(lent=entry)


def test_connected_seconds_add_up_open_and_ended_entries() -> None:
    state = new_state(max_size=3)
    a, b = start(state), start(state)
    assert state.counts(NOW + 5).connected_seconds == 0.0  # starting: not connected yet
    state.started(a, lend=True, now=NOW + 1)
    state.started(b, lend=True, now=NOW + 2)
    assert state.counts(NOW + 4).connected_seconds == 3.0 + 2.0
    state.disconnected(a, NOW + 11)
    state.disconnected(a, NOW + 50)  # once
    assert state.counts(NOW + 12).connected_seconds == 10.0 + 10.0
    failed = start(state)
    state.start_failed(failed)
    state.disconnected(failed, NOW + 12)  # never connected: nothing
    assert state.counts(NOW + 12).connected_seconds == 20.0
    state.disconnected(b, NOW + 14)
    assert state.counts(NOW + 100).connected_seconds == 10.0 + 12.0  # both ended: it no longer grows
    state.close()
    late = start(state)
    assert state.started(late, lend=False, now=NOW + 100) is False  # connected, then closed by its starter
    assert state.counts(NOW + 101).connected_seconds == 10.0 + 12.0 + 1.0


# ------------------------------------------------------------------------------------------- close


def test_close_hands_over_the_idle_entries_and_leaves_lent_and_starting_ones() -> None:
    state = new_state(max_size=4)
    starting = start(state)
    a, b, c = idle_entries(state, 3)
    assert lend(state) is c
    assert state.close() == [a, b]
    assert state.closed is True and list(state.idle) == [] and state.busy is True
    assert state.lent == {c} and state.starting == {starting}
    assert state.close() == []  # again: nothing left
    assert set(state.entries()) == {c, starting}
    assert counted(state) == counts(in_use=1, creating=1, created=3)


def test_entries_lists_idle_lent_and_starting_but_not_closing() -> None:
    state = new_state(max_size=4)
    s = start(state)
    a, b, c = idle_entries(state, 3)
    lend(state)
    lend(state)
    state.give_back(b, "bad", NOW)
    assert sorted(state.entries(), key=id) == sorted([a, c, s], key=id)
    assert state.entries()[0] is a  # idle first


def test_a_state_made_closed_lends_nothing_new() -> None:
    state = new_state(closed=True)
    assert state.closed is True
    entry = start(state)  # the pool refuses borrows itself; the state only counts
    assert state.started(entry, lend=True, now=NOW) is False and counted(state) == counts()


# ----------------------------------------------------------------------------------- invariants

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["borrow", "refuse", "queue", "return", "fail", "spoil", "end", "closed", "upkeep", "leave", "gone"]
        ),
        st.integers(0, 7),
        st.floats(0, 200),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    max_size=st.integers(1, 4),
    min_idle=st.integers(0, 4),
    max_idle=st.none() | st.floats(0, 300),
    max_age=st.none() | st.floats(1, 600),
    ops=OPS,
)
def test_no_sequence_of_events_exceeds_max_size_or_loses_an_entry(
    max_size: int,
    min_idle: int,
    max_idle: Optional[float],
    max_age: Optional[float],
    ops: List[Tuple[str, int, float]],
) -> None:
    state = new_state(
        max_size=max_size, min_idle=min(min_idle, max_size), max_idle=max_idle, max_age=max_age, backoff=EXACT
    )
    tickets: List[object] = []
    closing: List[Entry[FakeSession]] = []
    billed = 0.0  # the connected time of the entries that have gone, as the test sees it
    began: Dict[Entry[FakeSession], float] = {}
    now = NOW
    for op, pick, step_time in ops:
        now += step_time
        if op in ("borrow", "refuse", "upkeep"):
            ticket = tickets[0] if tickets and op != "upkeep" else None
            step = state.upkeep(now, retry_at=now) if op == "upkeep" else state.borrow(ticket, now)
            closing.extend(entry for entry, _ in step.stale)
            if ticket is not None and (step.lent or step.start):
                tickets.pop(0)
            if step.start is not None and op == "refuse":
                again = state.start_refused(step.start, now, requeue=True)
                assert again is not None and state.hold_until > now
                tickets.insert(0, again)
            elif step.start is not None:
                state.started(step.start, lend=op == "borrow", now=now)
                began[step.start] = now
        elif op == "queue":
            tickets.append(state.queue(None))
        elif op == "leave" and tickets:
            state.leave(tickets.pop(pick % len(tickets)))
        elif op in ("return", "fail") and state.lent:
            entry = sorted(state.lent, key=id)[pick % len(state.lent)]
            fate, _ = state.give_back(entry, "bad" if op == "fail" else None, now)
            if fate is Fate.DISCARDED:
                closing.append(entry)
        elif op in ("spoil", "end") and state.idle:
            entry = state.idle[pick % len(state.idle)]
            if state.spoiled(entry, "x", ended=op == "end") and op == "spoil":
                closing.append(entry)
        elif op == "closed" and closing:
            closing.pop(pick % len(closing))
            state.closed_one()
        elif op == "gone" and began:
            entry = sorted(began, key=id)[pick % len(began)]
            billed += now - began.pop(entry)
            state.disconnected(entry, now)
        places = [*state.idle, *state.lent, *state.starting]
        assert len(places) == len(set(places))  # no entry in two places
        assert state.size() == len(places) + len(closing) <= max_size
        assert state.closing == len(closing)
        assert list(state.waiters) == tickets  # the queue keeps arrival order
        if max_idle is None:
            assert state.closed_idle == 0
        if max_age is None:
            assert state.closed_age == 0
        if op == "upkeep":
            assert not any(entry.aged(now) or entry.due(now) for entry in state.idle)
        stats = state.counts(now)
        kept = stats.idle + stats.in_use
        assert stats.created == kept + stats.discarded + stats.closed_idle + stats.closed_age
        assert stats.connected_seconds == pytest.approx(billed + sum(now - t for t in began.values()))
