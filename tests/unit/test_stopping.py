"""`stop_task`: a background task's stop is bounded, whatever the task does."""

from __future__ import annotations

import asyncio
import time

import pytest

from nova_platform.stopping import stop_task


class Loop:
    """A background loop with a stop flag whose awaited call swallows its
    cancellation and returns normally, as a call bounded by `asyncio.wait_for`
    can on Python 3.11; with `stubborn`, it never ends until released."""

    def __init__(self, *, stubborn: bool = False) -> None:
        self.stopped = False
        self.stubborn = stubborn
        self.released = asyncio.Event()
        self.calling = asyncio.Event()
        self.lost = 0

    async def call(self) -> None:
        self.calling.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.lost += 1

    async def run(self) -> None:
        while not self.stopped or self.stubborn:
            await self.call()
            if self.released.is_set():
                return


async def test_a_task_that_ends_on_its_signal_is_not_cancelled() -> None:
    stop = asyncio.Event()

    async def run() -> str:
        await stop.wait()
        await asyncio.sleep(0.01)  # its own wind-down
        return "done"

    task = asyncio.create_task(run())
    stop.set()

    assert await stop_task(task, what="the loop", grace_s=5.0)
    assert not task.cancelled()
    assert task.result() == "done"


async def test_a_lost_cancellation_ends_the_task_through_its_stop_flag() -> None:
    loop = Loop()
    task = asyncio.create_task(loop.run())
    await loop.calling.wait()
    loop.stopped = True

    ended = await stop_task(task, what="the loop", backstop_s=5.0)

    assert ended
    assert loop.lost == 1  # cancelled inside its call, which swallowed it
    assert task.done()
    assert not task.cancelled()


async def test_a_task_that_never_ends_is_left_behind_within_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = Loop(stubborn=True)
    task = asyncio.create_task(loop.run())
    await loop.calling.wait()
    loop.stopped = True

    started = time.monotonic()
    ended = await stop_task(task, what="the stubborn loop", grace_s=0.1, backstop_s=0.1)
    took = time.monotonic() - started

    assert not ended
    assert 0.2 <= took < 2.0
    assert "the stubborn loop did not stop within 0.2 s" in caplog.text
    loop.released.set()  # let it go, or the session's event loop keeps it
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done()


async def test_a_failure_while_stopping_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> None:
        raise ConnectionError("the lease table is unreachable")

    task = asyncio.create_task(run())

    assert await stop_task(task, what="the relay", grace_s=1.0)
    assert "the relay failed while stopping" in caplog.text
    assert "the lease table is unreachable" in caplog.text


async def test_a_cancelled_caller_cancels_the_task_too() -> None:
    never = asyncio.Event()
    task = asyncio.create_task(never.wait())
    stopping = asyncio.create_task(stop_task(task, what="the loop", grace_s=60.0))
    await asyncio.sleep(0)

    stopping.cancel()
    await asyncio.wait({stopping}, timeout=5)

    assert stopping.cancelled()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
