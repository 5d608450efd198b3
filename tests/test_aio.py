"""avatarsdk.aio: the pool's streams read from asyncio code, against the stand-in paced like the service."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Iterator, List, Optional

import pytest
from conftest import pcm, wait_until

from avatarsdk import Frame, PoolTimeoutError, SessionPool, ThreadedIterator, stream_async
from avatarsdk.testing import FakeAvatarService

FRAME_INTERVAL = 0.02  # the stand-in sends a frame every 20 ms: 1 s of audio takes 0.5 s to animate


@pytest.fixture
def paced() -> Iterator[FakeAvatarService]:
    with FakeAvatarService(frame_interval=FRAME_INTERVAL) as svc:
        yield svc


@pytest.fixture
def pool(paced: FakeAvatarService) -> Iterator[SessionPool]:
    with SessionPool(**paced.credentials(), max_size=1, sample_rate=16000) as made:
        yield made


async def ticking(stop: asyncio.Event, gaps: List[float]) -> None:
    """Ticks every 5 ms until ``stop``; records how late each tick came (the event loop's stalls)."""
    last = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        gaps.append(now - last)
        last = now


def test_the_frames_arrive_one_by_one_without_blocking_the_loop(pool: SessionPool, paced: FakeAvatarService) -> None:
    arrivals: List[float] = []
    gaps: List[float] = []

    async def main() -> List[Frame]:
        stop = asyncio.Event()
        ticker = asyncio.ensure_future(ticking(stop, gaps))
        frames = []
        async with await stream_async(pool, pcm(1.0)) as stream:
            async for frame in stream:
                frames.append(frame)
                arrivals.append(time.monotonic())
        stop.set()
        await ticker
        return frames

    frames = asyncio.run(main())
    assert len(frames) == 25 and [f.last for f in frames] == [False] * 24 + [True]
    found = paced.find_request(frames[0].req_id)
    assert found is not None and [f.data for f in frames] == found[0].sent_frames(frames[0].req_id)
    assert arrivals[-1] - arrivals[0] >= 24 * FRAME_INTERVAL * 0.9  # as they came, not all at the end
    assert max(gaps) < 0.25, max(gaps)  # the borrow, the start and each frame's wait ran off the loop
    wait_until(lambda: pool.stats().in_use == 0, "the session back in the pool")


@pytest.mark.parametrize("how", ["cancel", "aclose", "close"])
def test_stopping_early_interrupts_the_request(pool: SessionPool, paced: FakeAvatarService, how: str) -> None:
    seen: List[Frame] = []

    async def main() -> None:
        stream = await stream_async(pool, pcm(3.0))  # 75 frames over 1.5 s
        two = asyncio.Event()

        async def consume() -> None:
            async for frame in stream:
                seen.append(frame)
                if len(seen) == 2:
                    two.set()

        task = asyncio.ensure_future(consume())
        await two.wait()
        if how == "cancel":  # a server cancels the task streaming a response when its client goes away
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif how == "aclose":
            await stream.aclose()
            await task
        else:
            stream.close()  # what a server calls on a response body; returns at once
            await task

    asyncio.run(main())
    req_id = seen[0].req_id
    found = wait_until(lambda: (f := paced.find_request(req_id)) and f[1].interrupted and f, "the interrupt")
    assert len(found[0].sent_frames(req_id)) < 75
    wait_until(lambda: pool.stats().in_use == 0, "the session back in the pool")
    assert (pool.stats().discarded, pool.stats().failed) == (0, 0)


def test_a_busy_pool_raises_from_the_await(pool: SessionPool) -> None:
    async def main() -> None:
        with pool.session(), pytest.raises(PoolTimeoutError):  # the only session, held by this thread
            await stream_async(pool, pcm(0.1), timeout=0.05)
        async with await stream_async(pool, pcm(0.12)) as stream:  # free again
            assert len([frame async for frame in stream]) == 3

    asyncio.run(main())


def test_any_blocking_iterator_runs_on_a_thread_of_its_own() -> None:
    threads: List[str] = []
    closed = threading.Event()

    def numbers() -> Iterator[int]:
        try:
            for n in range(3):
                threads.append(threading.current_thread().name)
                yield n
            raise RuntimeError("broken after 3")
        finally:
            closed.set()

    async def main() -> Optional[List[int]]:
        got = []
        iterator = await ThreadedIterator.open(numbers)
        with pytest.raises(RuntimeError, match="broken after 3"):
            async for n in iterator:
                got.append(n)
        with pytest.raises(StopAsyncIteration):  # closed by the error
            await iterator.__anext__()
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    assert closed.is_set()
    assert len(set(threads)) == 1 and threads[0].startswith("avatarsdk-aio-"), threads
