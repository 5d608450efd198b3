"""avatarsdk._opus: PCM to one continuous Ogg Opus stream per request, checked page by page and decoded back."""

from __future__ import annotations

import dataclasses
import gc
import io
import math
import operator
import random
import struct
import subprocess
import sys
import time
import tracemalloc
from array import array
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import pytest

from avatarsdk._opus import SAMPLE_RATES, OggOpusStreamEncoder, ogg_crc

av = pytest.importorskip("av", reason='needs PyAV: pip install "avatarsdk[audio]"')

BOS, EOS, CONTINUED = 0x02, 0x04, 0x01


# ------------------------------------------------------------------------------------------ helpers


def speech(rate: int, seconds: float) -> array[int]:
    """A voiced, speech-like test signal: four harmonics of a gliding 140 Hz pitch, syllable-rate envelope."""
    out = array("h")
    for i in range(int(rate * seconds)):
        t = i / rate
        envelope = math.sin(math.pi * t / seconds) * (0.55 + 0.45 * math.sin(2 * math.pi * 4 * t))
        phase = 2 * math.pi * (140 * t - 40 / (3 * math.pi) * math.cos(3 * math.pi * t))  # pitch 140 +- 40 Hz
        value = sum(amplitude * math.sin(k * phase) for k, amplitude in ((1, 0.5), (2, 0.3), (3, 0.2), (5, 0.1)))
        out.append(int(12000 * envelope * value))
    return out


def tones(rate: int, seconds: float) -> array[int]:
    """Three steady tones under a slow tremolo: music-like, hard for VBR to keep to a bitrate."""
    out = array("h")
    for i in range(int(rate * seconds)):
        t = i / rate
        value = sum(a * math.sin(2 * math.pi * f * t + p) for f, a, p in ((220, 0.3, 0), (660, 0.2, 1), (1500, 0.1, 2)))
        out.append(int(32767 * (0.5 + 0.5 * math.sin(2 * math.pi * 3 * t)) * value))
    return out


