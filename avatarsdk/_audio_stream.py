"""Streaming decode: :class:`AudioStream` (what :func:`avatarsdk.audio.iter_audio` returns), and its two
decoders, each yielding PCM s16le mono in pieces of any size: WAV in pure Python, block by block
(:func:`wav_pieces`), and FFmpeg through PyAV (:func:`ffmpeg_pieces`). Memory holds one block or one decoded
frame, and one chunk, never the file."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Optional, Tuple

from ._resample import StreamResampler
from ._wav import Wav, decode_samples, downmix, to_s16

if TYPE_CHECKING:
    import av

__all__ = ["AudioStream", "ffmpeg_pieces", "wav_pieces"]

logger = logging.getLogger(__name__)

BLOCK_SECONDS = 0.5  # WAV read and converted this much at a time


class AudioStream:
    """An audio file decoded as it is read: iterate for ``(chunk, end)`` pairs like :func:`~avatarsdk.chunk_pcm`
    gives, PCM s16le mono at ``sample_rate``, every chunk but the last ``chunk_ms`` long, ``end`` only on the
    last (an empty file yields one ``(b"", True)``). Made by :func:`~avatarsdk.audio.iter_audio`, which has
    already read and checked the file's header; decoding errors after that raise ``ValueError`` from the
    iteration. Close it (or use ``with``) to release the file early; it closes itself after the last chunk.

    Thread-safety: one thread iterates; :attr:`decoded` may be read from any.

    Attributes:
        name: The file's path, or ``"audio data"``.
        sample_rate: The rate of the chunks, in Hz.
        chunk_ms: Milliseconds of audio per chunk.
        duration: Seconds of audio in the file, from its header (``None`` when the header does not say).
        decoder: ``"ffmpeg"`` (PyAV, the ``audio`` extra) or ``"python"`` (WAV without any extra).
        source: What the file holds, e.g. ``"pcm_s16le, 48000 Hz, 2 channels"``.
    """

    def __init__(
        self,
        *,
        name: str,
        sample_rate: int,
        chunk_ms: int,
        pieces: Iterator[bytes],
        close: Callable[[], None],
        duration: Optional[float],
        decoder: str,
        source: str,
    ) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.duration = duration
        self.decoder = decoder
        self.source = source
        self._bytes = 0
        self._close = close
        self._closed = False
        self._chunks = _rechunk(pieces, max(1, sample_rate * chunk_ms // 1000) * 2)
        self._first: Optional[Tuple[bytes, bool]] = self._pull()  # damage near the start fails here

    @property
    def decoded(self) -> float:
        """Seconds of audio yielded so far."""
        return self._bytes / 2 / self.sample_rate

    def __iter__(self) -> AudioStream:
        return self

    def __next__(self) -> Tuple[bytes, bool]:
        if self._first is not None:
            chunk, end = self._first
            self._first = None
        elif self._closed:
            raise StopIteration
        else:
            chunk, end = self._pull()
        self._bytes += len(chunk)
        if end:
            self.close()
        return chunk, end

    def _pull(self) -> Tuple[bytes, bool]:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the file (and the decoder); idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AudioStream({self.name!r}, {self.decoder}, {self.sample_rate} Hz, {self.decoded:.2f} s decoded)"


def _rechunk(pieces: Iterator[bytes], size: int) -> Iterator[Tuple[bytes, bool]]:
    """Pieces of any size as chunks of ``size`` bytes (the last one shorter), each with whether it is the last."""
    buffer = bytearray()
    pending: Optional[bytes] = None
    for piece in pieces:
        buffer += piece
        while len(buffer) >= size:
            if pending is not None:
                yield pending, False
            pending = bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        if pending is not None:
            yield pending, False
        yield bytes(buffer), True
    else:
        yield (pending if pending is not None else b""), True


def wav_pieces(file: BinaryIO, fmt: Wav, where: Tuple[int, int], sample_rate: int, name: str) -> Iterator[bytes]:
    """The samples of a WAV file (``where`` is their ``(offset, size)``) as PCM s16le mono at ``sample_rate``,
    block by block, with the pure-Python resampler: exactly what :func:`~avatarsdk.load_audio` gives."""
    offset, size = where
    frame_bytes = fmt.width * fmt.channels
    remaining = size - size % frame_bytes  # a partial sample frame at the end is dropped
    passthrough = fmt.encoding == "int" and fmt.width == 2 and fmt.channels == 1 and fmt.rate == sample_rate
    resampler = StreamResampler(fmt.rate, sample_rate) if fmt.rate != sample_rate else None
    block = max(1, int(fmt.rate * BLOCK_SECONDS)) * frame_bytes
    file.seek(offset)
    while remaining:
        raw = file.read(min(remaining, block))
        if not raw:
            raise ValueError(f"{name}: truncated WAV file: {remaining} bytes of samples missing (the file shrank?)")
        remaining -= len(raw)
        raw = raw[: len(raw) - len(raw) % frame_bytes]
        if passthrough:
            yield raw
            continue
        interleaved, full_scale = decode_samples(fmt, memoryview(raw))
        mono = downmix(interleaved, fmt.channels, 1.0 / full_scale)
        yield to_s16(resampler.feed(mono) if resampler is not None else mono)
    if resampler is not None:
        yield to_s16(resampler.flush())


def ffmpeg_pieces(container: av.container.InputContainer, sample_rate: int, name: str) -> Iterator[bytes]:
    """The first audio stream of ``container`` decoded, mixed down to mono and converted to ``sample_rate`` by
    FFmpeg (swresample), as PCM s16le, frame by frame."""
    import av  # noqa: PLC0415 - optional extra

    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield bytes(out.planes[0])[: out.samples * 2]
        for out in resampler.resample(None):
            yield bytes(out.planes[0])[: out.samples * 2]
    except av.error.FFmpegError as exc:
        raise ValueError(f"{name}: FFmpeg cannot decode it ({exc.strerror or exc})") from exc
