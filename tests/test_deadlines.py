"""`runtime.deadlines.wait_until`: a deadline that never swallows the caller's cancellation
(asyncio.wait_for before Python 3.12 does, when what it waits for completes in the same loop
iteration; a realtime worker that lost its cancellation so kept its session open forever)."""

from __future__ import annotations

import asyncio
import time

import pytest

from voxserve.runtime.deadlines import wait_until


def test_a_cancelled_caller_stays_cancelled_when_its_item_arrives_at_that_moment():
    async def scenario() -> bool:
        queue: asyncio.Queue[str] = asyncio.Queue()
        took: list[str] = []

        async def worker() -> None:
            took.append(await wait_until(queue.get(), time.monotonic() + 60))
            await asyncio.Event().wait()  # a worker that went on would wait here forever

        task = asyncio.create_task(worker())
        await asyncio.sleep(0)  # the worker now waits on the queue
        queue.put_nowait("phrase")  # its item and its cancellation in one loop iteration
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        stopped = task.cancelled()
        task.cancel()
        return stopped and not took

    assert asyncio.run(scenario())


def test_the_result_before_the_deadline_and_timeout_error_after_it():
    async def scenario() -> None:
        assert await wait_until(asyncio.sleep(0.01, "done"), time.monotonic() + 5) == "done"
        slow = asyncio.ensure_future(asyncio.sleep(60))
        with pytest.raises(asyncio.TimeoutError):
            await wait_until(slow, time.monotonic() + 0.05)
        await asyncio.sleep(0)
        assert slow.cancelled()  # nothing runs on past its deadline
        with pytest.raises(asyncio.TimeoutError):  # a deadline already past
            await wait_until(asyncio.sleep(60), time.monotonic() - 1)

    asyncio.run(scenario())
