"""Streaming PCM to Ogg Opus, for ``OGG_OPUS`` sessions whose caller sends PCM.

The service takes one continuous Ogg Opus stream per request (RFC 7845): the OpusHead page (BOS), the OpusTags
page, then audio pages, the last one flagged EOS with a granule position that trims the padding.
:class:`OggOpusStreamEncoder` turns PCM chunks into that stream as they come, returning the complete Ogg pages
each chunk makes::

    encoder = OggOpusStreamEncoder(sample_rate=16000)
    for chunk, end in chunk_pcm(pcm, chunk_ms=20):
        send(encoder.encode(chunk, end=end))         # headers + one page per 20 ms chunk; EOS with end

Design: PyAV (the ``audio`` extra, which bundles FFmpeg and libopus) makes the Opus packets; the Ogg pages are
written here, in Python (RFC 3533 framing, CRC through :mod:`zlib`). The other candidate, FFmpeg's ogg muxer
writing into a ``BytesIO`` drained after each packet, was measured against it at 16 kHz in 20 ms chunks (av 18.1
and 15.1, libopus 1.6.1):

* latency: here every chunk that completes a packet returns its page at once. The muxer holds each page until
  the next packet arrives, even with ``page_duration=20000`` (by default it fills ~1 s pages): 20 ms more
  latency on every chunk, and a request's last audio only at ``end``.
* CPU: the same within noise, libopus dominating: 4.3 to 5.5 ms per second of audio either way (~200x real
  time); the page writer costs 0.1 to 0.3 ms of it. Starting a stream: ~0.5 ms for both.
* memory: flat for both on av >= 17.1 (10 minutes in one stream: +0.2 KiB traced, RSS unchanged; 2000
  requests: RSS unchanged); nothing is kept across pages here but a frame of PCM.
* control: serial numbers, page sequence, one page per call and the final granule position are explicit here;
  the muxer needs a container per request, closed to write the EOS page.

PyAV before 17.1 (15.1 is the last for Python 3.9) leaks each ``FFmpegError`` message it raises (PyAV #2282,
fixed by #2283), and its audio encoder raises one internally per call: each :meth:`encode` that makes a packet
leaves ~80 bytes traced, ~140 bytes of RSS, whichever design (~7 KB per second of audio in 20 ms chunks, ~24 MB
an hour). Long-running processes should use Python >= 3.10 with av >= 17.1 (a one-time INFO log says so).

Bitrate ``0`` means libopus's own default (``OPUS_AUTO``: 60 bits per frame plus one bit per input sample per
second, e.g. 19 kbps at 16 kHz, 20 ms), what the official SDK's opuslib encoder uses; FFmpeg alone would pick
64 kbps. VBR is constrained, libopus's default too (FFmpeg's own is unconstrained).
"""

from __future__ import annotations

import logging
import re
import secrets
import struct
import zlib
from fractions import Fraction
from typing import TYPE_CHECKING, List, Optional, Union

from .audio import INSTALL_HINT

if TYPE_CHECKING:
    from av.audio.codeccontext import AudioCodecContext

__all__ = ["APPLICATIONS", "FRAME_DURATIONS_MS", "SAMPLE_RATES", "OggOpusStreamEncoder", "ogg_crc"]

logger = logging.getLogger(__name__)

SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
"""Input rates Opus takes (and the service, for ``OGG_OPUS``)."""
FRAME_DURATIONS_MS = (2.5, 5, 10, 20, 40, 60)
"""Opus frame durations; under 10 ms libopus codes in its restricted low-delay (CELT only) mode."""
APPLICATIONS = ("audio", "voip", "lowdelay")
"""libopus applications; the official SDK's name ``restricted_lowdelay`` is taken for ``lowdelay`` too."""
MIN_BITRATE = 500
MAX_BITRATE = 256000  # FFmpeg's limit for one channel

_OPUS_RATE = 48000  # granule positions and pre-skip count samples at 48 kHz, whatever the input rate
_BOS = 0x02
_EOS = 0x04
_MAX_SEGMENTS = 255  # lacing values in one page
_REVERSE_BITS = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))
_VENDOR = b"avatarsdk"
_PYAV_LEAK_FIXED = (17, 1)  # see the module docstring
_leak_noted = False


