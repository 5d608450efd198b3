"""RequestLedger without I/O: the request cursor, requests in flight, cuts by a drop, repeated ends, inboxes."""

from __future__ import annotations

import re
from typing import List, Optional

import pytest

from avatarsdk import _ledger
from avatarsdk._ledger import MAX_TRACKED_REQUESTS, REMEMBERED_ENDS, RequestLedger
from avatarsdk.errors import AvatarSDKError, AvatarSDKErrorCode, SessionTokenError
from avatarsdk.request import RequestInbox

LOG_ID = re.compile(r"^\d{14}_[-_0-9a-zA-Z]{12}$")
SEND = "websocket_send"


def chunk_for(ledger: RequestLedger, req_id: Optional[str], op: str, phase: str) -> str:
    """What the send path does for a chunk: the cut-off check, then the request it belongs to."""
    ledger.check_cut(req_id, phase)
    return ledger.chunk_target(req_id, op)


def drop_error(**fields: object) -> AvatarSDKError:
    """What a drop fails the requests with: a retryable close, with the context of its connection."""
    context = {
        "phase": "websocket_runtime",
        "close_code": 1006,
        "close_reason": "abnormal",
        "connection_id": "conn-1",
        "server_code": "E42",
        "server_detail": "gone",
        "http_status": 502,
        "raw_body": "{}",
        "retryable": False,
    }
    context.update(fields)
    return AvatarSDKError(AvatarSDKErrorCode.connectionClosed, "the connection dropped", **context)  # type: ignore[arg-type]


def sent(ledger: RequestLedger, *, end: bool, req_id: object = None) -> str:
    """One chunk sent by a sender: its target, then ``chunk_sent``."""
    target = chunk_for(ledger, req_id, "send", SEND)  # type: ignore[arg-type]
    ledger.chunk_sent(target, end)
    return target


def utterance(ledger: RequestLedger) -> str:
    """A whole request sent (two chunks, the last with ``end``)."""
    req_id = sent(ledger, end=False)
    assert sent(ledger, end=True) == req_id
    return req_id


def cut_message(req_id: str, cause: str = "the connection dropped") -> str:
    return (
        f"request {req_id} was cut off when the connection dropped ({cause}); its frames will not come:"
        " send its audio again"
    )


# ------------------------------------------------------------------------------------------ a new ledger


def test_a_new_ledger() -> None:
    ledger = RequestLedger()
    assert ledger.track is False
    assert ledger.current is None
    assert ledger.last is None
    assert ledger.has_audio is False
    assert ledger.in_flight() == ()
    assert ledger.inboxes() == []
    assert ledger.inbox("any") is None
    assert RequestLedger(track=True).track is True


def test_the_bounds() -> None:
    assert MAX_TRACKED_REQUESTS == 256
    assert REMEMBERED_ENDS == 64


# ----------------------------------------------------------------------------------------- chunk_target


def test_the_first_chunk_starts_a_new_request() -> None:
    ledger = RequestLedger()
    req_id = chunk_for(ledger, None, "send", SEND)
    assert LOG_ID.match(req_id), req_id
    assert ledger.current == req_id
    assert ledger.last == req_id
    assert ledger.has_audio is False  # nothing sent yet


def test_the_next_chunks_belong_to_the_current_request() -> None:
    ledger = RequestLedger()
    first = sent(ledger, end=False)
    assert ledger.has_audio is True
    assert chunk_for(ledger, None, "send", SEND) == first
    assert ledger.current == first


def test_the_end_closes_the_request_and_the_next_chunk_starts_another() -> None:
    ledger = RequestLedger()
    first = utterance(ledger)
    assert ledger.current is None
    assert ledger.last == first
    assert ledger.has_audio is False
    second = chunk_for(ledger, None, "send", SEND)
    assert second != first
    assert LOG_ID.match(second)
    assert (ledger.current, ledger.last) == (second, second)


def test_a_named_request_must_be_the_current_one() -> None:
    ledger = RequestLedger()
    ledger.open("open_request", "pull-1", RequestInbox("pull-1"))
    ledger.last = None
    assert chunk_for(ledger, "pull-1", "send", SEND) == "pull-1"
    assert ledger.last == "pull-1"
    assert ledger.current == "pull-1"


