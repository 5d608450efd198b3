"""avatarsdk.framefile: round trips, the documented layout, and truncated or corrupt files."""

from __future__ import annotations

import io
import struct
import threading
from pathlib import Path
from typing import List

import pytest

from avatarsdk.framefile import MAGIC, MAX_FRAME_BYTES, VERSION, FrameRecord, FrameWriter, read_frames

FRAMES = [(b"\x0a\x03abc", False), (b"", False), (bytes(range(256)) * 40, False), (b"\x32\x00", True)]


def written(frames: List[tuple] = FRAMES) -> bytes:  # type: ignore[type-arg]
    buffer = io.BytesIO()
    with FrameWriter(buffer) as writer:
        for data, last in frames:
            writer.write(data, last)
    return buffer.getvalue()


def test_round_trip_through_a_path(tmp_path: Path) -> None:
    path = tmp_path / "request.frames"
    with FrameWriter(path) as writer:
        for data, last in FRAMES:
            writer.write(data, last)
        assert writer.frames == 4
    frames = list(read_frames(path))
    assert frames == [FrameRecord(data, last) for data, last in FRAMES]
    assert frames[-1].last and frames[0].data == b"\x0a\x03abc"
    assert list(read_frames(str(path))) == frames
    assert "closed" in repr(writer) and "request.frames" in repr(writer)


def test_round_trip_through_file_objects_leaves_them_open() -> None:
    buffer = io.BytesIO()
    buffer.write(b"prefix")
    writer = FrameWriter(buffer)
    writer.write(bytearray(b"one"), False)
    writer.write(memoryview(b"two"), True)
    writer.close()
    writer.close()  # idempotent
    assert not buffer.closed
    buffer.seek(len(b"prefix"))
    assert list(read_frames(buffer)) == [(b"one", False), (b"two", True)]


def test_the_layout_is_the_documented_one() -> None:
    data = written([(b"abc", True), (b"", False)])
    assert data == MAGIC + bytes((VERSION,)) + b"\x01\x00\x00\x00\x03abc" + b"\x00\x00\x00\x00\x00"
    assert MAGIC == b"AVSDKFRM" and VERSION == 1


def test_an_empty_frame_file_has_no_frames() -> None:
    assert list(read_frames(io.BytesIO(written([])))) == []


def test_concurrent_writes_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "threads.frames"
    with FrameWriter(path) as writer:

        def write_many(tag: int) -> None:
            for i in range(200):
                writer.write(bytes([tag]) * (i + 1), False)

        threads = [threading.Thread(target=write_many, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    frames = list(read_frames(path))
    assert len(frames) == 800
    assert all(len(set(frame.data)) == 1 for frame in frames)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not an avatarsdk frame file .* found an empty file"),
        (b"RIFF\x00\x00\x00\x00WAVE", "not an avatarsdk frame file"),
        (MAGIC, "truncated frame file: no version byte"),
        (MAGIC + b"\x02", "unsupported frame file version 2"),
        (MAGIC + b"\x01\x00\x00", "record 0 at byte 9 has a partial header"),
        (MAGIC + b"\x01\x00\x00\x00\x00\x05abc", "record 0 at byte 9 has 3 of 5 bytes"),
        (MAGIC + b"\x01\x04\x00\x00\x00\x01a", "record 0 at byte 9 has flags 0x04"),
        (MAGIC + b"\x01\x00" + struct.pack(">I", MAX_FRAME_BYTES + 1), "claims 67108865 bytes"),
    ],
)
def test_broken_files_are_value_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(read_frames(io.BytesIO(data)))


def test_truncation_is_reported_after_the_good_frames(tmp_path: Path) -> None:
    path = tmp_path / "cut.frames"
    data = written()
    path.write_bytes(data[:-1])
    frames = read_frames(path)
    assert [next(frames) for _ in range(3)] == [FrameRecord(d, last) for d, last in FRAMES[:3]]
    with pytest.raises(ValueError, match=r"cut\.frames: truncated frame file: record 3 at byte \d+ has 1 of 2 bytes"):
        next(frames)


def test_misuse_is_refused(tmp_path: Path) -> None:
    writer = FrameWriter(tmp_path / "x.frames")
    with pytest.raises(TypeError, match="frame"):
        writer.write("text", False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="last"):
        writer.write(b"x", 1)  # type: ignore[arg-type]
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x", True)
    with pytest.raises(TypeError, match="target"):
        FrameWriter(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source"):
        read_frames(42)  # type: ignore[arg-type]
