"""WAV files without any dependency: the headers (RIFF, RF64, ``WAVE_FORMAT_EXTENSIBLE``) read and checked, and
the samples of every integer and float encoding turned into PCM s16le mono, whole (:func:`convert_wav`) or
block by block (``avatarsdk._audio_stream``)."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import struct
import sys
from array import array
from operator import add
from typing import BinaryIO, Iterable, Optional, Sequence, Tuple, Union

from ._resample import resample

logger = logging.getLogger(__name__)

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


@dataclasses.dataclass
class Wav:
    channels: int
    rate: int
    width: int  # bytes per sample in the container
    encoding: Optional[str]  # "int" or "float"; None when the WAV holds compressed audio
    description: str
    data: memoryview


def parse_wav(data: bytes, name: str) -> Wav:
    """The format and the sample bytes of a WAV file (RIFF or RF64) held in memory."""
    fmt, offset, size = read_header(io.BytesIO(data), len(data), name)
    return dataclasses.replace(fmt, data=memoryview(data)[offset : offset + size])


def read_header(file: BinaryIO, total: int, name: str) -> Tuple[Wav, int, int]:
    """The format of the WAV file ``file`` (``total`` bytes long, read from its start), and where its samples
    are: ``(format, offset, size)``, every size checked against ``total``. Only the headers are read."""
    head = file.read(12)
    if len(head) < 12 or head[8:12] != b"WAVE":
        raise ValueError(f"{name}: not a WAV file (a RIFF header without WAVE)")
    if head[:4] == b"RIFX":
        raise ValueError(f"{name}: big-endian WAV (RIFX) is not supported")
    rf64 = head[:4] == b"RF64"
    fmt: Optional[Wav] = None
    where: Optional[Tuple[int, int]] = None
    ds64_data_size: Optional[int] = None
    pos = 12
    while pos + 8 <= total and (fmt is None or where is None):
        file.seek(pos)
        header = file.read(8)
        chunk_id = header[:4]
        (size,) = struct.unpack_from("<I", header, 4)
        body = pos + 8
        if chunk_id == b"data":
            if size == _UNKNOWN_SIZE:
                size = ds64_data_size if rf64 and ds64_data_size is not None else total - body
            if body + size > total:
                raise ValueError(
                    f"{name}: truncated WAV file: the data chunk declares {size} bytes, {total - body} follow"
                )
            where = (body, size)
        elif body + size > total:
            raise ValueError(f"{name}: truncated WAV file: the {chunk_id!r} chunk runs past the end of the file")
        elif chunk_id == b"fmt ":
            fmt = _parse_fmt(memoryview(file.read(size)), name)
        elif chunk_id == b"ds64" and size >= 16:
            (ds64_data_size,) = struct.unpack_from("<Q", file.read(16), 8)
        pos = body + size + (size & 1)  # chunks are padded to an even size
    if fmt is None:
        raise ValueError(f"{name}: corrupt WAV file: no fmt chunk" + (" (truncated?)" if pos < total else ""))
    if where is None:
        raise ValueError(f"{name}: corrupt WAV file: no data chunk (truncated?)")
    return fmt, where[0], where[1]


def _parse_fmt(chunk: memoryview, name: str) -> Wav:
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
    return Wav(channels, rate, width, encoding, description, memoryview(b""))


def convert_wav(wav: Wav, sample_rate: int) -> bytes:
    frame_bytes = wav.width * wav.channels
    usable = len(wav.data) - len(wav.data) % frame_bytes
    if usable != len(wav.data):
        logger.debug("ignoring %d bytes of a partial sample frame at the end", len(wav.data) - usable)
    raw = wav.data[:usable]
    if wav.encoding == "int" and wav.width == 2 and wav.channels == 1 and wav.rate == sample_rate:
        return bytes(raw)  # already what the service takes
    interleaved, full_scale = decode_samples(wav, raw)
    mono = downmix(interleaved, wav.channels, 1.0 / full_scale)
    return to_s16(resample(mono, wav.rate, sample_rate) if wav.rate != sample_rate else mono)


def decode_samples(wav: Wav, raw: memoryview) -> Tuple[Sequence[float], float]:
    """The interleaved samples as numbers, and the value of full scale."""
    if wav.encoding == "float":
        return native("f" if wav.width == 4 else "d", raw), 1.0
    if wav.width == 1:  # 8-bit WAV is unsigned: 128 is silence
        return native("b", bytes(raw).translate(_FLIP_SIGN)), 128.0
    if wav.width == 2:
        return native("h", raw), 32768.0
    if wav.width == 3:  # 24-bit: left-justify each sample in a 32-bit int (a zero low byte)
        widened = bytearray(len(raw) // 3 * 4)
        for byte in range(3):
            widened[byte + 1 :: 4] = raw[byte::3]
        raw = memoryview(widened)
    return native(_INT32, raw), 2147483648.0


_FLIP_SIGN = bytes((b ^ 0x80) for b in range(256))


_INT32 = "i" if array("i").itemsize == 4 else "l"


def native(typecode: str, data: Union[bytes, memoryview]) -> Sequence[float]:
    """Little-endian samples of ``typecode`` as an array in the machine's byte order."""
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "big" and values.itemsize > 1:
        values.byteswap()
    return values


def downmix(interleaved: Sequence[float], channels: int, gain: float) -> Sequence[float]:
    """The average of the channels as ``array('d')``, times ``gain``."""
    total: Iterable[float] = interleaved[0::channels]
    for channel in range(1, channels):
        total = map(add, total, interleaved[channel::channels])
    factor = gain / channels
    return array("d", [value * factor for value in total])


def to_s16(samples: Iterable[float]) -> bytes:
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