def test_a_named_request_that_is_over() -> None:
    ledger = RequestLedger()
    ledger.open("open_request", "pull-1", RequestInbox("pull-1"))
    ledger.chunk_sent("pull-1", True)
    with pytest.raises(ValueError) as caught:
        chunk_for(ledger, "pull-1", "AvatarRequest.send", SEND)
    assert str(caught.value) == (
        "AvatarRequest.send(): request pull-1 is over (its end=True chunk was sent, or it was interrupted)"
    )
    assert ledger.current is None
    assert ledger.last == "pull-1"


def test_a_named_request_while_another_is_current() -> None:
    ledger = RequestLedger()
    current = sent(ledger, end=False)
    with pytest.raises(ValueError, match=r"^send\(\): request other is over "):
        chunk_for(ledger, "other", "send", SEND)
    assert (ledger.current, ledger.last) == (current, current)


def test_chunk_target_does_not_track() -> None:
    ledger = RequestLedger(track=True)
    chunk_for(ledger, None, "send", SEND)
    assert ledger.in_flight() == ()


# ------------------------------------------------------------------------------------- requests in flight


def test_untracked_requests_are_not_remembered() -> None:
    ledger = RequestLedger()
    utterance(ledger)
    sent(ledger, end=False)
    assert ledger.in_flight() == ()
    assert ledger.drop(drop_error()) == (ledger.current,)


def test_tracked_requests_in_flight_in_order() -> None:
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    second = sent(ledger, end=False)
    assert ledger.in_flight() == (first, second)
    sent(ledger, end=False)
    sent(ledger, end=True)
    assert ledger.in_flight() == (first, second)  # each once, in the order their audio went out


def test_a_request_is_tracked_from_its_first_chunk_only() -> None:
    ledger = RequestLedger(track=True)
    req_id = sent(ledger, end=False)
    assert ledger.frame_ended(req_id) is True  # its last frame came early: no longer in flight
    sent(ledger, end=True)  # a later chunk of the same request does not bring it back
    assert ledger.in_flight() == ()


def test_a_single_chunk_request_is_tracked() -> None:
    ledger = RequestLedger(track=True)
    req_id = sent(ledger, end=True)
    assert ledger.in_flight() == (req_id,)
    assert ledger.has_audio is False
    assert ledger.current is None


def test_at_most_max_tracked_requests_oldest_forgotten_first() -> None:
    ledger = RequestLedger(track=True)
    ids = [f"r{n}" for n in range(MAX_TRACKED_REQUESTS + 2)]
    for req_id in ids[:MAX_TRACKED_REQUESTS]:
        ledger.chunk_sent(req_id, True)
    assert ledger.in_flight() == tuple(ids[:MAX_TRACKED_REQUESTS])  # exactly the bound: all kept
    ledger.chunk_sent(ids[MAX_TRACKED_REQUESTS], True)
    assert ledger.in_flight() == tuple(ids[1 : MAX_TRACKED_REQUESTS + 1])
    ledger.chunk_sent(ids[MAX_TRACKED_REQUESTS + 1], True)
    assert ledger.in_flight() == tuple(ids[2:])
    assert len(ledger.in_flight()) == MAX_TRACKED_REQUESTS


def test_chunk_sent_sets_has_audio_until_the_end() -> None:
    ledger = RequestLedger()
    ledger.current = "r"
    ledger.chunk_sent("r", False)
    assert ledger.has_audio is True
    assert ledger.current == "r"
    ledger.chunk_sent("r", False)
    assert ledger.has_audio is True
    ledger.chunk_sent("r", True)
    assert ledger.has_audio is False
    assert ledger.current is None


def test_ended_by_client_of_the_current_request() -> None:
    ledger = RequestLedger(track=True)
    req_id = sent(ledger, end=False)
    ledger.ended_by_client(req_id)
    assert ledger.current is None
    assert ledger.has_audio is False
    assert ledger.last == req_id  # interrupt() may still name it
    assert ledger.in_flight() == ()
    assert chunk_for(ledger, None, "send", SEND) != req_id


