"""avatarsdk.audio: WAV variants through load_audio checked numerically, PyAV formats, chunk_pcm, is_wav."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import List, Optional, Sequence

import pytest
from conftest import needs_pyav

from avatarsdk import _resample
from avatarsdk.audio import chunk_pcm, is_wav, load_audio

GUID_SUFFIX = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
ENCODINGS = {  # name: (format tag, container bytes, bits)
    "u8": (1, 1, 8),
    "s16": (1, 2, 16),
    "s24": (1, 3, 24),
    "s32": (1, 4, 32),
    "f32": (3, 4, 32),
    "f64": (3, 8, 64),
}


# ------------------------------------------------------------------------------------------ helpers


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5, phase: float = 0.0) -> List[float]:
    step = 2 * math.pi * freq / rate
    return [amplitude * math.sin(i * step + phase) for i in range(int(rate * seconds))]


def encode_sample(value: float, encoding: str) -> bytes:
    if encoding == "u8":
        return bytes((max(0, min(255, round(value * 127) + 128)),))
    if encoding == "s16":
        return struct.pack("<h", round(value * 32767))
    if encoding == "s24":
        return round(value * 8388607).to_bytes(3, "little", signed=True)
    if encoding == "s32":
        return struct.pack("<i", round(value * 2147483647))
    if encoding == "f32":
        return struct.pack("<f", value)
    return struct.pack("<d", value)


def wav_bytes(
    channels: Sequence[Sequence[float]],
    rate: int,
    encoding: str = "s16",
    *,
    extensible: bool = False,
    extra_chunks: bytes = b"",
    data_size: Optional[int] = None,
) -> bytes:
    """A WAV file of ``channels`` (each a list of samples in ±1.0) in ``encoding``."""
    tag, width, bits = ENCODINGS[encoding]
    count = len(channels)
    block_align = width * count
    data = b"".join(encode_sample(channels[c][i], encoding) for i in range(len(channels[0])) for c in range(count))
    header = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, count, rate, rate * block_align, block_align, bits)
    if extensible:
        fmt = header + struct.pack("<HHI", 22, bits, (1 << count) - 1) + struct.pack("<H", tag) + GUID_SUFFIX
    else:
        fmt = header + (b"\x00\x00" if tag == 3 else b"")
    body = (
        b"WAVE"
        + chunk(b"fmt ", fmt)
        + extra_chunks
        + b"data"
        + struct.pack("<I", len(data) if data_size is None else data_size)
        + data
        + (b"\x00" if len(data) % 2 else b"")
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def chunk(chunk_id: bytes, payload: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def pcm_values(pcm: bytes) -> List[float]:
    """PCM s16le as floats in ±1.0."""
    values = array("h")
    values.frombytes(pcm)
    if sys.byteorder == "big":
        values.byteswap()
    return [v / 32768.0 for v in values]


def amplitude_at(samples: Sequence[float], freq: float, rate: int) -> float:
    """The amplitude of a sinusoid at ``freq`` in ``samples`` (Goertzel over a Hann window)."""
    n = len(samples)
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    weight = 0.0
    for i, x in enumerate(samples):
        w = 0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1))
        weight += w
        s1, s2 = x * w + coeff * s1 - s2, s1
    power = max(0.0, s1 * s1 + s2 * s2 - coeff * s1 * s2)
    return 2 * math.sqrt(power) / weight


def dominant_frequency(samples: Sequence[float], rate: int, candidates: Sequence[float]) -> float:
    return max(candidates, key=lambda f: amplitude_at(samples, f, rate))


def rms(samples: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in samples) / len(samples))


def db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-12))


# ---------------------------------------------------------------------------------------- WAV


def test_16_bit_mono_at_the_session_rate_passes_through_byte_for_byte() -> None:
    data = wav_bytes([sine(300, 16000, 0.25)], 16000)
    pcm = load_audio(data)
    assert pcm == data[44:]


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("extensible", [False, True], ids=["plain", "extensible"])
def test_each_wav_encoding_becomes_16_khz_mono_with_the_tone_kept(encoding: str, extensible: bool) -> None:
    left = sine(440, 44100, 0.5, amplitude=0.6)
    right = sine(440, 44100, 0.5, amplitude=0.2)
    pcm = load_audio(wav_bytes([left, right], 44100, encoding, extensible=extensible))
    out = pcm_values(pcm)
    assert abs(len(out) - 0.5 * 16000) <= 1  # 22050 samples at 44.1 kHz → 8000 at 16 kHz
    body = out[400:-400]  # away from the edges, where the filter sees the zero padding
    candidates = [440.0] + [f for f in range(100, 7900, 60) if abs(f - 440) > 60]
    assert dominant_frequency(body, 16000, candidates) == 440.0
    tolerance = 0.02 if encoding == "u8" else 0.005  # 8-bit quantisation noise
    assert amplitude_at(body, 440, 16000) == pytest.approx(0.4, abs=tolerance)  # (0.6 + 0.2) / 2
    assert amplitude_at(body, 1320, 16000) < 0.01  # no harmonic distortion to speak of


def test_24_bit_stereo_at_44_1_khz_matches_the_brief_example(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes([sine(440, 44100, 1.0)] * 2, 44100, "s24"))
    out = pcm_values(load_audio(path))
    assert abs(len(out) - 16000) <= 1
    assert amplitude_at(out[800:-800], 440, 16000) == pytest.approx(0.5, abs=0.003)
    assert load_audio(str(path)) == load_audio(path.read_bytes())


def test_a_tone_above_the_new_nyquist_frequency_is_removed_not_folded() -> None:
    # 12 kHz at 48 kHz would alias to 4 kHz at 16 kHz; a 1 kHz tone next to it must come through unchanged.
    high = load_audio(wav_bytes([sine(12000, 48000, 0.5)], 48000))
    low = load_audio(wav_bytes([sine(1000, 48000, 0.5)], 48000))
    high_out, low_out = pcm_values(high)[400:-400], pcm_values(low)[400:-400]
    assert db(amplitude_at(high_out, 4000, 16000) / 0.5) < -60
    assert db(rms(high_out) / (0.5 / math.sqrt(2))) < -60  # nothing else leaks through either
    assert amplitude_at(low_out, 1000, 16000) == pytest.approx(0.5, abs=0.003)


@pytest.mark.parametrize(("rate_in", "freq"), [(8000, 1000), (22050, 3000), (48000, 5000), (44101, 440)])
def test_other_rates_keep_the_tone_and_the_length(rate_in: int, freq: int) -> None:
    out = pcm_values(load_audio(wav_bytes([sine(freq, rate_in, 0.5)], rate_in)))
    assert abs(len(out) - 8000) <= 1
    body = out[400:-400]
    # the passband is flat to about 0.7 of the new Nyquist frequency (8 kHz): 5 kHz is within 3 %
    assert amplitude_at(body, freq, 16000) == pytest.approx(0.5, rel=0.03)


def test_output_rate_follows_sample_rate() -> None:
    data = wav_bytes([sine(500, 16000, 1.0)], 16000)
    for rate in (8000, 24000, 48000):
        out = pcm_values(load_audio(data, sample_rate=rate))
        assert abs(len(out) - rate) <= 1
        assert amplitude_at(out[rate // 10 : -rate // 10], 500, rate) == pytest.approx(0.5, abs=0.003)


def test_channels_are_averaged() -> None:
    tone = sine(440, 16000, 0.1)
    inverted = [-x for x in tone]
    assert set(load_audio(wav_bytes([tone, inverted], 16000))) == {0}  # L + R = 0
    constant = load_audio(wav_bytes([[1000 / 32767] * 10, [3000 / 32767] * 10, [-1000 / 32767] * 10], 16000))
    assert array("h", constant).tolist() == [1000] * 10  # (1000 + 3000 - 1000) / 3


def test_8_bit_is_unsigned_and_floats_are_clipped() -> None:
    u8 = b"RIFF" + struct.pack("<I", 4 + 24 + 11) + b"WAVE"
    u8 += chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 16000, 16000, 1, 8)) + chunk(b"data", bytes((128, 255, 0)))
    assert array("h", load_audio(u8)).tolist() == [0, 127 * 256, -32768]
    floats = wav_bytes([[0.5, 1.5, -2.0, float("nan"), float("inf"), -1.0]], 16000, "f32")
    assert array("h", load_audio(floats)).tolist() == [16384, 32767, -32768, 0, 32767, -32768]


def test_rf64_odd_chunks_and_streamed_sizes() -> None:
    samples = [0.25, -0.25, 0.5]
    expected = array("h", [round(0.25 * 32767), round(-0.25 * 32767), round(0.5 * 32767)]).tobytes()
    # an odd-sized chunk before the data is padded to an even size
    assert load_audio(wav_bytes([samples], 16000, extra_chunks=chunk(b"LIST", b"odd"))) == expected
    # a streamed WAV does not know its data size: 0xFFFFFFFF means "to the end of the file"
    assert load_audio(wav_bytes([samples], 16000, data_size=0xFFFFFFFF)) == expected
    # RF64: the real sizes are in the ds64 chunk
    plain = wav_bytes([samples], 16000)
    fmt = plain[12:36]
    ds64 = chunk(b"ds64", struct.pack("<QQQI", 0, len(expected), 3, 0))
    rf64 = b"RF64" + b"\xff\xff\xff\xff" + b"WAVE" + ds64 + fmt + b"data\xff\xff\xff\xff" + expected + b"junk"
    assert is_wav(rf64)
    assert load_audio(rf64) == expected
    # no samples at all
    assert load_audio(wav_bytes([[]], 16000)) == b""


def test_a_partial_last_sample_frame_is_dropped() -> None:
    data = wav_bytes([[0.5] * 4, [0.5] * 4], 16000)
    cut = data[:-2]  # half of the last stereo frame
    cut = cut[:40] + struct.pack("<I", len(data) - 44 - 2) + cut[44:]
    assert load_audio(cut) == load_audio(data)[:-2]


def test_pcm_with_12_valid_bits_in_16_is_read_as_16_bit() -> None:
    data = wav_bytes([[0.5, -0.5]], 16000)
    twelve = data[:34] + struct.pack("<H", 12) + data[36:]
    assert load_audio(twelve) == load_audio(data)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a WAV file"),
        (b"RIFX\x00\x00\x00\x00WAVE", "big-endian WAV"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", r"truncated WAV file: the b'fmt ' chunk"),
    ],
)
def test_broken_headers_are_value_errors_that_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_audio(data)
    assert info.value.args[0].startswith("audio data: ")


def test_a_truncated_file_names_the_file_and_the_sizes(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    path.write_bytes(wav_bytes([sine(440, 16000, 0.1)], 16000)[:1000])
    with pytest.raises(ValueError, match=r"cut\.wav: truncated WAV file: the data chunk declares 3200 bytes, 956"):
        load_audio(path)
    path.write_bytes(wav_bytes([sine(440, 16000, 0.1)], 16000)[:30])
    with pytest.raises(ValueError, match=r"cut\.wav: truncated WAV file"):
        load_audio(path)


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16), "0 channels"),
        (struct.pack("<HHIIHH", 3, 1, 16000, 32000, 2, 16), "16-bit float"),
        (struct.pack("<HHIIHH", 1, 2, 16000, 96000, 3, 24), "block align 3"),
        (struct.pack("<HHIIHH", 1, 1, 16000, 80000, 5, 40), "40-bit PCM"),
        (struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 32000, 2, 16), "WAVE_FORMAT_EXTENSIBLE with a 16-byte"),
        (struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 32000, 2, 16) + bytes(24), "sub-format"),
        (b"\x01\x00", "fmt chunk has 2 bytes"),
    ],
)
def test_impossible_formats_are_value_errors(fmt: bytes, message: str) -> None:
    data = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + chunk(b"fmt ", fmt) + chunk(b"data", bytes(8))
    with pytest.raises(ValueError, match=message):
        load_audio(data)


@needs_pyav
def test_garbage_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=r"noise\.wav: not a WAV file, and FFmpeg cannot decode it"):
        load_audio(path)
    with pytest.raises(ValueError, match="audio data: not a WAV file"):
        load_audio(b"")


def test_argument_types_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="source"):
        load_audio(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sample_rate"):
        load_audio(b"", sample_rate=16000.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(b"", sample_rate=0)
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")


# --------------------------------------------------------------------------------------- resampler


def test_the_pure_python_resampler_is_fast_enough() -> None:
    stereo = wav_bytes([[0.0] * 10] * 2, 48000)  # header only; the samples come next
    samples = array("h", [round(8000 * math.sin(i * 0.05)) for i in range(48000 * 10 * 2)])
    data = stereo[:40] + struct.pack("<I", len(samples) * 2) + samples.tobytes()
    started = time.perf_counter()
    out = load_audio(data)
    elapsed = time.perf_counter() - started
    assert len(out) == 16000 * 10 * 2
    assert elapsed < 5.0, f"10 s of 48 kHz stereo took {elapsed:.2f} s"  # about 0.6 s on CI's machine


def test_resampler_edge_cases() -> None:
    assert list(_resample.resample([1.0, 2.0], 16000, 16000)) == [1.0, 2.0]
    assert len(_resample.resample([], 48000, 16000)) == 0
    assert len(_resample.resample([0.0], 48000, 16000)) == 1
    dc = _resample.resample([0.25] * 4800, 48000, 16000)
    assert all(abs(x - 0.25) < 1e-9 for x in dc[100:-100])  # every phase has unit gain at DC
    with pytest.raises(ValueError, match="positive"):
        _resample.resample([0.0], 0, 16000)


# -------------------------------------------------------------------------------------------- PyAV


def encode_with_pyav(container_format: str, codec: str, rate: int, channels: Sequence[Sequence[float]]) -> bytes:
    """Encode float channels with PyAV (FFmpeg) into an in-memory file."""
    import av

    layout = "mono" if len(channels) == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout  # type: ignore[union-attr]
        frame_size = stream.codec_context.frame_size or 1024  # type: ignore[union-attr]
        total = len(channels[0])
        for start in range(0, total, frame_size):
            count = min(frame_size, total - start)
            values = array("f", [channels[c][start + i] for i in range(count) for c in range(len(channels))])
            frame = av.AudioFrame(format="flt", layout=layout, samples=count)
            frame.planes[0].update(values.tobytes())
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):  # type: ignore[union-attr]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            container.mux(packet)
    return buffer.getvalue()


@needs_pyav
@pytest.mark.parametrize(
    ("container_format", "codec", "rate", "suffix", "slack"),
    [
        ("mp3", "mp3", 44100, ".mp3", 1),
        ("flac", "flac", 44100, ".flac", 1),
        ("ogg", "libopus", 48000, ".ogg", 1),
        ("ipod", "aac", 44100, ".m4a", 400),  # AAC keeps its encoder delay (priming samples)
    ],
)
def test_compressed_formats_decode_with_pyav(
    tmp_path: Path, container_format: str, codec: str, rate: int, suffix: str, slack: int
) -> None:
    data = encode_with_pyav(container_format, codec, rate, [sine(440, rate, 1.0, 0.6), sine(440, rate, 1.0, 0.2)])
    path = tmp_path / f"tone{suffix}"
    path.write_bytes(data)
    out = pcm_values(load_audio(path))
    assert abs(len(out) - 16000) <= slack
    body = out[2000:-2000]
    candidates = [440.0] + [f for f in range(100, 7900, 60) if abs(f - 440) > 60]
    assert dominant_frequency(body, 16000, candidates) == 440.0
    assert amplitude_at(body, 440, 16000) == pytest.approx(0.4, abs=0.02)  # the channels' average


@needs_pyav
def test_a_wav_file_with_compressed_audio_decodes_with_pyav() -> None:
    data = encode_with_pyav("wav", "pcm_alaw", 8000, [sine(440, 8000, 0.5)])
    assert data[:4] == b"RIFF" and struct.unpack_from("<H", data, 20) == (6,)  # format tag 6: A-law
    out = pcm_values(load_audio(data))
    assert abs(len(out) - 8000) <= 1
    assert amplitude_at(out[1000:-1000], 440, 16000) == pytest.approx(0.5, abs=0.02)


NO_PYAV = """\
import sys
sys.modules["av"] = None  # as if the audio extra were not installed
from avatarsdk.audio import load_audio

