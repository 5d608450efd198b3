"""A file format for animation frames as received, to save a request and replay it later.

Layout (all integers big-endian)::

    header   8 bytes  magic b"AVSDKFRM"
             1 byte   version (1)
    record   1 byte   flags: bit 0 = last (the frame's end flag); the other bits are 0
             4 bytes  length N of the frame (at most MAX_FRAME_BYTES)
             N bytes  the frame, exactly as ``transport_frames`` received it
    record   ... until the end of the file

A file holds any number of records (``avatarsdk send --out`` writes one file per request). A file cut short,
a bad magic, an unknown version or a record with unknown flags is reported as ``ValueError`` by
:func:`read_frames`::

    with FrameWriter("request.frames") as writer:        # e.g. from transport_frames(frame, last)
        writer.write(frame, last)
    for frame, last in read_frames("request.frames"):
        client.send(frame)
"""

from __future__ import annotations

import os
import struct
import threading
from types import TracebackType
from typing import BinaryIO, Iterator, NamedTuple, Optional, Type, Union

__all__ = ["MAGIC", "MAX_FRAME_BYTES", "VERSION", "FrameRecord", "FrameWriter", "read_frames"]

MAGIC = b"AVSDKFRM"
VERSION = 1
MAX_FRAME_BYTES = 64 << 20  # far above any animation frame; a larger length means a corrupt file
_FLAG_LAST = 0x01
_RECORD = struct.Struct(">BI")

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]


class FrameRecord(NamedTuple):
    """One saved frame: its bytes and its ``last`` (end) flag."""

    data: bytes
    last: bool


class FrameWriter:
    """Writes frames to a frame file (see the module docstring for the format).

    Args:
        target: A path (created or truncated; closed by :meth:`close`), or a binary file open for writing
            (written from its current position; flushed but left open by :meth:`close`).

    Thread-safety: ``write()`` may be called from any thread (e.g. a session's dispatcher); records go
    out whole, in call order.
    """

    def __init__(self, target: PathOrFile) -> None:
        if isinstance(target, (str, os.PathLike)):
            self.name = os.fspath(target)
            self._file: BinaryIO = open(self.name, "wb")  # noqa: SIM115 - closed by close()
            self._owned = True
        elif hasattr(target, "write"):
            self.name = str(getattr(target, "name", "<stream>"))
            self._file = target
            self._owned = False
        else:
            raise TypeError(f"target: expected a path or a binary file, got {type(target).__name__}")
        self._lock = threading.Lock()
        self._closed = False
        self.frames = 0
        self._file.write(MAGIC + bytes((VERSION,)))

    def write(self, frame: Union[bytes, bytearray, memoryview], last: bool) -> None:
        """Append one frame and its ``last`` flag.

        Raises:
            TypeError: ``frame`` is not bytes-like or ``last`` is not a bool.
            ValueError: the writer is closed, or the frame is larger than ``MAX_FRAME_BYTES``.
        """
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            raise TypeError(f"frame: expected bytes, got {type(frame).__name__}")
        if not isinstance(last, bool):
            raise TypeError(f"last: expected a bool, got {type(last).__name__}")
        data = bytes(frame)
        if len(data) > MAX_FRAME_BYTES:
            raise ValueError(f"frame: at most {MAX_FRAME_BYTES} bytes, got {len(data)}")
        with self._lock:
            if self._closed:
                raise ValueError(f"write(): {self.name} is closed")
            self._file.write(_RECORD.pack(_FLAG_LAST if last else 0, len(data)) + data)
            self.frames += 1

    def close(self) -> None:
        """Flush, and close the file if the writer opened it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owned:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FrameWriter {self.name!r} frames={self.frames}{' closed' if self._closed else ''}>"


def read_frames(source: PathOrFile) -> Iterator[FrameRecord]:
    """The frames of a frame file, in order, as :class:`FrameRecord` ``(data, last)`` tuples.

    The header is checked on the first ``next()``, each record as it is reached; a path is closed when
    the iteration ends.

    Args:
        source: A path, or a binary file open for reading (read from its current position).

    Raises:
        ValueError: not a frame file, an unsupported version, or a truncated or corrupt record (the message
            names the file, the record and its byte offset).
        TypeError: ``source`` is neither a path nor a binary file.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return _read_path(path)
    if hasattr(source, "read"):
        return _read(source, str(getattr(source, "name", "<stream>")))
    raise TypeError(f"source: expected a path or a binary file, got {type(source).__name__}")


def _read_path(path: str) -> Iterator[FrameRecord]:
    with open(path, "rb") as file:
        yield from _read(file, path)


def _read(file: BinaryIO, name: str) -> Iterator[FrameRecord]:
    header = file.read(len(MAGIC) + 1)
    if header[: len(MAGIC)] != MAGIC:
        found = "an empty file" if not header else f"{bytes(header[: len(MAGIC)])!r}"
        raise ValueError(f"{name}: not an avatarsdk frame file (expected the magic {MAGIC!r}, found {found})")
    if len(header) == len(MAGIC):
        raise ValueError(f"{name}: truncated frame file: no version byte")
    if header[-1] != VERSION:
        raise ValueError(f"{name}: unsupported frame file version {header[-1]} (this avatarsdk reads {VERSION})")
    offset, index = len(header), 0
    while True:
        head = file.read(_RECORD.size)
        if not head:
            return
        if len(head) < _RECORD.size:
            raise ValueError(f"{name}: truncated frame file: record {index} at byte {offset} has a partial header")
        flags, size = _RECORD.unpack(head)
        if flags & ~_FLAG_LAST:
            raise ValueError(f"{name}: corrupt frame file: record {index} at byte {offset} has flags 0x{flags:02x}")
        if size > MAX_FRAME_BYTES:
            raise ValueError(f"{name}: corrupt frame file: record {index} at byte {offset} claims {size} bytes")
        data = file.read(size)
        if len(data) < size:
            raise ValueError(
                f"{name}: truncated frame file: record {index} at byte {offset} has {len(data)} of {size} bytes"
            )
        yield FrameRecord(data, bool(flags & _FLAG_LAST))
        offset += _RECORD.size + size
        index += 1