def test_ended_by_client_of_another_request() -> None:
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    current = sent(ledger, end=False)
    ledger.ended_by_client(first)
    assert ledger.current == current
    assert ledger.has_audio is True
    assert ledger.in_flight() == (current,)
    ledger.ended_by_client("unknown")  # nothing to forget: no error
    assert ledger.in_flight() == (current,)


# ------------------------------------------------------------------------------------------ frame_ended


def test_frame_ended_once_then_a_repeat() -> None:
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    second = utterance(ledger)
    assert ledger.frame_ended(first) is True
    assert ledger.in_flight() == (second,)
    assert ledger.frame_ended(first) is False
    assert ledger.frame_ended(second) is True
    assert ledger.in_flight() == ()
    assert ledger.frame_ended(second) is False


def test_frame_ended_of_an_untracked_request() -> None:
    ledger = RequestLedger()
    assert ledger.frame_ended("r") is True
    assert ledger.frame_ended("r") is False


def test_the_remembered_ends_are_bounded() -> None:
    ledger = RequestLedger()
    ids = [f"r{n}" for n in range(REMEMBERED_ENDS + 1)]
    for req_id in ids[:REMEMBERED_ENDS]:
        assert ledger.frame_ended(req_id) is True
    assert ledger.frame_ended(ids[0]) is False  # exactly the bound: all remembered
    assert ledger.frame_ended(ids[REMEMBERED_ENDS]) is True  # the oldest is forgotten
    assert ledger.frame_ended(ids[1]) is False
    assert ledger.frame_ended(ids[0]) is True


def test_a_repeated_end_leaves_the_requests_in_flight() -> None:
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    ledger.frame_ended(first)
    ledger.chunk_sent(first, True)  # the same id in flight again (as after a replay under the same id)
    assert ledger.frame_ended(first) is False
    assert ledger.in_flight() == (first,)


# ---------------------------------------------------------------------------------------------- inboxes


def test_open_makes_the_pull_request_current() -> None:
    ledger = RequestLedger(track=True)
    inbox = RequestInbox("pull-1")
    ledger.has_audio = True
    ledger.open("open_request", "pull-1", inbox)
    assert ledger.current == "pull-1"
    assert ledger.last == "pull-1"
    assert ledger.has_audio is False
    assert ledger.inbox("pull-1") is inbox
    assert ledger.inbox("other") is None
    assert ledger.inboxes() == [inbox]
    assert ledger.in_flight() == ()  # tracked from its first chunk only


def test_open_while_a_request_is_open() -> None:
    ledger = RequestLedger()
    current = sent(ledger, end=False)
    with pytest.raises(ValueError) as caught:
        ledger.open("open_request", "pull-1", RequestInbox("pull-1"))
    assert str(caught.value) == (
        f"open_request(): request {current} is still open; send its end=True chunk or interrupt() it first"
    )
    assert ledger.inbox("pull-1") is None
    assert ledger.inboxes() == []
    assert (ledger.current, ledger.last, ledger.has_audio) == (current, current, True)


def test_open_after_the_end_of_the_previous_one() -> None:
    ledger = RequestLedger()
    utterance(ledger)
    ledger.open("stream", "pull-2", RequestInbox("pull-2"))
    assert ledger.current == "pull-2"


def test_frames_route_to_each_open_inbox() -> None:
    ledger = RequestLedger(track=True)
    inboxes: List[RequestInbox] = []
    for name in ("a", "b", "c"):
        inbox = RequestInbox(name)
        inboxes.append(inbox)
        ledger.open("open_request", name, inbox)
        ledger.chunk_sent(chunk_for(ledger, name, "send", SEND), True)
    assert ledger.inboxes() == inboxes
    assert [ledger.inbox(name) for name in ("a", "b", "c")] == inboxes
    assert ledger.in_flight() == ("a", "b", "c")
    result = ledger.inboxes()
    result.clear()  # a copy
    assert len(ledger.inboxes()) == 3


