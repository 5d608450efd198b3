"""``iter_audio``: streaming decode with FFmpeg (the audio extra) or in pure Python, and the block-by-block
resampler behind the pure-Python path."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import tracemalloc
import wave
from array import array
from pathlib import Path
from typing import List, Tuple

import pytest
from conftest import HAVE_PYAV
from test_audio import sine, wav_bytes

from avatarsdk import AudioStream, iter_audio, load_audio
from avatarsdk._resample import StreamResampler, resample


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(48000, 16000), (44100, 16000), (8000, 16000), (44101, 16000), (22050, 48000)]
)
def test_the_stream_resampler_gives_exactly_what_resample_gives(rate_in: int, rate_out: int) -> None:
    rng = random.Random(rate_in)
    signal = [rng.uniform(-1.0, 1.0) for _ in range(rate_in // 4 + 7)]
    converter = StreamResampler(rate_in, rate_out)
    out = array("d")
    pos = 0
    while pos < len(signal):
        size = rng.choice([0, 1, 2, 17, 500, 3000])
        out.extend(converter.feed(signal[pos : pos + size]))
        pos += size
    out.extend(converter.flush())
    assert list(out) == list(resample(signal, rate_in, rate_out))
    assert len(out) == math.ceil(len(signal) * rate_out / rate_in)


def chunks_of(stream: AudioStream) -> List[Tuple[bytes, bool]]:
    with stream:
        return list(stream)


def correlation(a: bytes, b: bytes) -> float:
    x, y = array("h", a), array("h", b)
    dot = sum(p * q for p, q in zip(x, y))
    return dot / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (48000, 2), (44100, 2), (8000, 1)])
def test_chunks_are_whole_and_only_the_last_ends(rate: int, channels: int) -> None:
    data = wav_bytes([sine(440, rate, 0.51, 0.4)] * channels, rate, "s16")
    stream = iter_audio(data, sample_rate=16000, chunk_ms=40)
    assert stream.decoder == ("ffmpeg" if HAVE_PYAV else "python")
    assert stream.duration == pytest.approx(0.51, abs=1e-3)
    assert f"{rate} Hz, {channels} channel(s)" in stream.source
    chunks = chunks_of(stream)
    assert [end for _, end in chunks] == [False] * (len(chunks) - 1) + [True]
    assert {len(chunk) for chunk, _ in chunks[:-1]} == {1280}  # 40 ms at 16 kHz
    assert 0 < len(chunks[-1][0]) <= 1280
    pcm = b"".join(chunk for chunk, _ in chunks)
    reference = load_audio(data)
    assert len(pcm) == len(reference) == 2 * 8160
    assert stream.decoded == pytest.approx(0.51)
    if HAVE_PYAV:
        assert correlation(pcm, reference) > 0.999  # FFmpeg's resampler, the same tone
    else:
        assert pcm == reference
    assert list(stream) == []  # closed after the last chunk


def test_an_empty_wav_is_one_empty_last_chunk() -> None:
    assert chunks_of(iter_audio(wav_bytes([[]], 16000, "s16"))) == [(b"", True)]


NO_PYAV = """\
import sys
sys.modules["av"] = None  # as if the audio extra were not installed
from avatarsdk import iter_audio, load_audio
for path in sys.argv[1:]:
    with iter_audio(path, sample_rate=16000, chunk_ms=30) as stream:
        assert stream.decoder == "python", stream.decoder
        pcm = b"".join(chunk for chunk, _ in stream)
    assert pcm == load_audio(path), path
print("same")
"""


def test_without_pyav_each_wav_encoding_streams_to_what_load_audio_gives(tmp_path: Path) -> None:
    paths = []
    for encoding, rate, channels in [("u8", 8000, 1), ("s16", 44100, 2), ("s24", 48000, 2), ("f32", 22050, 1)]:
        path = tmp_path / f"{encoding}.wav"
        path.write_bytes(wav_bytes([sine(300, rate, 1.3, 0.5)] * channels, rate, encoding))
        paths.append(str(path))
    result = subprocess.run(
        [sys.executable, "-c", NO_PYAV, *paths], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "same\n"


def test_memory_holds_a_chunk_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as out:  # 60 s of 16 kHz stereo: 3.8 MB
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        for _ in range(60):
            out.writeframes(b"\x10\x00\xf0\xff" * 16000)
    tracemalloc.start()
    try:
        total = 0
        with iter_audio(path, chunk_ms=20) as stream:
            for chunk, _ in stream:
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 60 * 16000 * 2
    assert peak < 1_000_000, peak  # a whole-file read would be 3.8 MB


def test_errors_come_from_the_call_before_any_chunk(tmp_path: Path) -> None:
    truncated = wav_bytes([sine(440, 16000, 0.5)], 16000, "s16")[:-100]
    with pytest.raises(ValueError, match="truncated WAV file: the data chunk declares 16000 bytes, 15900 follow"):
        iter_audio(truncated)
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"this is not audio" * 50)
    expected = (ValueError, ImportError)
    with pytest.raises(expected, match=r"garbage\.mp3"):
        iter_audio(garbage)
    with pytest.raises(TypeError, match="chunk_ms: expected an int, got float"):
        iter_audio(truncated, chunk_ms=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample_rate: expected a positive int, got 0"):
        iter_audio(truncated, sample_rate=0)
    with pytest.raises(TypeError, match="source: expected a path or bytes, got int"):
        iter_audio(3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        iter_audio(tmp_path / "missing.wav")
