"""The session lifecycle without I/O: the whole transition table, close, the end of a connection, abandon, require."""

from __future__ import annotations

import itertools
from typing import FrozenSet, List, Tuple

import pytest

from avatarsdk._lifecycle import ENDING, TRANSITIONS, IllegalTransition, Lifecycle, State
from avatarsdk.errors import AvatarSDKError, AvatarSDKErrorCode

S = State

# The table as the module documents it, written out by hand: a change to TRANSITIONS must change this too.
ALLOWED: FrozenSet[Tuple[State, State]] = frozenset(
    {
        (S.NEW, S.INITIALIZED),
        (S.NEW, S.CLOSING),
        (S.INITIALIZED, S.INITIALIZED),  # init() again: a new token
        (S.INITIALIZED, S.STARTING),
        (S.INITIALIZED, S.CLOSING),
        (S.STARTING, S.STARTED),
        (S.STARTING, S.INITIALIZED),  # the start failed
        (S.STARTING, S.CLOSING),
        (S.STARTED, S.RECONNECTING),
        (S.STARTED, S.CLOSING),
        (S.RECONNECTING, S.STARTED),
        (S.RECONNECTING, S.CLOSING),
        (S.CLOSING, S.CLOSED),
    }
)
ALL_PAIRS: List[Tuple[State, State]] = list(itertools.product(State, State))

# A path from NEW to each state, through allowed moves only.
PATHS = {
    S.NEW: (),
    S.INITIALIZED: (S.INITIALIZED,),
    S.STARTING: (S.INITIALIZED, S.STARTING),
    S.STARTED: (S.INITIALIZED, S.STARTING, S.STARTED),
    S.RECONNECTING: (S.INITIALIZED, S.STARTING, S.STARTED, S.RECONNECTING),
    S.CLOSING: (S.CLOSING,),
    S.CLOSED: (S.CLOSING, S.CLOSED),
}


def at(state: State) -> Lifecycle:
    """A lifecycle brought to ``state`` by allowed moves."""
    life = Lifecycle()
    for step in PATHS[state]:
        life.move(step)
    assert life.state is state
    return life


def fault() -> AvatarSDKError:
    return AvatarSDKError(AvatarSDKErrorCode.connectionClosed, "dropped", close_code=1006, retryable=True)


def test_states_and_their_values() -> None:
    assert [(s.name, s.value) for s in State] == [
        ("NEW", "new"),
        ("INITIALIZED", "initialized"),
        ("STARTING", "starting"),
        ("STARTED", "started"),
        ("RECONNECTING", "reconnecting"),
        ("CLOSING", "closing"),
        ("CLOSED", "closed"),
    ]
    assert frozenset({S.CLOSING, S.CLOSED}) == ENDING


def test_the_table_is_the_documented_one() -> None:
    assert set(TRANSITIONS) == set(State)
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


def test_a_new_lifecycle() -> None:
    life = Lifecycle()
    assert life.state is S.NEW
    assert life.closed_by_user is False
    assert life.end_error is None
    assert repr(life) == "<Lifecycle new>"


@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=[f"{a.value}->{b.value}" for a, b in ALL_PAIRS])
def test_every_pair_of_states(src: State, dst: State) -> None:
    life = at(src)
    if (src, dst) in ALLOWED:
        life.move(dst)
        assert life.state is dst
    else:
        with pytest.raises(IllegalTransition) as caught:
            life.move(dst)
        assert str(caught.value) == f"a session cannot go from {src.value} to {dst.value}"
        assert life.state is src  # unchanged
    assert life.closed_by_user is False
    assert life.end_error is None


def test_illegal_transition_is_a_runtime_error() -> None:
    assert issubclass(IllegalTransition, RuntimeError)
    assert not issubclass(IllegalTransition, ValueError)


@pytest.mark.parametrize("state", [S.NEW, S.INITIALIZED, S.STARTING, S.STARTED, S.RECONNECTING])
def test_request_close_moves_to_closing_and_returns_the_state_left(state: State) -> None:
    life = at(state)
    assert life.request_close() is state
    assert life.state is S.CLOSING
    assert life.closed_by_user is True
    assert repr(life) == "<Lifecycle closing closed by user>"
    # a second close() finds the session ending: another thread finishes it
    assert life.request_close() is None
    assert life.state is S.CLOSING
    assert life.closed_by_user is True