def test_inbox_of_any_object() -> None:
    ledger = RequestLedger()
    marker = object()
    ledger.open("open_request", "x", marker)  # type: ignore[arg-type]
    assert ledger.inbox("x") is marker


def test_release_a_finished_request() -> None:
    ledger = RequestLedger(track=True)
    inbox = RequestInbox("a")
    ledger.open("open_request", "a", inbox)
    ledger.chunk_sent("a", True)
    ledger.release("a", abandoned=False)
    assert ledger.inbox("a") is None
    assert ledger.inboxes() == []
    assert ledger.in_flight() == ("a",)  # its last frame has not come: still in flight


def test_release_an_abandoned_request() -> None:
    ledger = RequestLedger(track=True)
    ledger.open("open_request", "a", RequestInbox("a"))
    ledger.chunk_sent("a", True)
    other = utterance(ledger)
    ledger.release("a", abandoned=True)
    assert ledger.inbox("a") is None
    assert ledger.in_flight() == (other,)


def test_release_of_an_unknown_request_is_harmless() -> None:
    ledger = RequestLedger(track=True)
    inbox = RequestInbox("a")
    ledger.open("open_request", "a", inbox)
    ledger.release("b", abandoned=True)
    ledger.release("b", abandoned=False)
    assert ledger.inboxes() == [inbox]


def test_release_keeps_the_others() -> None:
    ledger = RequestLedger()
    first, second = RequestInbox("a"), RequestInbox("b")
    ledger.open("open_request", "a", first)
    ledger.chunk_sent("a", True)
    ledger.open("open_request", "b", second)
    ledger.release("a", abandoned=False)
    assert ledger.inboxes() == [second]
    assert ledger.inbox("b") is second


# ------------------------------------------------------------------------------------------------- drop


def test_drop_cuts_the_requests_in_flight_and_the_current_one() -> None:
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    second = utterance(ledger)
    current = sent(ledger, end=False)
    assert ledger.drop(drop_error()) == (first, second, current)  # the current one is in flight: once
    assert ledger.in_flight() == ()
    assert ledger.has_audio is False
    assert ledger.current == current
    assert ledger.last == current


def test_drop_adds_a_current_request_without_audio() -> None:
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    current = chunk_for(ledger, None, "send", SEND)  # no chunk sent yet: not in flight
    assert ledger.drop(drop_error()) == (first, current)


def test_drop_without_requests() -> None:
    ledger = RequestLedger(track=True)
    assert ledger.drop(drop_error()) == ()
    assert ledger.last is None
    assert ledger.current is None
    assert ledger.cut_off_control(ends_request=False, phase=SEND) is None


def test_drop_forgets_the_last_request_when_it_was_not_cut() -> None:
    ledger = RequestLedger(track=True)
    last = utterance(ledger)
    assert ledger.frame_ended(last) is True  # done before the drop
    assert ledger.drop(drop_error()) == ()
    assert ledger.last is None
    assert ledger.cut_off_control(ends_request=False, phase=SEND) is None


def test_drop_keeps_the_last_request_when_it_was_cut() -> None:
    ledger = RequestLedger(track=True)
    last = utterance(ledger)
    assert ledger.drop(drop_error()) == (last,)
    assert ledger.last == last
    assert ledger.current is None


def test_a_later_drop_replaces_the_cut_requests() -> None:
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    ledger.drop(drop_error(connection_id="conn-1"))
    second = utterance(ledger)
    assert ledger.drop(drop_error(connection_id="conn-2")) == (second,)
    with pytest.raises(AvatarSDKError) as caught:
        chunk_for(ledger, second, "send", SEND)
    assert caught.value.connection_id == "conn-2"
    # the first is no longer cut off: as a named request, it is merely over
    with pytest.raises(ValueError, match="is over"):
        chunk_for(ledger, first, "send", SEND)


# -------------------------------------------------------------------------------------------- cut_error


