"""The service's generations: v1 ingress (deprecated), and the newer v2 generation's capabilities,
pause/resume and playback states."""

from __future__ import annotations

import threading
import warnings
from typing import Callable, List

import pytest
from conftest import Recorder, pcm

from avatarsdk import AvatarSDKError, AvatarSDKErrorCode, AvatarSession, PlaybackState, PlaybackStatus
from avatarsdk._proto import ingress_v1_pb2 as pb1
from avatarsdk._protocol_v1 import SegmentCounter, expected_segments, is_v1
from avatarsdk.testing import Confirm, FakeAvatarService, FakeConnection, FakeRequest

MakeSession = Callable[..., AvatarSession]
BOTH = ("playback_control", "playback_state")


def v1_url(service: FakeAvatarService) -> str:
    return service.ingress_url.replace("/v2/", "/v1/")


def v1_session(make_session: MakeSession, service: FakeAvatarService, **overrides: object) -> AvatarSession:
    """A session on ``service``'s v1 ingress (and its console)."""
    settings = dict(service.credentials(), ingress_endpoint_url=v1_url(service), **overrides)
    with pytest.warns(DeprecationWarning, match="v1 ingress"):
        return make_session(**settings)


# ---------------------------------------------------------------------------------------------- v1


def test_v1_is_chosen_from_the_path_and_warns(service: FakeAvatarService, make_session: MakeSession) -> None:
    assert is_v1("https://api.x.cloud/v1/driveningress/") and not is_v1("https://api.x.cloud/v2/driveningress")
    session = v1_session(make_session, service)
    assert session.protocol_version == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_session().protocol_version == 2


