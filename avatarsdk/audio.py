"""Audio helpers: load a file as the PCM a session sends, cut PCM into chunks, recognise a WAV header.

The service takes PCM signed 16-bit little-endian mono (16 kHz everywhere). :func:`load_audio` turns a WAV
file of any common encoding, channel count and rate into exactly that, with no extra dependency; MP3, OGG,
FLAC, M4A and the rest need the ``audio`` extra (PyAV, which bundles FFmpeg)::

    pcm = load_audio("speech.wav")                       # PCM s16le mono 16 kHz
    for chunk, end in chunk_pcm(pcm, chunk_ms=20):
        session.send_audio(chunk, end=end)

Channels are averaged into one; the rate is converted with a band-limited (windowed-sinc, polyphase)
resampler: pure Python for WAV, so the result does not depend on the extras installed, and FFmpeg's
swresample for the formats PyAV decodes. :func:`iter_audio` decodes a long file as it is read instead (FFmpeg
for every format when PyAV is installed), chunk by chunk.
"""

from __future__ import annotations

import io
import logging
import os
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Iterator, Optional, Tuple, Union

from ._audio_stream import AudioStream, ffmpeg_pieces, wav_pieces
from ._wav import convert_wav, downmix, native, parse_wav, read_header, to_s16

if TYPE_CHECKING:
    import av

__all__ = ["AudioStream", "chunk_pcm", "is_wav", "iter_audio", "load_audio"]

logger = logging.getLogger(__name__)

AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

INSTALL_HINT = 'pip install "avatarsdk[audio]"'

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
        wav = parse_wav(data, name)
        if wav.encoding is not None:
            return convert_wav(wav, sample_rate)
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


def iter_audio(source: AudioSource, *, sample_rate: int = 16000, chunk_ms: int = 20) -> AudioStream:
    """Decode an audio file as it is read, for sending while a long file is still being decoded::

        with iter_audio("long.wav", sample_rate=16000, chunk_ms=20) as audio:
            for chunk, end in audio:
                session.send_audio(chunk, end=end)

    Memory holds a chunk and one block of the file, not the file. With the ``audio`` extra (PyAV), FFmpeg
    decodes every format (WAV included), mixes the channels down and converts the rate (swresample), outside
    the GIL for the most part; without it, WAV files are read as :func:`load_audio` reads them (pure Python,
    the same samples, block by block) and other formats raise ``ImportError``. The header is read, checked
    and the first chunk decoded before this returns, so an unreadable file fails here.

    Args:
        source: A path, or the file's bytes.
        sample_rate: The rate of the chunks, in Hz (the session's ``sample_rate``).
        chunk_ms: Milliseconds of audio per chunk.

    Returns:
        An :class:`AudioStream` of ``(chunk, end)`` pairs, as :func:`chunk_pcm` gives.

    Raises:
        ValueError: not an audio file, truncated or corrupt, or an unsupported encoding (the message names
            the file and what was wrong); also from the iteration, for damage found later in the file.
        ImportError: the file is not WAV and PyAV is not installed (the message says what to install).
        OSError: the file cannot be read.
        TypeError: an argument has the wrong type.
    """
    for field, value in (("sample_rate", sample_rate), ("chunk_ms", chunk_ms)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{field}: expected an int, got {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{field}: expected a positive int, got {value!r}")
    path: Optional[str] = None
    file: BinaryIO
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, file = "audio data", io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = name = os.fspath(source)
        file = open(path, "rb")  # noqa: SIM115 - closed by the stream, or below
    else:
        raise TypeError(f"source: expected a path or bytes, got {type(source).__name__}")
    try:
        return _open_stream(file, path, name, sample_rate=sample_rate, chunk_ms=chunk_ms)
    except BaseException:
        file.close()
        raise


def _open_stream(file: BinaryIO, path: Optional[str], name: str, *, sample_rate: int, chunk_ms: int) -> AudioStream:
    total = file.seek(0, io.SEEK_END)
    file.seek(0)
    head = file.read(16)
    file.seek(0)
    pyav = _pyav_available()
    what: Dict[str, Any] = {"name": name, "sample_rate": sample_rate, "chunk_ms": chunk_ms}
    if head[:4] in (b"RIFF", b"RF64", b"RIFX"):
        fmt, offset, size = read_header(file, total, name)
        if fmt.encoding is not None and not pyav:
            logger.debug("streaming %s (%d bytes) as %d Hz mono PCM", name, total, sample_rate)
            return AudioStream(
                **what,
                pieces=wav_pieces(file, fmt, (offset, size), sample_rate, name),
                close=file.close,
                duration=size // (fmt.width * fmt.channels) / fmt.rate,
                decoder="python",
                source=f"WAV {fmt.description}, {fmt.rate} Hz, {fmt.channels} channel(s)",
            )
        if not pyav:
            raise ValueError(
                f"{name}: unsupported WAV encoding {fmt.description}; PCM integer and IEEE float WAV are read"
                f" as they are, others need PyAV: {INSTALL_HINT}"
            )
        failure = "FFmpeg cannot decode it" if fmt.encoding else f"FFmpeg cannot decode its {fmt.description} audio"
    elif pyav:
        failure = "not a WAV file, and FFmpeg cannot decode it either"
    else:
        suffix = os.path.splitext(path or "")[1].lower()
        kind = _sniff(head) or (suffix.lstrip(".").upper() if suffix in _COMPRESSED_SUFFIXES else None)
        if kind is None:
            raise ValueError(f"{name}: not a WAV file (no RIFF/WAVE header), and not a recognised audio format")
        raise ImportError(f"{name}: reading {kind} audio needs PyAV (it bundles FFmpeg): {INSTALL_HINT}")
    file.seek(0)
    return _ffmpeg_stream(file, path, what, failure)


def _ffmpeg_stream(file: BinaryIO, path: Optional[str], what: Dict[str, Any], failure: str) -> AudioStream:
    """FFmpeg reads a path itself (its I/O outside the GIL), bytes through ``file``."""
    import av  # noqa: PLC0415 - optional extra

    name = what["name"]
    try:
        container = av.open(path if path is not None else file, mode="r")
    except av.error.FFmpegError as exc:
        raise ValueError(f"{name}: {failure} ({exc.strerror or exc})") from exc

    def close() -> None:
        container.close()
        file.close()

    try:
        if not container.streams.audio:
            raise ValueError(f"{name}: no audio stream in the file")
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            duration: Optional[float] = float(stream.duration * stream.time_base)
        else:
            duration = container.duration / 1_000_000 if container.duration else None
        context = stream.codec_context
        logger.debug("streaming %s: %s audio, %s Hz, decoded by FFmpeg", name, context.name, stream.rate)
        return AudioStream(
            **what,
            pieces=ffmpeg_pieces(container, what["sample_rate"], name),
            close=close,
            duration=duration,
            decoder="ffmpeg",
            source=f"{context.name}, {stream.rate} Hz, {len(context.layout.channels)} channel(s)",
        )
    except BaseException:
        close()
        raise


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
    return to_s16(downmix(native("f", bytes(pieces)), channels, 1.0))


def _append_packed(pieces: bytearray, frame: av.AudioFrame, channels: int, name: str) -> int:
    count = len(frame.layout.channels)
    if channels and count != channels:
        raise ValueError(f"{name}: the channel count changes mid-stream ({channels} to {count})")
    pieces += bytes(frame.planes[0])[: frame.samples * count * 4]
    return count
