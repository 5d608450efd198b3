"""Audio helpers: load a file as the PCM a session sends, cut PCM into chunks, recognise a WAV header.

The service takes PCM signed 16-bit little-endian mono (16 kHz everywhere). :func:`load_audio` turns a WAV
file of any common encoding, channel count and rate into exactly that, with no extra dependency; MP3, OGG,
FLAC, M4A and the rest need the ``audio`` extra (PyAV, which bundles FFmpeg)::

    pcm = load_audio("speech.wav")                       # PCM s16le mono 16 kHz
    for chunk, end in chunk_pcm(pcm, chunk_ms=20):
        session.send_audio(chunk, end=end)

Channels are averaged into one; the rate is converted with a band-limited (windowed-sinc, polyphase)
resampler: pure Python for WAV, so the result does not depend on the extras installed, and FFmpeg's
swresample for the formats PyAV decodes.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import struct
import sys
from array import array
from operator import add
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence, Tuple, Union

from ._resample import resample

if TYPE_CHECKING:
    import av

__all__ = ["chunk_pcm", "is_wav", "load_audio"]

logger = logging.getLogger(__name__)

AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

INSTALL_HINT = 'pip install "avatarsdk[audio]"'

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_KSDATAFORMAT_SUFFIX = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"  # bytes 2..15 of the GUID
_WAV_TAG_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0055: "MP3",
    0x0161: "WMA",
}
_UNKNOWN_SIZE = 0xFFFFFFFF  # streamed WAV / RF64: the real size is elsewhere (or the rest of the file)

# Leading bytes of the compressed formats PyAV reads (checked when it is missing, to say so).
_SIGNATURES = (
    (0, b"ID3", "MP3"),
    (0, b"fLaC", "FLAC"),
    (0, b"OggS", "Ogg"),
    (4, b"ftyp", "MP4/M4A"),
    (0, b"FORM", "AIFF"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"\x30\x26\xb2\x75", "WMA"),
    (0, b"#!AMR", "AMR"),
    (0, b"caff", "CAF"),
)
_COMPRESSED_SUFFIXES = {
    ".mp3",
    ".ogg",
    ".oga",
    ".opus",
    ".flac",
    ".m4a",
    ".mp4",
    ".aac",
    ".aif",
    ".aiff",
    ".webm",
    ".mka",
    ".wma",
    ".amr",
    ".caf",
}


def is_wav(data: Union[bytes, bytearray, memoryview]) -> bool:
    """Whether ``data`` starts with a WAV file header (``RIFF....WAVE``, or its ``RIFX``/``RF64`` variants).

    Useful to catch a whole WAV file passed where raw PCM is expected: its header would be sent as sound.
    """
    head = bytes(data[:12])
    return len(head) == 12 and head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE"


def load_audio(source: AudioSource, *, sample_rate: int = 16000) -> bytes:
    """Load an audio file as PCM s16le mono at ``sample_rate`` Hz, ready for ``send_audio``.

    WAV needs nothing extra: PCM 8-bit (unsigned), 16, 24 and 32-bit integer, 32 and 64-bit IEEE float,
    ``WAVE_FORMAT_EXTENSIBLE`` and RF64, any channel count and rate. Other formats (MP3, OGG Vorbis/Opus,
    FLAC, M4A/AAC, and WAV files holding compressed audio) are decoded with PyAV when it is installed
    (``pip install "avatarsdk[audio]"``). Channels are averaged; the rate is converted with a band-limited
    resampler. The whole file is read into memory: this is for utterances and clips, not hours of audio.

    Args:
        source: A path, or the file's bytes.
        sample_rate: The rate of the PCM returned, in Hz (the session's ``sample_rate``).

    Returns:
        PCM signed 16-bit little-endian mono (an even number of bytes; empty for an empty file).

    Raises:
        ValueError: the data is not an audio file, is truncated or corrupt, or its encoding is not
            supported (the message names the file and what was wrong).
        ImportError: the file is compressed and PyAV is not installed (the message says what to install).
        OSError: the file cannot be read.
        TypeError: ``source`` or ``sample_rate`` has the wrong type.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise TypeError(f"sample_rate: expected an int, got {type(sample_rate).__name__}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: expected a positive number of Hz, got {sample_rate!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, suffix, data = "audio data", "", bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name, suffix = path, os.path.splitext(path)[1].lower()
        with open(path, "rb") as file:
            data = file.read()
    else:
        raise TypeError(f"source: expected a path or bytes, got {type(source).__name__}")
    logger.debug("loading %s (%d bytes) as %d Hz mono PCM", name, len(data), sample_rate)
    if data[:4] in (b"RIFF", b"RF64", b"RIFX"):
        wav = _parse_wav(data, name)
        if wav.encoding is not None:
            return _convert_wav(wav, sample_rate)
        if _pyav_available():
            return _decode_with_pyav(data, name, sample_rate, f"FFmpeg cannot decode its {wav.description} audio")
        raise ValueError(
            f"{name}: unsupported WAV encoding {wav.description}; PCM integer and IEEE float WAV are read"
            f" as they are, others need PyAV: {INSTALL_HINT}"
        )
    if _pyav_available():
        return _decode_with_pyav(data, name, sample_rate, "not a WAV file, and FFmpeg cannot decode it either")
    kind = _sniff(data) or (suffix.lstrip(".").upper() if suffix in _COMPRESSED_SUFFIXES else None)
    if kind is None:
        raise ValueError(f"{name}: not a WAV file (no RIFF/WAVE header), and not a recognised audio format")
    raise ImportError(f"{name}: reading {kind} audio needs PyAV (it bundles FFmpeg): {INSTALL_HINT}")


def chunk_pcm(
    pcm: Union[bytes, bytearray, memoryview], *, sample_rate: int = 16000, chunk_ms: int = 20
) -> Iterator[Tuple[bytes, bool]]:
    """Cut PCM s16le mono into chunks of ``chunk_ms`` milliseconds, for ``send_audio(chunk, end=end)``.

    Every chunk but the last has the same size (whole samples; at least one sample); ``end`` is ``True``
    exactly on the last chunk. Empty input yields one ``(b"", True)``, which still ends a request.

    Args:
        pcm: PCM signed 16-bit little-endian mono (an even number of bytes).
        sample_rate: Its rate in Hz.
        chunk_ms: Milliseconds of audio per chunk.

    Yields:
        ``(chunk, end)`` pairs.

    Raises:
        TypeError, ValueError: an argument is invalid (checked before the first chunk is yielded).
    """
    if not isinstance(pcm, (bytes, bytearray, memoryview)):
        raise TypeError(f"pcm: expected bytes, bytearray or memoryview, got {type(pcm).__name__}")
    for field, value in (("sample_rate", sample_rate), ("chunk_ms", chunk_ms)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{field}: expected an int, got {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{field}: expected a positive int, got {value!r}")
    data = bytes(pcm)
    if len(data) % 2:
        raise ValueError(f"pcm: expected PCM s16le (an even number of bytes), got {len(data)} bytes")
    size = max(1, sample_rate * chunk_ms // 1000) * 2
    return _chunks(data, size)


def _chunks(data: bytes, size: int) -> Iterator[Tuple[bytes, bool]]:
    if not data:
        yield b"", True
        return
    for start in range(0, len(data), size):
        yield data[start : start + size], start + size >= len(data)


# ------------------------------------------------------------------------------------------- WAV


@dataclasses.dataclass
class _Wav:
    channels: int
    rate: int
    width: int  # bytes per sample in the container
    encoding: Optional[str]  # "int" or "float"; None when the WAV holds compressed audio
    description: str
    data: memoryview


def _parse_wav(data: bytes, name: str) -> _Wav:
    """The format and the sample bytes of a WAV file (RIFF or RF64), with every size checked."""
    if len(data) < 12 or data[8:12] != b"WAVE":
        raise ValueError(f"{name}: not a WAV file (a RIFF header without WAVE)")
    if data[:4] == b"RIFX":
        raise ValueError(f"{name}: big-endian WAV (RIFX) is not supported")
    rf64 = data[:4] == b"RF64"
    view = memoryview(data)
    fmt: Optional[_Wav] = None
    samples: Optional[memoryview] = None
    ds64_data_size: Optional[int] = None
    pos = 12
    while pos + 8 <= len(data) and (fmt is None or samples is None):
        chunk_id = bytes(data[pos : pos + 4])
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"data":
            if size == _UNKNOWN_SIZE:
                size = ds64_data_size if rf64 and ds64_data_size is not None else len(data) - body
            if body + size > len(data):
                raise ValueError(
                    f"{name}: truncated WAV file: the data chunk declares {size} bytes, {len(data) - body} follow"
                )
            samples = view[body : body + size]
        elif body + size > len(data):
            raise ValueError(f"{name}: truncated WAV file: the {chunk_id!r} chunk runs past the end of the file")
        elif chunk_id == b"fmt ":
            fmt = _parse_fmt(view[body : body + size], name)
        elif chunk_id == b"ds64" and size >= 16:
            (ds64_data_size,) = struct.unpack_from("<Q", data, body + 8)
        pos = body + size + (size & 1)  # chunks are padded to an even size
    if fmt is None:
        raise ValueError(f"{name}: corrupt WAV file: no fmt chunk" + (" (truncated?)" if pos < len(data) else ""))
    if samples is None:
        raise ValueError(f"{name}: corrupt WAV file: no data chunk (truncated?)")
    return dataclasses.replace(fmt, data=samples)


def _parse_fmt(chunk: memoryview, name: str) -> _Wav:
    if len(chunk) < 16:
        raise ValueError(f"{name}: corrupt WAV file: the fmt chunk has {len(chunk)} bytes, expected at least 16")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", chunk)
    if tag == _WAVE_FORMAT_EXTENSIBLE:
        if len(chunk) < 40:
            raise ValueError(f"{name}: corrupt WAV file: WAVE_FORMAT_EXTENSIBLE with a {len(chunk)}-byte fmt chunk")
        guid = bytes(chunk[24:40])
        if guid[2:] != _KSDATAFORMAT_SUFFIX:
            raise ValueError(f"{name}: unsupported WAV encoding: WAVE_FORMAT_EXTENSIBLE sub-format {guid.hex()}")
        (tag,) = struct.unpack_from("<H", guid)
    if channels < 1 or rate < 1 or block_align < 1:
        raise ValueError(
            f"{name}: corrupt WAV file: {channels} channels, {rate} Hz, block align {block_align} in the fmt chunk"
        )
    width, rest = divmod(block_align, channels)
    if tag == _WAVE_FORMAT_PCM:
        encoding: Optional[str] = "int"
        description = f"{bits}-bit PCM"
        supported = width in (1, 2, 3, 4) and 0 < bits <= width * 8
    elif tag == _WAVE_FORMAT_IEEE_FLOAT:
        encoding = "float"
        description = f"{bits}-bit float"
        supported = width * 8 == bits and bits in (32, 64)
    else:
        encoding = None
        description = f"{_WAV_TAG_NAMES.get(tag, 'format')} (format tag 0x{tag:04X})"
        supported = True
    if encoding is not None and (rest or not supported):
        raise ValueError(
            f"{name}: unsupported or corrupt WAV format: {description}, {channels} channels, block align {block_align}"
        )
    return _Wav(channels, rate, width, encoding, description, memoryview(b""))


def _convert_wav(wav: _Wav, sample_rate: int) -> bytes:
    frame_bytes = wav.width * wav.channels
    usable = len(wav.data) - len(wav.data) % frame_bytes
    if usable != len(wav.data):
        logger.debug("ignoring %d bytes of a partial sample frame at the end", len(wav.data) - usable)
    raw = wav.data[:usable]
    if wav.encoding == "int" and wav.width == 2 and wav.channels == 1 and wav.rate == sample_rate:
        return bytes(raw)  # already what the service takes
    interleaved, full_scale = _decode_samples(wav, raw)
    mono = _downmix(interleaved, wav.channels, 1.0 / full_scale)
    return _to_s16(resample(mono, wav.rate, sample_rate) if wav.rate != sample_rate else mono)


def _decode_samples(wav: _Wav, raw: memoryview) -> Tuple[Sequence[float], float]:
    """The interleaved samples as numbers, and the value of full scale."""
    if wav.encoding == "float":
        return _native("f" if wav.width == 4 else "d", raw), 1.0
    if wav.width == 1:  # 8-bit WAV is unsigned: 128 is silence
        return _native("b", bytes(raw).translate(_FLIP_SIGN)), 128.0
    if wav.width == 2:
        return _native("h", raw), 32768.0
    if wav.width == 3:  # 24-bit: left-justify each sample in a 32-bit int (a zero low byte)
        widened = bytearray(len(raw) // 3 * 4)
        for byte in range(3):
            widened[byte + 1 :: 4] = raw[byte::3]
        raw = memoryview(widened)
    return _native(_INT32, raw), 2147483648.0


_FLIP_SIGN = bytes((b ^ 0x80) for b in range(256))


_INT32 = "i" if array("i").itemsize == 4 else "l"


def _native(typecode: str, data: Union[bytes, memoryview]) -> Sequence[float]:
    """Little-endian samples of ``typecode`` as an array in the machine's byte order."""
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "big" and values.itemsize > 1:
        values.byteswap()
    return values


def _downmix(interleaved: Sequence[float], channels: int, gain: float) -> Sequence[float]:
    """The average of the channels as ``array('d')``, times ``gain``."""
    total: Iterable[float] = interleaved[0::channels]
    for channel in range(1, channels):
        total = map(add, total, interleaved[channel::channels])
    factor = gain / channels
    return array("d", [value * factor for value in total])


def _to_s16(samples: Iterable[float]) -> bytes:
    """Full-scale floats (±1.0) as PCM s16le: rounded, clipped; NaN becomes silence."""
    out = array("h", [_clip(value * 32768.0) for value in samples])
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def _clip(value: float) -> int:
    if math.isnan(value):
        return 0
    if value >= 32767.0:
        return 32767
    if value <= -32768.0:
        return -32768
    return round(value)


# ----------------------------------------------------------------------------------------- PyAV


def _pyav_available() -> bool:
    try:
        import av  # noqa: F401, PLC0415 - optional extra
    except ImportError:
        return False
    return True


def _sniff(data: bytes) -> Optional[str]:
    for offset, magic, kind in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return kind
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:  # MPEG audio / ADTS frame sync
        return "MP3/AAC"
    return None


def _decode_with_pyav(data: bytes, name: str, sample_rate: int, failure: str) -> bytes:
    """Decode with FFmpeg (through PyAV): packed float at ``sample_rate``, then the channels averaged."""
    import av  # noqa: PLC0415 - optional extra

    pieces = bytearray()
    channels = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ValueError(f"{name}: no audio stream in the file")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", rate=sample_rate)  # keeps the channel layout
            logger.debug("%s: %s audio, %s Hz, decoded by FFmpeg", name, stream.codec_context.name, stream.rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    channels = _append_packed(pieces, out, channels, name)
            for out in resampler.resample(None):
                channels = _append_packed(pieces, out, channels, name)
    except av.error.FFmpegError as exc:
        reason = exc.strerror or str(exc)
        raise ValueError(f"{name}: {failure} ({reason})") from exc
    if not pieces:
        return b""
    return _to_s16(_downmix(_native("f", bytes(pieces)), channels, 1.0))


def _append_packed(pieces: bytearray, frame: av.AudioFrame, channels: int, name: str) -> int:
    count = len(frame.layout.channels)
    if channels and count != channels:
        raise ValueError(f"{name}: the channel count changes mid-stream ({channels} to {count})")
    pieces += bytes(frame.planes[0])[: frame.samples * count * 4]
    return count