def test_the_cut_error_names_the_request_and_keeps_the_cause() -> None:
    ledger = RequestLedger(track=True)
    req_id = utterance(ledger)
    cause = drop_error()
    ledger.drop(cause)
    error = ledger.cut_error(req_id, "websocket_handshake")
    assert type(error) is AvatarSDKError
    assert error is not cause
    assert error.code is AvatarSDKErrorCode.connectionClosed
    assert error.message == cut_message(req_id)
    assert str(error) == f"connectionClosed: {cut_message(req_id)}"
    assert error.phase == "websocket_handshake"
    assert error.req_id == req_id
    assert error.retryable is True
    # the cause's other fields are kept
    assert (error.close_code, error.close_reason, error.connection_id) == (1006, "abnormal", "conn-1")
    assert (error.server_code, error.server_detail, error.http_status, error.raw_body) == ("E42", "gone", 502, "{}")
    # and the cause is unchanged
    assert (cause.phase, cause.req_id, cause.retryable) == ("websocket_runtime", None, False)
    assert cause.message == "the connection dropped"


def test_the_cut_error_keeps_the_kind_of_the_cause() -> None:
    ledger = RequestLedger(track=True)
    req_id = utterance(ledger)
    cause = SessionTokenError("no token", code=AvatarSDKErrorCode.serverError, http_status=503)
    ledger.drop(cause)
    error = ledger.cut_error(req_id, SEND)
    assert type(error) is SessionTokenError
    assert error.code is AvatarSDKErrorCode.serverError
    assert error.http_status == 503
    assert error.message == cut_message(req_id, "no token")


def test_cut_error_of_a_request_that_was_not_cut() -> None:
    ledger = RequestLedger()
    with pytest.raises(KeyError):
        ledger.cut_error("never", SEND)


# ---------------------------------------------------------------------------------- after a drop: chunks


def test_the_next_chunk_of_a_cut_current_request_raises_then_a_new_one_starts() -> None:
    ledger = RequestLedger(track=True)
    req_id = sent(ledger, end=False)
    ledger.drop(drop_error())
    with pytest.raises(AvatarSDKError) as caught:
        chunk_for(ledger, None, "send", SEND)
    error = caught.value
    assert error.req_id == req_id
    assert error.phase == SEND
    assert error.retryable is True
    assert error.message == cut_message(req_id)
    assert ledger.current is None
    assert ledger.last == req_id  # unchanged by the failed chunk
    fresh = chunk_for(ledger, None, "send", SEND)
    assert fresh != req_id
    assert (ledger.current, ledger.last) == (fresh, fresh)


def test_a_cut_pull_request_named_by_its_chunk() -> None:
    ledger = RequestLedger(track=True)
    ledger.open("open_request", "pull-1", RequestInbox("pull-1"))
    sent(ledger, end=False, req_id="pull-1")
    ledger.drop(drop_error())
    with pytest.raises(AvatarSDKError) as caught:
        chunk_for(ledger, "pull-1", "AvatarRequest.send", "websocket_runtime")
    assert caught.value.req_id == "pull-1"
    assert caught.value.phase == "websocket_runtime"
    assert ledger.current is None


def test_a_cut_request_that_is_not_current_leaves_the_current_one() -> None:
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    current = sent(ledger, end=False)
    ledger.drop(drop_error())
    with pytest.raises(AvatarSDKError) as caught:
        chunk_for(ledger, first, "send", SEND)
    assert caught.value.req_id == first
    assert ledger.current == current  # still current: its own next chunk fails in turn
    with pytest.raises(AvatarSDKError) as caught:
        chunk_for(ledger, None, "send", SEND)
    assert caught.value.req_id == current
    assert ledger.current is None


def test_a_named_request_that_was_not_cut_is_over_after_a_drop() -> None:
    ledger = RequestLedger(track=True)
    current = sent(ledger, end=False)
    ledger.drop(drop_error())
    with pytest.raises(ValueError, match=r"^send\(\): request other is over "):
        chunk_for(ledger, "other", "send", SEND)
    assert ledger.current == current


# ------------------------------------------------------------------------------- after a drop: controls


def test_a_control_naming_a_cut_request_raises() -> None:
    ledger = RequestLedger(track=True)
    req_id = sent(ledger, end=False)
    ledger.drop(drop_error())
    with pytest.raises(AvatarSDKError) as caught:
        ledger.cut_off_control(ends_request=False, phase="websocket_send")
    assert caught.value.req_id == req_id
    assert caught.value.phase == "websocket_send"
    assert caught.value.message == cut_message(req_id)
    assert (ledger.current, ledger.last) == (req_id, req_id)  # unchanged