def ogg_crc(data: Union[bytes, bytearray]) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, MSB first, initial value 0, no final xor.

    zlib's CRC-32 is the same polynomial bit-reflected, with initial value and final xor 0xFFFFFFFF: fed the
    bytes with their bits reversed, started from 0xFFFFFFFF and xored back, it yields the Ogg CRC bit-reversed.
    About 1 µs for a 280-byte page, against 38 µs for a table-driven loop in Python.
    """
    crc = zlib.crc32(bytes(data).translate(_REVERSE_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int.from_bytes(crc.to_bytes(4, "little").translate(_REVERSE_BITS), "big")


class OggOpusStreamEncoder:
    """One continuous Ogg Opus stream per request.

    Feed PCM s16le mono at ``sample_rate`` with :meth:`encode`; each call returns the Ogg pages ready to send
    (the stream's two header pages with its first audio, then one page per call that completes an Opus packet,
    possibly ``b""``). ``end=True`` finishes the stream (EOS) and the next call starts a new one with a new
    serial number; :meth:`reset` drops the current stream instead (an interrupted request).

    Thread-safety: none; use one encoder per session and call it under the lock that orders the session's
    sends (:meth:`reset` from ``interrupt()`` included).
    """

    def __init__(
        self, *, sample_rate: int, bitrate: int = 0, frame_duration_ms: float = 20, application: str = "audio"
    ) -> None:
        """Check the settings and that PyAV with libopus is there; the first :meth:`encode` opens the encoder.

        Args:
            sample_rate: Rate of the PCM fed, in Hz: 8000, 12000, 16000, 24000 or 48000 (the OpusHead
                records it; Opus itself runs at 48 kHz).
            bitrate: Target bits per second, 500 to 256000; 0 for libopus's default.
            frame_duration_ms: Milliseconds of audio per Opus packet: 2.5, 5, 10, 20, 40 or 60.
            application: ``"audio"``, ``"voip"`` or ``"lowdelay"`` (also spelt ``"restricted_lowdelay"``).

        Raises:
            TypeError, ValueError: an argument has the wrong type or value (the message names it).
            ImportError: PyAV is not installed, or its FFmpeg has no libopus encoder.
        """
        for name, value in (("sample_rate", sample_rate), ("bitrate", bitrate)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(
                f"sample_rate: expected one of {', '.join(map(str, SAMPLE_RATES))} Hz, got {sample_rate!r}"
            )
        if bitrate != 0 and not MIN_BITRATE <= bitrate <= MAX_BITRATE:
            raise ValueError(
                f"bitrate: expected 0 (the libopus default) or {MIN_BITRATE} to {MAX_BITRATE} bits per second,"
                f" got {bitrate!r}"
            )
        if isinstance(frame_duration_ms, bool) or not isinstance(frame_duration_ms, (int, float)):
            raise TypeError(f"frame_duration_ms: expected a number, got {type(frame_duration_ms).__name__}")
        if frame_duration_ms not in FRAME_DURATIONS_MS:
            raise ValueError(
                f"frame_duration_ms: expected one of {', '.join(map(str, FRAME_DURATIONS_MS))},"
                f" got {frame_duration_ms!r}"
            )
        if not isinstance(application, str):
            raise TypeError(f"application: expected a str, got {type(application).__name__}")
        mode = "lowdelay" if application == "restricted_lowdelay" else application
        if mode not in APPLICATIONS:
            raise ValueError(f"application: expected one of {', '.join(map(repr, APPLICATIONS))}, got {application!r}")
        _check_pyav()

        self._rate = sample_rate
        self._frame_ms = float(frame_duration_ms)
        self._frame_size = round(sample_rate * self._frame_ms / 1000)  # input samples per packet
        self._scale = _OPUS_RATE // sample_rate  # 48 kHz samples per input sample
        self._time_base = Fraction(1, sample_rate)
        self._bitrate = bitrate or round(60 * 1000 / self._frame_ms) + sample_rate  # libopus's OPUS_AUTO
        # libopus codes frames under 10 ms with CELT only; FFmpeg would switch (with a warning) if not asked.
        self._application = "lowdelay" if self._frame_ms < 10 else mode
        # The current stream; _codec is None between streams.
        self._codec: Optional[AudioCodecContext] = None
        self._pending = bytearray()  # PCM short of a whole frame
        self._serial = 0
        self._sequence = 0  # the next page's sequence number
        self._pre_skip = 0  # 48 kHz samples
        self._samples = 0  # input samples received
        self._fed = 0  # input samples given to the codec (with the padding)
        self._packets = 0  # packets written into pages
        self._stream_bytes = 0

    @property
    def sample_rate(self) -> int:
        """The PCM rate fed, in Hz."""
        return self._rate

    @property
    def bitrate(self) -> int:
        """The target bits per second given to libopus (its default computed when 0 was asked for)."""
        return self._bitrate

    @property
    def active(self) -> bool:
        """Whether a stream is open: its first pages were returned and its EOS page was not."""
        return self._codec is not None

    @property
    def stream_bytes(self) -> int:
        """Bytes returned for the current stream so far (after ``end=True``: the finished stream's total, until
        the next stream starts; 0 after :meth:`reset`)."""
        return self._stream_bytes

    def encode(self, pcm: Union[bytes, bytearray, memoryview], *, end: bool = False) -> bytes:
        """Encode PCM and return the Ogg bytes ready to send now.

        Whole pages only: ``b""`` while less than a packet's worth of audio is buffered. The first call with
        audio starts a stream (its OpusHead and OpusTags pages come first). With ``end=True`` the buffered
        audio is padded to a whole packet, the encoder flushed, and the last page written with the EOS flag and
        the granule position of the real end; the next call starts a new stream. ``encode(b"", end=True)``
        with no stream open returns ``b""``: there is no audio to make a stream of.

        Args:
            pcm: PCM signed 16-bit little-endian mono at ``sample_rate`` (any even number of bytes).
            end: Whether this is the request's last audio.

        Returns:
            Complete Ogg pages (possibly none).

        Raises:
            TypeError: ``pcm`` is not bytes-like.
            ValueError: ``pcm`` has an odd number of bytes (nothing is consumed).
            RuntimeError: FFmpeg failed to encode; the stream is dropped, as by :meth:`reset`.
        """
        if not isinstance(pcm, (bytes, bytearray, memoryview)):
            raise TypeError(f"pcm: expected bytes, bytearray or memoryview, got {type(pcm).__name__}")
        view = memoryview(pcm)
        if view.nbytes % 2:
            raise ValueError(f"pcm: expected PCM s16le (an even number of bytes), got {view.nbytes} bytes")
        out = bytearray()
        if self._codec is None:
            if not view.nbytes:
                return b""
            out += self._start()
        import av  # noqa: PLC0415 - optional extra, checked in __init__

        codec = self._codec
        assert codec is not None
        self._pending += view
        self._samples += view.nbytes // 2
        frame_bytes = self._frame_size * 2
        try:
            whole = len(self._pending) - len(self._pending) % frame_bytes
            packets = self._encode(codec, whole) if whole else []
            if end:
                if self._pending:  # pad the last packet with silence; the final granule position trims it
                    self._pending += bytes(frame_bytes - len(self._pending))
                    packets += self._encode(codec, frame_bytes)
                packets += [bytes(packet) for packet in codec.encode(None)]
        except av.error.FFmpegError as exc:
            self.reset()
            raise RuntimeError(f"Opus encoding failed: {exc}") from exc
        out += self._pages(packets, final=end)
        self._stream_bytes += len(out)
        if end:
            logger.debug(
                "Ogg Opus stream %08x done: %d samples, %d pages, %d bytes",
                self._serial,
                self._samples,
                self._sequence,
                self._stream_bytes,
            )
            self._close()
        return bytes(out)

    def reset(self) -> None:
        """Drop the current stream, if any (an interrupted request): the next :meth:`encode` starts a new one."""
        if self._codec is not None:
            logger.debug(
                "Ogg Opus stream %08x dropped after %d bytes (%d pages)",
                self._serial,
                self._stream_bytes,
                self._sequence,
            )
        self._close()
        self._stream_bytes = 0

    # ------------------------------------------------------------------------------------------ internals

    def _start(self) -> bytes:
        """Open a new encoder and return the new stream's header pages."""
        import av  # noqa: PLC0415 - optional extra, checked in __init__

        try:
            codec = av.CodecContext.create("libopus", "w")
            codec.sample_rate = self._rate
            codec.layout = "mono"
            codec.format = "s16"
            codec.bit_rate = self._bitrate
            codec.time_base = self._time_base
            codec.options = {
                "application": self._application,
                "frame_duration": f"{self._frame_ms:g}",
                "vbr": "constrained",  # libopus's default; FFmpeg's "on" is unconstrained (~2x the bitrate asked)
            }
            codec.open()
        except av.error.FFmpegError as exc:
            raise RuntimeError(f"cannot open the libopus encoder: {exc}") from exc
        extradata = codec.extradata or b""
        if len(extradata) < 12 or extradata[:8] != b"OpusHead":
            raise RuntimeError(f"unexpected libopus extradata {extradata[:19]!r}")
        (pre_skip,) = struct.unpack_from("<H", extradata, 10)  # libopus's lookahead, in 48 kHz samples
        serial = self._serial
        while serial == self._serial:  # a new stream, a new serial number
            serial = secrets.randbits(32)
        self._codec, self._serial, self._pre_skip = codec, serial, pre_skip
        self._sequence = self._samples = self._fed = self._packets = self._stream_bytes = 0
        self._pending.clear()
        logger.debug(
            "Ogg Opus stream %08x: %d Hz, %d bps, %g ms frames, %s, pre-skip %d",
            serial,
            self._rate,
            self._bitrate,
            self._frame_ms,
            self._application,
            pre_skip,
        )
        # RFC 7845 5.1: version 1, one channel, pre-skip, input rate, gain 0, mapping family 0.
        head = struct.pack("<8sBBHIhB", b"OpusHead", 1, 1, pre_skip, self._rate, 0, 0)
        tags = struct.pack("<8sI", b"OpusTags", len(_VENDOR)) + _VENDOR + struct.pack("<I", 0)
        return self._page([head], 0, _BOS) + self._page([tags], 0, 0)

    def _encode(self, codec: AudioCodecContext, size: int) -> List[bytes]:
        """Encode the first ``size`` bytes of the pending PCM (whole frames) and drop them."""
        import av  # noqa: PLC0415 - optional extra, checked in __init__

        samples = size // 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(bytes(self._pending[:size]))
        del self._pending[:size]
        frame.sample_rate = self._rate
        frame.time_base = self._time_base
        frame.pts = self._fed
        self._fed += samples
        return [bytes(packet) for packet in codec.encode(frame)]

    def _pages(self, packets: List[bytes], *, final: bool) -> bytes:
        """The pages holding ``packets``: as few as the lacing allows; the last flagged EOS when ``final``."""
        if not packets:
            if final:
                raise RuntimeError("libopus returned no packet at the end of the stream")
            return b""
        frame48 = self._frame_size * self._scale
        out = bytearray()
        page: List[bytes] = []
        segments = 0
        for index, packet in enumerate(packets):
            need = len(packet) // 255 + 1
            if segments + need > _MAX_SEGMENTS:
                self._packets += len(page)
                out += self._page(page, self._packets * frame48, 0)
                page, segments = [], 0
            page.append(packet)
            segments += need
            if index == len(packets) - 1:
                self._packets += len(page)
                granule = self._packets * frame48
                if final:  # the decoder keeps pre-skip + the input's length, trimming the padding
                    granule = min(granule, self._pre_skip + self._samples * self._scale)
                out += self._page(page, granule, _EOS if final else 0)
        return bytes(out)

    def _page(self, packets: List[bytes], granule: int, flags: int) -> bytes:
        """One Ogg page of whole ``packets`` (RFC 3533), with the next sequence number and its CRC."""
        lacing = bytearray()
        for packet in packets:
            lacing += b"\xff" * (len(packet) // 255)
            lacing.append(len(packet) % 255)
        page = bytearray(
            struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, self._serial, self._sequence, 0, len(lacing))
        )
        page += lacing
        for packet in packets:
            page += packet
        struct.pack_into("<I", page, 22, ogg_crc(page))
        self._sequence += 1
        return bytes(page)

    def _close(self) -> None:
        self._codec = None
        self._pending.clear()


def _check_pyav() -> None:
    """Raise ImportError unless PyAV is installed and its FFmpeg has the libopus encoder."""
    try:
        import av  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ImportError(
            f"encoding PCM to Ogg Opus needs PyAV (it bundles FFmpeg and libopus): {INSTALL_HINT}"
        ) from exc
    global _leak_noted
    version = tuple(int(part) for part in re.findall(r"\d+", av.__version__)[:2])
    if version < _PYAV_LEAK_FIXED and not _leak_noted:
        _leak_noted = True
        logger.info(
            "PyAV %s leaks ~140 bytes per Opus encoding call (PyAV #2282): ~24 MB per hour of audio sent in 20 ms"
            " chunks; PyAV 17.1 (Python >= 3.10) fixes it",
            av.__version__,
        )
    try:
        av.codec.Codec("libopus", "w")
    except av.codec.codec.UnknownCodecError as exc:
        raise ImportError(
            f"PyAV {av.__version__} was built with an FFmpeg that has no libopus encoder; PyAV's wheels include"
            f" it: {INSTALL_HINT}"
        ) from exc