wav, mp3, alaw = (open(p, "rb").read() for p in sys.argv[1:4])
sys.stdout.buffer.write(load_audio(wav))
for source in (mp3, sys.argv[2], b"not audio at all", alaw):
    try:
        load_audio(source)
    except (ImportError, ValueError) as exc:
        print(f"\\n{type(exc).__name__}: {exc}", file=sys.stderr)
"""


@needs_pyav
def test_without_pyav_wav_still_loads_and_compressed_formats_say_what_to_install(tmp_path: Path) -> None:
    wav = wav_bytes([sine(440, 44100, 0.3)] * 2, 44100, "s24")
    files = {
        "a.wav": wav,
        "a.mp3": encode_with_pyav("mp3", "mp3", 44100, [sine(440, 44100, 0.3)]),
        "b.wav": encode_with_pyav("wav", "pcm_alaw", 8000, [sine(440, 8000, 0.1)]),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-c", NO_PYAV, *(str(tmp_path / n) for n in files)], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == load_audio(wav)  # the same PCM with or without the extra
    errors = [line for line in result.stderr.decode().splitlines() if line]
    hint = 'pip install "avatarsdk[audio]"'
    assert errors[0] == f"ImportError: audio data: reading MP3 audio needs PyAV (it bundles FFmpeg): {hint}"
    assert errors[1].startswith(f"ImportError: {tmp_path / 'a.mp3'}: reading MP3 audio needs PyAV")
    assert errors[2].startswith("ValueError: audio data: not a WAV file (no RIFF/WAVE header)")
    assert errors[3].startswith("ValueError: audio data: unsupported WAV encoding A-law (format tag 0x0006)")
    assert errors[3].endswith(hint)


# ------------------------------------------------------------------------------------- chunk_pcm


def test_chunk_pcm_cuts_whole_chunks_and_marks_only_the_last() -> None:
    pcm = bytes(range(256)) * 125  # 32000 bytes: 1 s at 16 kHz
    chunks = list(chunk_pcm(pcm))
    assert [len(c) for c, _ in chunks] == [640] * 50
    assert [end for _, end in chunks] == [False] * 49 + [True]
    assert b"".join(c for c, _ in chunks) == pcm

    uneven = list(chunk_pcm(pcm[:1000], chunk_ms=10))  # 320-byte chunks
    assert [len(c) for c, _ in uneven] == [320, 320, 320, 40]
    assert [end for _, end in uneven] == [False, False, False, True]

    assert list(chunk_pcm(b"")) == [(b"", True)]
    assert list(chunk_pcm(b"\x01\x02", chunk_ms=100)) == [(b"\x01\x02", True)]
    assert [len(c) for c, _ in chunk_pcm(bytes(2000), sample_rate=22050, chunk_ms=20)] == [882, 882, 236]
    assert [len(c) for c, _ in chunk_pcm(bytes(6), sample_rate=8000, chunk_ms=1)] == [6]  # less than one chunk
    assert [len(c) for c, _ in chunk_pcm(bytes(10), sample_rate=1000, chunk_ms=1)] == [2] * 5  # one sample each
    assert list(chunk_pcm(memoryview(b"\x00\x01"))) == [(b"\x00\x01", True)]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"pcm": b"\x00"}, ValueError, "even number of bytes"),
        ({"pcm": "text"}, TypeError, "pcm"),
        ({"pcm": b"", "chunk_ms": 0}, ValueError, "chunk_ms"),
        ({"pcm": b"", "chunk_ms": 2.5}, TypeError, "chunk_ms"),
        ({"pcm": b"", "sample_rate": -1}, ValueError, "sample_rate"),
        ({"pcm": b"", "sample_rate": True}, TypeError, "sample_rate"),
    ],
)
def test_chunk_pcm_checks_its_arguments_before_yielding(kwargs: dict, error: type, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(error, match=message):
        chunk_pcm(**kwargs)  # raises on the call, not on the first next()


# ------------------------------------------------------------------------------------------- is_wav


def test_is_wav_recognises_wav_headers_only() -> None:
    assert is_wav(wav_bytes([[0.0]], 16000))
    assert is_wav(bytearray(b"RIFF\x00\x00\x00\x00WAVE"))
    assert is_wav(memoryview(b"RIFX\x00\x00\x00\x00WAVEfmt "))
    assert not is_wav(b"RIFF\x00\x00\x00\x00AVI ")
    assert not is_wav(b"RIFF\x00\x00\x00\x00WAV")
    assert not is_wav(bytes(640))  # silence as PCM
    assert not is_wav(b"")