def test_v1_five_steps_with_inferred_last_frame(
    service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    session = v1_session(make_session, service)
    session.init()
    connection_id = session.start()  # no handshake: the id is the client's own
    conn = service.wait_for_connection(0)
    assert conn.version == 1 and conn.connection_id == connection_id
    headers = {k.lower(): v for k, v in conn.request_headers.items()}
    assert headers["x-connection-id"] == connection_id and headers["x-session-key"] == service.issued_tokens[-1]
    assert "x-app-id" not in headers
    req_id = session.send_audio(pcm(1.0))
    session.send_audio(pcm(5.5), end=True)  # 6.5 s of audio: floor((6.5 - 2) / 4) + 2 = 3 segments
    recorder.wait_last()
    assert recorder.frames == conn.sent_frames() and recorder.lasts == [False, False, True]
    audio = [m.client_audio_input for m in conn.messages if m.type == pb1.MESSAGE_CLIENT_AUDIO_INPUT]
    assert [(a.req_id, a.end, len(a.audio)) for a in audio] == [(req_id, False, 32000), (req_id, True, 176000)]
    session.close()
    assert recorder.closes == 1


def test_v1_pull_requests_and_errors(make_session: MakeSession) -> None:
    answered: List[str] = []

    def answer(conn: FakeConnection, request: FakeRequest) -> None:
        answered.append(request.req_id)
        if len(answered) == 1:
            conn.send_v1_frames(expected_segments(len(request.audio) / 32000))
        else:
            conn.send_v1_error(4001, "credits exhausted", req_id=request.req_id)

    with FakeAvatarService(on_request=answer) as svc:
        session = v1_session(make_session, svc)
        session.init()
        session.start()
        frames = session.collect(pcm(0.5))  # under 2 s: one segment
        assert len(frames) == 1 and frames[0].last
        conn = svc.wait_for_connection(0)
        assert frames[0].data == conn.sent_frames()[0]
        request = session.open_request(frame_timeout=5)
        request.send(pcm(0.1), end=True)
        with pytest.raises(AvatarSDKError) as info:
            request.collect()
        assert (info.value.code, info.value.req_id) == (AvatarSDKErrorCode.creditsExhausted, request.req_id)
        session.close()


def test_v1_refuses_what_it_cannot_do(service: FakeAvatarService, make_session: MakeSession) -> None:
    for overrides, field in (({"sample_rate": 24000}, "16 kHz"), ({"use_query_auth": True}, "use_query_auth")):
        with pytest.raises(ValueError, match=field), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            make_session(ingress_endpoint_url=v1_url(service), **overrides)
    assert service.token_requests == []
    session = v1_session(make_session, service)
    session.init()
    session.start()
    session.send_audio(pcm(0.1), end=True)
    for control in (session.interrupt, session.pause, session.resume):
        with pytest.raises(ValueError, match="v1 ingress has no"):
            control()
    session.close()


def test_segment_rule_and_counter() -> None:
    assert [expected_segments(s) for s in (0.1, 1.99, 2.0, 5.9, 6.0, 10.0, 14.0)] == [1, 1, 2, 2, 3, 4, 5]
    counter = SegmentCounter()
    counter.audio("a", 32000 * 3, end=True)  # 3 s: 2 segments
    counter.audio("b", 3200, end=False)
    assert counter.frame() == ("a", False)
    assert counter.frame() == ("a", True)
    assert counter.frame() == ("b", False)  # before b's end: its count goes on
    counter.audio("b", 0, end=True)  # 0.1 s: 1 segment, already received
    assert counter.frame() == ("", False)


# ------------------------------------------------------------------------- newer v2 generation


def test_capabilities_from_the_confirmation(service: FakeAvatarService, make_session: MakeSession) -> None:
    service.script_handshake(Confirm(capabilities=BOTH))
    session = make_session()
    assert session.capabilities == frozenset()
    session.init()
    session.start()
    assert session.capabilities == frozenset(BOTH)


def test_pause_and_resume_with_playback_states(make_session: MakeSession) -> None:
    states: List[PlaybackState] = []
    got = threading.Condition()

    def on_state(state: PlaybackState) -> None:
        with got:
            states.append(state)
            got.notify_all()

    with FakeAvatarService(capabilities=BOTH, frames_per_request=3) as svc:
        session = make_session(**svc.session_kwargs(on_playback_state=on_state))
        session.init()
        session.start()
        request = session.open_request(frame_timeout=5)
        request.send(pcm(0.2))
        assert session.pause() == request.req_id
        assert session.resume() == request.req_id
        request.send(pcm(0.2), end=True)
        events = list(request.events())
        conn = svc.wait_for_connection(0)
        assert conn.controls == [("pause", request.req_id), ("resume", request.req_id)]
        with got:
            got.wait_for(lambda: len(states) == 2, 5)
        assert [(s.req_id, s.status, s.reason) for s in states] == [
            (request.req_id, PlaybackStatus.PAUSED, "explicit"),
            (request.req_id, PlaybackStatus.PLAYING, "explicit"),
        ]
        kinds = [type(e).__name__ for e in events]
        assert kinds.count("PlaybackState") == 2 and kinds.count("Frame") == 3 and kinds[-1] == "Frame"
        session.close()


def test_pause_needs_playback_control(service: FakeAvatarService, make_session: MakeSession) -> None:
    session = make_session()
    session.init()
    session.start()
    session.send_audio(pcm(0.1), end=True)
    with pytest.raises(ValueError, match="did not declare 'playback_control'"):
        session.pause()
    assert service.wait_for_connection(0).controls == []


def test_a_repeated_end_is_delivered_once(make_session: MakeSession, recorder: Recorder) -> None:
    def twice(conn: FakeConnection, request: FakeRequest) -> None:
        conn.send_animation(request.req_id, end=True)
        conn.send_animation(request.req_id, end=True)  # egress mode can repeat the end
        conn.send_animation("next", end=True)

    with FakeAvatarService(on_request=twice) as svc:
        session = make_session(**svc.session_kwargs())
        session.init()
        session.start()
        session.send_audio(pcm(0.1), end=True)
        recorder.wait_for(lambda: len(recorder.frames) == 2)
        conn = svc.wait_for_connection(0)
        sent = conn.sent_frames()
        assert recorder.frames == [sent[0], sent[2]] and recorder.lasts == [True, True]
        session.close()