def le_bytes(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def encode_in(encoder: OggOpusStreamEncoder, pcm: bytes, sizes: Iterable[int]) -> List[bytes]:
    """Feed ``pcm`` in chunks of ``sizes`` bytes, ``end=True`` with the last; what each call returned."""
    outs = []
    pos = 0
    for size in sizes:
        chunk = pcm[pos : pos + size]
        pos += size
        outs.append(encoder.encode(chunk, end=pos >= len(pcm)))
        if pos >= len(pcm):
            return outs
    raise AssertionError("sizes ran out before the PCM")


def every(size: int) -> Iterable[int]:
    while True:
        yield size


def reference_crc(data: bytes) -> int:
    """The Ogg CRC the slow, obvious way (RFC 3533: polynomial 0x04C11DB7, MSB first, init 0, no final xor)."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


@dataclasses.dataclass
class Page:
    flags: int
    granule: int
    serial: int
    sequence: int
    packets: List[bytes]


def parse_pages(data: bytes) -> List[Page]:
    """Split ``data`` into Ogg pages, checking each page's framing and CRC; it must end on a page boundary."""
    pages = []
    pos = 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS", f"no capture pattern at {pos}"
        version, flags, granule, serial, sequence, crc, count = struct.unpack_from("<BBqIIIB", data, pos + 4)
        assert version == 0
        assert not flags & CONTINUED, "a packet continued across pages"
        lacing = data[pos + 27 : pos + 27 + count]
        assert count and lacing[-1] < 255, "the last packet on a page is incomplete"
        body = pos + 27 + count
        end = body + sum(lacing)
        assert end <= len(data), "truncated page"
        raw = bytearray(data[pos:end])
        raw[22:26] = b"\x00\x00\x00\x00"
        assert reference_crc(bytes(raw)) == crc, f"bad CRC on page {sequence}"
        packets, start, size = [], body, 0
        for value in lacing:
            size += value
            if value < 255:
                packets.append(data[start : start + size])
                start, size = start + size, 0
        pages.append(Page(flags, granule, serial, sequence, packets))
        pos = end
    return pages


def opus_samples(packet: bytes) -> int:
    """48 kHz samples an Opus packet decodes to, from its TOC byte (RFC 6716 section 3.1)."""
    config, code = packet[0] >> 3, packet[0] & 3
    if config < 12:
        frame = (480, 960, 1920, 2880)[config % 4]
    elif config < 16:
        frame = (480, 960)[config % 2]
    else:
        frame = (120, 240, 480, 960)[config % 4]
    return frame * (1 if code == 0 else 2 if code in (1, 2) else packet[1] & 0x3F)


@dataclasses.dataclass
class Stream:
    serial: int
    pre_skip: int
    input_rate: int
    pages: List[Page]


def check_stream(data: bytes) -> Stream:
    """Check ``data`` is one complete Ogg Opus stream (RFC 7845) and return its header fields and pages."""
    pages = parse_pages(data)
    assert len(pages) >= 3, "an Opus stream has two header pages and at least one audio page"
    serial = pages[0].serial
    assert [p.serial for p in pages] == [serial] * len(pages)
    assert [p.sequence for p in pages] == list(range(len(pages)))
    assert [bool(p.flags & BOS) for p in pages] == [True] + [False] * (len(pages) - 1)
    assert [bool(p.flags & EOS) for p in pages] == [False] * (len(pages) - 1) + [True]
    head, tags = pages[0].packets, pages[1].packets
    assert len(head) == 1 and len(tags) == 1
    magic, version, channels, pre_skip, input_rate, gain, family = struct.unpack("<8sBBHIhB", head[0])
    assert (magic, version, channels, gain, family, len(head[0])) == (b"OpusHead", 1, 1, 0, 0, 19)
    assert tags[0][:8] == b"OpusTags"
    (vendor_length,) = struct.unpack_from("<I", tags[0], 8)
    assert struct.unpack_from("<I", tags[0], 12 + vendor_length) == (0,)  # no user comments
    assert pages[0].granule == pages[1].granule == 0
    # Audio pages: each granule position counts the samples of the packets completed so far, the last one
    # trimmed (never below the previous page's); granule positions never decrease.
    decoded = 0
    for page in pages[2:]:
        assert page.packets
        previous = decoded
        decoded += sum(opus_samples(packet) for packet in page.packets)
        if page.flags & EOS:
            assert previous <= page.granule <= decoded
        else:
            assert page.granule == decoded
    return Stream(serial, pre_skip, input_rate, pages)


def decode(data: bytes, rate: int) -> Tuple[int, array[int]]:
    """Decode with FFmpeg (its ogg demuxer applies pre-skip and end trimming): the 48 kHz sample count, and
    the audio resampled back to ``rate`` as s16."""
    samples48 = 0
    out = array("h")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(stream):
            samples48 += frame.samples
            for piece in resampler.resample(frame):
                out.frombytes(bytes(piece.planes[0])[: piece.samples * 2])
        for piece in resampler.resample(None):
            out.frombytes(bytes(piece.planes[0])[: piece.samples * 2])
    if sys.byteorder == "big":
        out.byteswap()
    return samples48, out


def correlation(a: Sequence[int], b: Sequence[int]) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return float(sum(map(operator.mul, a, b)) / math.sqrt(sum(map(operator.mul, a, a)) * sum(map(operator.mul, b, b))))


def best_alignment(reference: Sequence[int], decoded: Sequence[int], max_lag: int = 3) -> Tuple[float, int]:
    """The highest normalised correlation over lags of +-max_lag samples, and its lag."""
    return max(
        (correlation(reference[max(0, -lag) :], decoded[max(0, lag) :]), lag) for lag in range(-max_lag, max_lag + 1)
    )


def assert_round_trip(
    data: bytes, reference: array[int], rate: int, frame_ms: float = 20, *, phase_shifted: bool = False
) -> None:
    """Decoded, the stream lasts as long as ``reference`` and matches it sample for sample (correlation > 0.9
    within 2 samples of where pre-skip puts it; libopus's VoIP mode high-passes the audio, so there only a
    looser match a few samples late)."""
    samples48, decoded = decode(data, rate)
    scale = 48000 // rate
    assert abs(samples48 - len(reference) * scale) < frame_ms * 48  # within one frame (in fact exact)
    score, lag = best_alignment(reference, decoded, max_lag=8 if phase_shifted else 3)
    assert score > (0.85 if phase_shifted else 0.9), f"correlation {score:.3f} at lag {lag}"
    assert phase_shifted or abs(lag) <= 2, f"pre-skip did not align the audio (lag {lag})"


# ------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("rate", SAMPLE_RATES)
def test_round_trip_at_each_rate(rate: int) -> None:
    reference = speech(rate, 1.0)
    encoder = OggOpusStreamEncoder(sample_rate=rate)
    data = b"".join(encode_in(encoder, le_bytes(reference), every(rate // 50 * 2)))  # 20 ms chunks
    stream = check_stream(data)
    assert stream.input_rate == rate
    assert stream.pre_skip == 312  # libopus's lookahead at 48 kHz: 6.5 ms
    assert stream.pages[-1].granule == stream.pre_skip + len(reference) * (48000 // rate)
    samples48, _ = decode(data, rate)
    assert samples48 == len(reference) * (48000 // rate)
    assert_round_trip(data, reference, rate)


@pytest.mark.parametrize("frame_ms", [2.5, 5, 10, 40, 60])
def test_round_trip_with_each_frame_duration(frame_ms: float) -> None:
    reference = speech(16000, 0.5)
    encoder = OggOpusStreamEncoder(sample_rate=16000, frame_duration_ms=frame_ms)
    data = b"".join(encode_in(encoder, le_bytes(reference), every(640)))
    stream = check_stream(data)
    frame48 = round(frame_ms * 48)
    assert {opus_samples(p) for page in stream.pages[2:] for p in page.packets} == {frame48}
    # Under 10 ms libopus codes CELT only, with its 2.5 ms lookahead.
    assert stream.pre_skip == (120 if frame_ms < 10 else 312)
    assert_round_trip(data, reference, 16000, frame_ms)


@pytest.mark.parametrize("application", ["audio", "voip", "lowdelay", "restricted_lowdelay"])
def test_applications_and_their_pre_skip(application: str) -> None:
    reference = speech(16000, 0.5)
    encoder = OggOpusStreamEncoder(sample_rate=16000, application=application)
    data = b"".join(encode_in(encoder, le_bytes(reference), every(640)))
    assert check_stream(data).pre_skip == (120 if "lowdelay" in application else 312)
    assert_round_trip(data, reference, 16000, phase_shifted=application == "voip")


@pytest.mark.parametrize("samples", [1, 7, 319, 320, 321, 1000])
def test_short_requests_decode_to_their_exact_length(samples: int) -> None:
    pcm = le_bytes(speech(16000, 0.1)[:samples])
    data = OggOpusStreamEncoder(sample_rate=16000).encode(pcm, end=True)
    stream = check_stream(data)
    assert stream.pages[-1].granule == stream.pre_skip + samples * 3
    assert decode(data, 16000)[0] == samples * 3


def test_bitrate_default_is_libopus_auto_and_a_set_bitrate_is_used() -> None:
    pcm = le_bytes(tones(16000, 2.0))
    for bitrate in (0, 12000, 64000):
        encoder = OggOpusStreamEncoder(sample_rate=16000, bitrate=bitrate)
        assert encoder.bitrate == (bitrate or 60 * 50 + 16000)  # OPUS_AUTO: 60 bits a frame + 1 a sample
        stream = check_stream(b"".join(encode_in(encoder, pcm, every(640))))
        bits = 8 * sum(len(packet) for page in stream.pages[2:] for packet in page.packets)
        # Constrained VBR (libopus's default) keeps to the target; FFmpeg's default, unconstrained, spends about
        # twice as much on these tones.
        assert 0.7 < bits / 2 / encoder.bitrate < 1.3  # measured 1.03 to 1.13
    assert OggOpusStreamEncoder(sample_rate=48000, frame_duration_ms=10).bitrate == 60 * 100 + 48000


# --------------------------------------------------------------------------------------- stream shape


def test_odd_sized_chunks_make_one_continuous_stream_of_whole_pages() -> None:
    rng = random.Random(7)
    reference = speech(16000, 1.0)
    pcm = le_bytes(reference)
    encoder = OggOpusStreamEncoder(sample_rate=16000)
    sizes = (2 * rng.choice([1, 3, 17, 99, 160, 333, 641, 1201]) for _ in range(len(pcm)))
    outs = encode_in(encoder, pcm, sizes)
    for out in outs:
        parse_pages(out)  # every return is whole pages (or nothing)
    data = b"".join(outs)
    assert encoder.stream_bytes == len(data)
    stream = check_stream(data)
    assert stream.pages[-1].granule == stream.pre_skip + len(reference) * 3
    assert_round_trip(data, reference, 16000)


def test_pages_are_flushed_per_chunk_with_no_packet_held_back() -> None:
    pcm = le_bytes(speech(16000, 0.2))
    encoder = OggOpusStreamEncoder(sample_rate=16000)
    outs = encode_in(encoder, pcm, every(640))  # 20 ms chunks, 20 ms packets
    pages = [parse_pages(out) for out in outs]
    assert [len(p) for p in pages] == [3] + [1] * 9  # headers with the first audio, then a page a chunk
    assert [len(p[-1].packets) for p in pages] == [1] * 9 + [2]  # the flush adds the lookahead's packet
    fed = 0
    for page_list in pages[:-1]:
        fed += 320
        assert page_list[-1].granule == fed * 3  # every packet the chunk completed is out

    encoder = OggOpusStreamEncoder(sample_rate=16000)
    outs = encode_in(encoder, pcm, every(320))  # 10 ms chunks: a page every other chunk
    assert [len(parse_pages(out)) for out in outs[:6]] == [2, 1, 0, 1, 0, 1]


def test_big_chunks_fill_pages_up_to_255_lacing_values() -> None:
    encoder = OggOpusStreamEncoder(sample_rate=16000, frame_duration_ms=2.5)
    data = encoder.encode(le_bytes(speech(16000, 3.0)), end=True)  # 1200 packets in one call
    stream = check_stream(data)
    audio = stream.pages[2:]
    assert len(audio) > 4
    assert all(len(page.packets) == 255 for page in audio[:-1])
    assert decode(data, 16000)[0] == 3 * 48000


def test_end_starts_a_new_stream_with_a_new_serial() -> None:
    encoder = OggOpusStreamEncoder(sample_rate=24000)
    first_ref, second_ref = speech(24000, 0.4), speech(24000, 0.3)
    first = b"".join(encode_in(encoder, le_bytes(first_ref), every(960)))
    assert not encoder.active
    assert encoder.stream_bytes == len(first)  # the finished stream's size, until the next one starts
    second = b"".join(encode_in(encoder, le_bytes(second_ref), every(960)))
    one, two = check_stream(first), check_stream(second)
    assert one.serial != two.serial
    assert_round_trip(first, first_ref, 24000)
    assert_round_trip(second, second_ref, 24000)


def test_reset_mid_stream_drops_it_and_the_next_audio_starts_a_new_stream() -> None:
    reference = speech(16000, 0.3)
    pcm = le_bytes(reference)
    encoder = OggOpusStreamEncoder(sample_rate=16000)
    partial = encoder.encode(pcm[:3000]) + encoder.encode(pcm[3000:5000])
    assert (encoder.active, encoder.stream_bytes) == (True, len(partial))
    dropped = parse_pages(partial)
    assert not any(page.flags & EOS for page in dropped)  # the server sees it cut off (with an interrupt)
    encoder.reset()
    assert (encoder.active, encoder.stream_bytes) == (False, 0)
    encoder.reset()  # idempotent
    data = b"".join(encode_in(encoder, pcm, every(640)))
    stream = check_stream(data)
    assert stream.serial != dropped[0].serial
    assert_round_trip(data, reference, 16000)


def test_nothing_to_send_without_audio() -> None:
    encoder = OggOpusStreamEncoder(sample_rate=16000)
    assert encoder.encode(b"") == b""
    assert encoder.encode(b"", end=True) == b""  # an empty request: no stream at all
    assert (encoder.active, encoder.stream_bytes) == (False, 0)
    data = encoder.encode(b"\x01\x00" * 400) + encoder.encode(b"") + encoder.encode(b"", end=True)
    assert decode(data, 16000)[0] == 1200


def test_accepts_bytearray_and_memoryviews_of_any_format() -> None:
    samples = speech(16000, 0.1)
    pcm = le_bytes(samples)
    expected = len(samples) * 3
    for value in (bytearray(pcm), memoryview(pcm), memoryview(array("h", pcm))):
        data = OggOpusStreamEncoder(sample_rate=16000).encode(value, end=True)
        assert decode(data, 16000)[0] == expected


def test_ogg_crc_matches_the_reference() -> None:
    rng = random.Random(3)
    assert ogg_crc(b"") == 0
    for size in (1, 4, 27, 255, 1000):
        data = bytes(rng.randrange(256) for _ in range(size))
        assert ogg_crc(data) == reference_crc(data)


# ------------------------------------------------------------------------------------ memory and speed


def retained_memory(seconds: int) -> Tuple[int, int]:
    """Traced bytes still held, and the peak, after encoding ``seconds`` of audio in 20 ms chunks."""
    chunk = le_bytes(speech(16000, 0.02))  # a cheap signal: one 20 ms chunk over and over
    encoder = OggOpusStreamEncoder(sample_rate=16000)
    encoder.encode(chunk)  # open the stream before measuring
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(seconds * 50):
            encoder.encode(chunk)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    encoder.encode(b"", end=True)
    return current - base, peak - base


def test_memory_stays_flat_over_a_long_stream() -> None:
    # PyAV before 17.1 leaks the message of every FFmpegError it raises (PyAV #2282, fixed by #2283), and its
    # audio encoder raises one EAGAIN inside each encode() call: ~81 bytes a call on CPython. Newer: nothing.
    pyav_leak = 0 if tuple(int(part) for part in av.__version__.split(".")[:2]) >= (17, 1) else 100
    short_current, short_peak = retained_memory(30)
    long_current, long_peak = retained_memory(180)
    extra_calls = (180 - 30) * 50
    assert long_current - short_current <= pyav_leak * extra_calls + 16 * 1024
    assert long_peak - short_peak <= pyav_leak * extra_calls + 16 * 1024
    assert short_peak <= pyav_leak * 30 * 50 + 64 * 1024


def test_far_faster_than_real_time() -> None:
    pcm = le_bytes(speech(16000, 2.0)) * 5  # 10 s
    encoder = OggOpusStreamEncoder(sample_rate=16000)
    started = time.process_time()
    encode_in(encoder, pcm, every(640))
    assert time.process_time() - started < 2.0  # measured ~0.05 s: a 40x margin for slow machines


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"sample_rate": 44100}, ValueError, "sample_rate"),
        ({"sample_rate": 0}, ValueError, "sample_rate"),
        ({"sample_rate": 16000.0}, TypeError, "sample_rate"),
        ({"sample_rate": True}, TypeError, "sample_rate"),
        ({"bitrate": -1}, ValueError, "bitrate"),
        ({"bitrate": 499}, ValueError, "bitrate"),
        ({"bitrate": 256001}, ValueError, "bitrate"),
        ({"bitrate": 32000.0}, TypeError, "bitrate"),
        ({"frame_duration_ms": 0}, ValueError, "frame_duration_ms"),
        ({"frame_duration_ms": 15}, ValueError, "frame_duration_ms"),
        ({"frame_duration_ms": 120}, ValueError, "frame_duration_ms"),
        ({"frame_duration_ms": "20"}, TypeError, "frame_duration_ms"),
        ({"frame_duration_ms": True}, TypeError, "frame_duration_ms"),
        ({"application": "music"}, ValueError, "application"),
        ({"application": "AUDIO"}, ValueError, "application"),
        ({"application": None}, TypeError, "application"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs: Dict[str, Any], error: type, name: str) -> None:
    settings: Dict[str, Any] = {"sample_rate": 16000, **kwargs}
    with pytest.raises(error, match=rf"^{name}: ") as caught:
        OggOpusStreamEncoder(**settings)
    if error is ValueError:
        assert str(caught.value).endswith(f"got {kwargs[name]!r}")
    else:
        assert str(caught.value).endswith(f"got {type(kwargs[name]).__name__}")


def test_odd_length_pcm_is_refused_and_consumes_nothing() -> None:
    reference = speech(16000, 0.2)
    pcm = le_bytes(reference)
    encoder = OggOpusStreamEncoder(sample_rate=16000)
    first = encoder.encode(pcm[:1000])
    with pytest.raises(ValueError, match=r"^pcm: .*333 bytes"):
        encoder.encode(b"\x00" * 333)
    with pytest.raises(ValueError, match=r"^pcm: "):
        encoder.encode(b"\x00" * 3, end=True)
    with pytest.raises(TypeError, match=r"^pcm: .*str"):
        encoder.encode("PCM")  # type: ignore[arg-type]
    assert (encoder.active, encoder.stream_bytes) == (True, len(first))
    data = first + encoder.encode(pcm[1000:], end=True)
    check_stream(data)
    assert_round_trip(data, reference, 16000)


def test_without_pyav_construction_raises_import_error_with_the_install_hint() -> None:
    code = (
        "import sys\n"
        "sys.modules['av'] = None\n"
        "from avatarsdk._opus import OggOpusStreamEncoder\n"  # importing needs no PyAV
        "try:\n"
        "    OggOpusStreamEncoder(sample_rate=16000)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert 'pip install "avatarsdk[audio]"' in result.stdout
    assert "PyAV" in result.stdout
