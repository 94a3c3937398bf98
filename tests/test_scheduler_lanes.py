"""A lane never leaks a slot: waiters cancelled at every await point, with and without a
deadline, while slots are being released at the same moment, leave `busy` equal to the number
of live holders and no dead waiter in the queue.

Before waiters were shielded, a waiter cancelled with no deadline left a cancelled future in
the queue; the next release granted it a slot (`busy` + 1, `InvalidStateError` in the
releasing request) that nobody would ever give back.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from voxserve.errors import TimedOut
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.metrics import Metrics
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.scheduler import Scheduler, SchedulerConfig, _Lane

SPEC = ModelSpec("m", "stt", "dir:/nowhere")


class Holders:
    """Tasks that take a slot, hold it until told, and give it back however they end."""

    def __init__(self, lane: _Lane, deadline: float | None) -> None:
        self.lane = lane
        self.deadline = deadline
        self.live: set[int] = set()
        self.release = {}

    def start(self, name: int) -> asyncio.Task:
        self.release[name] = asyncio.Event()
        return asyncio.create_task(self._hold(name))

    async def _hold(self, name: int) -> None:
        granted = await self.lane.acquire(self.deadline, 60.0)
        self.live.add(name)
        try:
            await self.release[name].wait()
        finally:
            self.live.discard(name)
            self.lane.release(granted)

    def check(self) -> None:
        assert self.lane.busy == len(self.live), (self.lane.busy, self.live)
        assert self.lane.busy <= self.lane.slots
        assert all(not w.done() for w in self.lane.waiters), "a dead waiter is queued"


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.mark.parametrize("with_deadline", [False, True])
@pytest.mark.parametrize("slots", [1, 2])
async def test_cancelled_waiters_never_leak_a_slot(with_deadline: bool, slots: int):
    # Every combination of: how many loop steps the victim runs before it is cancelled, and
    # whether a holder releases its slot before, at the same step as, or after the cancel.
    for cancel_after, release_when in itertools.product(range(6), ("before", "same", "after")):
        lane = _Lane("m", slots, max_queue=8, metrics=Metrics())
        deadline = time.monotonic() + 60 if with_deadline else None
        holders = Holders(lane, deadline)
        first = [holders.start(i) for i in range(slots)]
        await settle()
        assert lane.busy == slots
        victim = holders.start(100)
        behind = holders.start(101)  # a waiter queued behind the victim
        for _ in range(cancel_after):
            await asyncio.sleep(0)
        if release_when == "before":
            holders.release[0].set()
            await asyncio.sleep(0)
        if release_when == "same":
            holders.release[0].set()
        victim.cancel()
        if release_when == "after":
            await asyncio.sleep(0)
            holders.release[0].set()
        await settle()
        holders.check()
        # Whatever happened, the waiter behind the victim gets a slot once one frees.
        for name in list(holders.release):
            holders.release[name].set()
        await settle()
        await asyncio.gather(*first, victim, behind, return_exceptions=True)
        holders.check()
        assert lane.busy == 0 and not lane.waiters
        assert 101 not in holders.live


async def test_a_deadline_in_the_queue_frees_its_place():
    lane = _Lane("m", 1, max_queue=8, metrics=Metrics())
    holders = Holders(lane, None)
    holder = holders.start(0)
    await settle()
    with pytest.raises(TimedOut) as caught:
        await lane.acquire(time.monotonic() + 0.05, 0.05)
    assert caught.value.queued
    holders.check()
    assert not lane.waiters
    holders.release[0].set()
    await holder
    holders.check()
    assert lane.busy == 0


async def test_admit_cancelled_at_every_await_keeps_the_lane_whole():
    """Through `Scheduler.admit` (queue, client probe, model load): cancel the request at
    each of its awaits in turn; the lane and the pool end empty every time."""
    loaded = asyncio.Event()

    def load(spec: ModelSpec) -> object:
        return object()

    for steps in range(12):
        pool = ModelPool({"stt": load})
        scheduler = Scheduler(pool, SchedulerConfig(slots=1, max_queue=4))
        release = asyncio.Event()

        async def hold(scheduler: Scheduler, release: asyncio.Event) -> None:
            async with scheduler.admit(SPEC):
                loaded.set()
                await release.wait()

        holder = asyncio.create_task(hold(scheduler, release))
        await loaded.wait()
        loaded.clear()
        victim = asyncio.create_task(hold(scheduler, release))
        for _ in range(steps):
            await asyncio.sleep(0)
        release.set()  # the slot frees while the victim waits, or just before it is cancelled
        for _ in range(steps % 3):
            await asyncio.sleep(0)
        victim.cancel()
        await asyncio.gather(holder, victim, return_exceptions=True)
        await settle()
        assert scheduler.busy("m") == 0, steps
        assert scheduler.queued("m") == 0, steps
        pool.close()