@pytest.mark.parametrize("state", [S.CLOSING, S.CLOSED])
def test_request_close_while_ending_does_nothing(state: State) -> None:
    life = at(state)
    assert life.request_close() is None
    assert life.state is state
    assert life.closed_by_user is False


@pytest.mark.parametrize("state", [S.NEW, S.INITIALIZED, S.STARTING, S.STARTED, S.RECONNECTING])
def test_ended_with_a_fault_moves_to_closing_and_keeps_it(state: State) -> None:
    life = at(state)
    error = fault()
    life.ended(error)
    assert life.state is S.CLOSING
    assert life.end_error is error
    assert life.closed_by_user is False
    assert repr(life) == "<Lifecycle closing>"


def test_ended_without_a_fault_keeps_no_error() -> None:
    life = at(S.STARTED)
    life.ended(None)
    assert life.state is S.CLOSING
    assert life.end_error is None


def test_ended_after_close_stays_closing_and_keeps_the_fault() -> None:
    life = at(S.STARTED)
    life.request_close()
    error = fault()
    life.ended(error)
    assert life.state is S.CLOSING
    assert life.end_error is error
    assert life.closed_by_user is True


def test_ended_none_does_not_erase_an_earlier_fault() -> None:
    life = at(S.STARTED)
    error = fault()
    life.ended(error)
    life.ended(None)
    assert life.state is S.CLOSING
    assert life.end_error is error


def test_ended_once_closed_is_illegal() -> None:
    life = at(S.CLOSED)
    with pytest.raises(IllegalTransition, match=r"^a session cannot go from closed to closing$"):
        life.ended(fault())
    assert life.state is S.CLOSED
    assert life.end_error is None


@pytest.mark.parametrize("state", list(State))
def test_abandon_closes_from_any_state(state: State) -> None:
    life = at(state)
    life.abandon()
    assert life.state is S.CLOSED
    assert life.closed_by_user is False
    assert repr(life) == "<Lifecycle closed>"
    with pytest.raises(IllegalTransition):
        life.move(S.CLOSING)


def test_closed_moves_nowhere() -> None:
    life = at(S.CLOSED)
    for state in State:
        with pytest.raises(IllegalTransition, match=f"^a session cannot go from closed to {state.value}$"):
            life.move(state)


# ------------------------------------------------------------------------------------------------ require

# What require() says in each state when that state is not allowed.
REQUIRE_MESSAGES = {
    S.NEW: "send(): call init() first",
    S.INITIALIZED: "send(): call init() first",
    S.STARTING: "send(): the session is already started",
    S.STARTED: "send(): the session is already started",
    S.RECONNECTING: "send(): the session is already started",
    S.CLOSING: "send(): the session is closed",
    S.CLOSED: "send(): the session is closed",
}


@pytest.mark.parametrize("state", list(State))
def test_require_passes_in_an_allowed_state(state: State) -> None:
    life = at(state)
    life.require("send", state)
    life.require("send", S.NEW, S.INITIALIZED, S.STARTING, S.STARTED, S.RECONNECTING, S.CLOSING, S.CLOSED)
    assert life.state is state


@pytest.mark.parametrize("state", list(State))
def test_require_raises_a_message_for_each_state(state: State) -> None:
    life = at(state)
    others = [s for s in State if s is not state]
    with pytest.raises(ValueError) as caught:
        life.require("send", *others)
    assert str(caught.value) == REQUIRE_MESSAGES[state]
    with pytest.raises(ValueError) as caught:
        life.require("send")  # nothing allowed
    assert str(caught.value) == REQUIRE_MESSAGES[state]
    assert life.state is state


def test_require_names_the_operation() -> None:
    with pytest.raises(ValueError, match=r"^start\(\): call init\(\) first$"):
        Lifecycle().require("start", S.INITIALIZED)
