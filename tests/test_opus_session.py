"""Ogg Opus sessions: pre-encoded pass-through, and PCM encoded by the SDK (ogg_opus_encoder)."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import textwrap
from typing import Callable, Dict, List

import pytest
from conftest import Recorder

from avatarsdk import AudioFormat, AvatarSession, OggOpusEncoderConfig
from avatarsdk._opus import OggOpusStreamEncoder
from avatarsdk.testing import FakeAvatarService

av = pytest.importorskip("av", reason='needs PyAV: pip install "avatarsdk[audio]"')

MakeSession = Callable[..., AvatarSession]
RATE = 24000


def tone(seconds: float, rate: int = RATE) -> bytes:
    n = int(seconds * rate)
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * 330 * i / rate)) for i in range(n)))


def decoded_seconds(stream: bytes) -> float:
    with av.open(io.BytesIO(stream)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
        return samples / 48000


def serials(stream: bytes) -> List[int]:
    """The serial number of each Ogg page in ``stream``."""
    found, pos = [], 0
    while pos < len(stream):
        assert stream[pos : pos + 4] == b"OggS", pos
        segments = stream[pos + 26]
        sizes = stream[pos + 27 : pos + 27 + segments]
        found.append(struct.unpack_from("<I", stream, pos + 14)[0])
        pos += 27 + segments + sum(sizes)
    return found


@pytest.fixture
def opus_service() -> FakeAvatarService:
    with FakeAvatarService(frames_per_request=3) as svc:
        yield svc  # type: ignore[misc]


def audio_by_request(svc: FakeAvatarService) -> Dict[str, bytes]:
    conn = svc.connection(0)
    return {req_id: bytes(r.audio) for req_id, r in conn.requests.items()}


def test_pcm_is_encoded_to_one_ogg_stream_per_request(
    opus_service: FakeAvatarService, make_session: MakeSession, recorder: Recorder
) -> None:
    encoded: Dict[str, bytes] = {}
    session = make_session(
        **opus_service.session_kwargs(
            audio_format=AudioFormat.OGG_OPUS,
            sample_rate=RATE,
            bitrate=24000,
            ogg_opus_encoder=OggOpusEncoderConfig(frame_duration_ms=20),
            on_encoded_audio=lambda req_id, stream: encoded.__setitem__(req_id, stream),
            **recorder.callbacks(),
        )
    )
    session.init()
    session.start()
    pcm = tone(1.0)
    step = RATE * 2 // 50  # 20 ms
    first = ""
    for i in range(0, len(pcm), step):
        first = session.send_audio(pcm[i : i + step], end=i + step >= len(pcm))
    second = session.send_audio(tone(0.5), end=True)
    recorder.wait_last(2)
    conf = opus_service.connection(0).configure
    assert conf is not None and (conf.audio_format, conf.sample_rate, conf.bitrate) == (1, RATE, 24000)
    received = audio_by_request(opus_service)
    assert set(received) == {first, second}
    for req_id, seconds in ((first, 1.0), (second, 0.5)):
        stream = received[req_id]
        assert encoded[req_id] == stream  # on_encoded_audio: the whole stream, as sent
        assert len(set(serials(stream))) == 1  # one continuous stream
        assert abs(decoded_seconds(stream) - seconds) < 0.021
    assert serials(received[first])[0] != serials(received[second])[0]


def test_interrupt_starts_a_new_stream(opus_service: FakeAvatarService, make_session: MakeSession) -> None:
    session = make_session(
        **opus_service.session_kwargs(
            audio_format="ogg_opus", sample_rate=16000, ogg_opus_encoder=OggOpusEncoderConfig()
        )
    )
    session.init()
    session.start()
    cut = session.send_audio(tone(0.2, 16000))
    session.interrupt()
    after = session.send_audio(tone(0.2, 16000), end=True)
    conn = opus_service.wait_for_connection(0)
    conn.wait_for_request(after)
    received = audio_by_request(opus_service)
    assert cut != after and received[after][:4] == b"OggS"
    assert serials(received[after])[0] != serials(received[cut])[0]
    assert abs(decoded_seconds(received[after]) - 0.2) < 0.021


def test_stream_and_pull_requests_encode_too(opus_service: FakeAvatarService, make_session: MakeSession) -> None:
    session = make_session(
        **opus_service.session_kwargs(
            audio_format="ogg_opus", sample_rate=16000, ogg_opus_encoder=OggOpusEncoderConfig()
        )
    )
    session.init()
    session.start()
    frames = session.collect(tone(0.6, 16000), chunk_ms=20)
    assert len(frames) == 3 and frames[-1].last
    stream = audio_by_request(opus_service)[frames[0].req_id]
    assert abs(decoded_seconds(stream) - 0.6) < 0.021


def test_pre_encoded_ogg_opus_passes_unchanged(opus_service: FakeAvatarService, make_session: MakeSession) -> None:
    encoder = OggOpusStreamEncoder(sample_rate=16000)
    stream = encoder.encode(tone(0.4, 16000), end=True)
    session = make_session(**opus_service.session_kwargs(audio_format="ogg_opus", sample_rate=16000))
    session.init()
    session.start()
    with pytest.raises(ValueError, match="OggS"):
        session.send_audio(b"\x01\x02" * 100)  # PCM where Ogg pages belong
    half = len(stream) // 2
    req_id = session.send_audio(stream[:half])
    session.send_audio(stream[half:], end=True)
    opus_service.wait_for_connection(0).wait_for_request(req_id)
    assert audio_by_request(opus_service)[req_id] == stream


def test_encoder_config_is_checked_before_any_io(service: FakeAvatarService, make_session: MakeSession) -> None:
    with pytest.raises(ValueError, match="ogg_opus_encoder: expected audio_format=OGG_OPUS"):
        make_session(ogg_opus_encoder=OggOpusEncoderConfig())
    with pytest.raises(ValueError, match="application"):
        make_session(audio_format="ogg_opus", ogg_opus_encoder=OggOpusEncoderConfig(application="music"))
    assert service.token_requests == []


def test_without_pyav_the_encoder_fails_at_construction() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["av"] = None
        from datetime import datetime, timedelta, timezone
        from avatarsdk import OggOpusEncoderConfig, new_avatar_session
        try:
            new_avatar_session(avatar_id="a", api_key="k", app_id="x", console_endpoint_url="http://127.0.0.1:9",
                               ingress_endpoint_url="http://127.0.0.1:9/v2/driveningress", audio_format="ogg_opus",
                               expire_at=datetime.now(timezone.utc) + timedelta(hours=1),
                               ogg_opus_encoder=OggOpusEncoderConfig())
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert 'pip install "avatarsdk[audio]"' in out