def test_an_interrupt_of_a_cut_current_request_only_ends_it_here() -> None:
    ledger = RequestLedger(track=True)
    req_id = sent(ledger, end=False)
    ledger.drop(drop_error())
    assert ledger.cut_off_control(ends_request=True, phase=SEND) == req_id
    assert ledger.current is None
    assert ledger.last is None
    assert ledger.cut_off_control(ends_request=False, phase=SEND) is None  # nothing named any more
    assert LOG_ID.match(chunk_for(ledger, None, "send", SEND))


def test_an_interrupt_of_a_cut_request_already_ended() -> None:
    ledger = RequestLedger(track=True)
    req_id = utterance(ledger)
    ledger.drop(drop_error())
    ledger.current = None
    assert ledger.cut_off_control(ends_request=True, phase=SEND) == req_id
    assert ledger.current is None
    assert ledger.last is None


def test_an_interrupt_of_a_cut_request_keeps_another_current_one() -> None:
    # the senders keep last == current while a request is open; this checks the branch on its own
    ledger = RequestLedger(track=True)
    first = utterance(ledger)
    ledger.drop(drop_error())
    ledger.current = "other"
    assert ledger.cut_off_control(ends_request=True, phase=SEND) == first
    assert ledger.current == "other"
    assert ledger.last is None


def test_a_control_without_a_drop_acts_normally() -> None:
    ledger = RequestLedger(track=True)
    sent(ledger, end=False)
    assert ledger.cut_off_control(ends_request=False, phase=SEND) is None
    assert ledger.cut_off_control(ends_request=True, phase=SEND) is None
    assert ledger.current is not None


def test_a_control_naming_a_request_after_the_cut_ones() -> None:
    ledger = RequestLedger(track=True)
    utterance(ledger)
    ledger.drop(drop_error())
    fresh = sent(ledger, end=False)  # a new request on the new connection
    assert ledger.cut_off_control(ends_request=False, phase=SEND) is None
    assert ledger.cut_off_control(ends_request=True, phase=SEND) is None
    assert (ledger.current, ledger.last) == (fresh, fresh)


def test_a_control_with_no_request_named() -> None:
    ledger = RequestLedger()
    assert ledger.cut_off_control(ends_request=True, phase=SEND) is None
    assert ledger.cut_off_control(ends_request=False, phase=SEND) is None


# ----------------------------------------------------------------------------------------- new request ids


def test_new_request_ids_come_from_generate_log_id(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["id-1", "id-2"])
    monkeypatch.setattr(_ledger, "generate_log_id", lambda: next(ids))
    ledger = RequestLedger()
    assert utterance(ledger) == "id-1"
    assert chunk_for(ledger, None, "send", SEND) == "id-2"


def test_open_after_a_drop_that_cut_the_current_request() -> None:
    """A request cut off by a drop is gone with its connection: a pull request may open in its place (a network
    fault is not the caller's misuse)."""
    ledger = RequestLedger(track=True)
    cut = sent(ledger, end=False)
    ledger.drop(drop_error())
    ledger.open("open_request", "pull-1", RequestInbox("pull-1"))
    assert (ledger.current, ledger.last) == ("pull-1", "pull-1")
    with pytest.raises(AvatarSDKError, match=f"request {cut} was cut off"):
        chunk_for(ledger, cut, "send", SEND)  # the cut request itself still says why it is gone


def test_open_while_a_request_is_open_is_refused_even_after_a_drop_that_did_not_cut_it() -> None:
    ledger = RequestLedger(track=True)
    ledger.drop(drop_error())  # nothing in flight: nothing cut
    current = chunk_for(ledger, None, "send", SEND)  # a new request, no chunk sent yet
    with pytest.raises(ValueError, match=rf"^open_request\(\): request {current} is still open; "):
        ledger.open("open_request", "pull-1", RequestInbox("pull-1"))
