"""A lane never leaks a slot: waiters cancelled at every await point, with and without a
deadline, while slots are being released at the same moment, leave `busy` equal to the number
of live holders and no dead waiter in the queue.

Before waiters were shielded, a waiter cancelled with no deadline left a cancelled future in
the queue; the next release granted it a slot (`busy` + 1, `InvalidStateError` in the
releasing request) that nobody would ever give back.

A live session's required passes (`live=True`) queue apart and come first: a full queue of
uploads never refuses them, a freed slot goes to them before older uploads, and the uploads
keep their own order and get every slot no live pass waits for. Priority is strict on
purpose: sessions bound the live passes (a few each), so uploads wait only while sessions
alone keep every slot busy.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import numpy as np
import pytest

from voxserve.config import Settings
from voxserve.errors import Busy, TimedOut, server_busy
from voxserve.runtime.catalog import Catalog, ModelSpec
from voxserve.runtime.context import RequestContext
from voxserve.runtime.metrics import Metrics
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.scheduler import Scheduler, SchedulerConfig, _Lane
from voxserve.stt.passes import ScheduledPasses

SPEC = ModelSpec("m", "stt", "dir:/nowhere")


class Holders:
    """Tasks that take a slot, hold it until told, and give it back however they end."""

    def __init__(self, lane: _Lane, deadline: float | None) -> None:
        self.lane = lane
        self.deadline = deadline
        self.live: set[int] = set()
        self.granted: list[int] = []  # in the order the slots were granted
        self.release = {}

    def start(self, name: int, live: bool = False) -> asyncio.Task:
        self.release[name] = asyncio.Event()
        return asyncio.create_task(self._hold(name, live))

    async def _hold(self, name: int, live: bool) -> None:
        granted = await self.lane.acquire(self.deadline, 60.0, live)
        self.live.add(name)
        self.granted.append(name)
        try:
            await self.release[name].wait()
        finally:
            self.live.discard(name)
            self.lane.release(granted)

    def check(self) -> None:
        assert self.lane.busy == len(self.live), (self.lane.busy, self.live)
        assert self.lane.busy <= self.lane.slots
        queued = [*self.lane.waiters, *self.lane.live]
        assert all(not w.done() for w in queued), "a dead waiter is queued"


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.mark.parametrize("live", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["plain", "live-victim", "live-behind", "both-live"])
@pytest.mark.parametrize("with_deadline", [False, True])
@pytest.mark.parametrize("slots", [1, 2])
async def test_cancelled_waiters_never_leak_a_slot(
    with_deadline: bool, slots: int, live: tuple[bool, bool]
):
    # Every combination of: how many loop steps the victim runs before it is cancelled, and
    # whether a holder releases its slot before, at the same step as, or after the cancel.
    for cancel_after, release_when in itertools.product(range(6), ("before", "same", "after")):
        lane = _Lane("m", slots, max_queue=8, metrics=Metrics())
        deadline = time.monotonic() + 60 if with_deadline else None
        holders = Holders(lane, deadline)
        first = [holders.start(i) for i in range(slots)]
        await settle()
        assert lane.busy == slots
        victim = holders.start(100, live[0])
        behind = holders.start(101, live[1])  # a waiter queued behind (or beside) the victim
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
        assert lane.busy == 0 and not lane.waiters and not lane.live
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


async def test_a_full_queue_of_uploads_never_refuses_a_live_pass():
    lane = _Lane("m", 1, max_queue=2, metrics=Metrics(), live_max_queue=2)
    holders = Holders(lane, None)
    tasks = [holders.start(i) for i in range(3)]  # one runs, two wait: the queue is full
    await settle()
    with pytest.raises(Busy) as refused:
        await lane.acquire(None, 60.0)
    assert refused.value.retry_after >= 1
    tasks += [holders.start(10, live=True), holders.start(11, live=True)]
    await settle()
    assert len(lane.live) == 2 and lane.queued == 4
    # An upload now waits behind the live passes as well: its retry estimate says so.
    assert lane.retry_after() > lane.retry_after(live=True)
    with pytest.raises(Busy):  # the live queue has a cap of its own
        await lane.acquire(None, 60.0, live=True)
    for name in list(holders.release):
        holders.release[name].set()
    await asyncio.gather(*tasks)
    holders.check()
    assert lane.busy == 0 and lane.queued == 0


async def test_a_live_pass_gets_the_next_slot_before_older_uploads_which_keep_their_order():
    lane = _Lane("m", 1, max_queue=8, metrics=Metrics())
    holders = Holders(lane, None)
    tasks = [holders.start(0)]
    await settle()
    for name, live in [(1, False), (2, False), (10, True), (3, False), (11, True)]:
        tasks.append(holders.start(name, live))
        await settle()
    # Each slot, as it frees: the oldest live pass waiting, else the oldest upload. A live
    # pass that arrives while uploads wait still goes first (12 below), and the uploads get
    # every slot no live pass waits for, in their own order.
    for step in range(7):
        holders.release[holders.granted[-1]].set()
        await settle()
        if step == 2:
            tasks.append(holders.start(12, live=True))
            await settle()
        holders.check()
    assert holders.granted == [0, 10, 11, 1, 12, 2, 3]
    await asyncio.gather(*tasks)
    assert lane.busy == 0 and lane.queued == 0


async def test_a_live_pass_takes_a_free_slot_at_once_and_an_upload_never_jumps_it():
    lane = _Lane("m", 2, max_queue=8, metrics=Metrics())
    holders = Holders(lane, None)
    first = holders.start(10, live=True)
    await settle()
    assert holders.granted == [10]  # a free slot: no queueing at all
    others = [holders.start(0), holders.start(1), holders.start(11, live=True)]
    await settle()
    assert holders.granted == [10, 0] and len(lane.live) == 1 and len(lane.waiters) == 1
    holders.release[0].set()
    await settle()
    assert holders.granted == [10, 0, 11]
    for name in list(holders.release):
        holders.release[name].set()
    await asyncio.gather(first, *others)
    holders.check()
    assert holders.granted == [10, 0, 11, 1]


async def test_a_live_pass_past_its_deadline_frees_its_place():
    lane = _Lane("m", 1, max_queue=8, metrics=Metrics())
    holders = Holders(lane, None)
    holder = holders.start(0)
    await settle()
    with pytest.raises(TimedOut) as caught:
        await lane.acquire(time.monotonic() + 0.05, 0.05, live=True)
    assert caught.value.queued
    assert not lane.live and lane.queued == 0
    holders.release[0].set()
    await holder
    holders.check()


async def test_admit_queues_live_passes_apart_and_counts_them_in_the_depth():
    """Through `Scheduler.admit`: `queued` and the queue-depth gauge count both queues, and a
    live pass is admitted with the ordinary queue full."""

    def load(spec: ModelSpec) -> object:
        return object()

    metrics = Metrics()
    pool = ModelPool({"stt": load})
    scheduler = Scheduler(pool, SchedulerConfig(slots=1, max_queue=1), metrics)
    release = asyncio.Event()
    admitted: list[str] = []

    async def hold(name: str, live: bool = False) -> None:
        async with scheduler.admit(SPEC, live=live):
            admitted.append(name)
            await release.wait()

    def depth() -> float:
        return metrics.registry.get_sample_value("voxserve_queue_depth", {"model": "m"})

    tasks = [asyncio.create_task(hold("upload-1")), asyncio.create_task(hold("upload-2"))]
    await settle()
    with pytest.raises(Busy):
        await hold("upload-3")
    tasks.append(asyncio.create_task(hold("live", live=True)))
    await settle()
    assert scheduler.queued("m") == 2 and depth() == 2
    release.set()
    await asyncio.gather(*tasks)
    assert admitted == ["upload-1", "live", "upload-2"]
    assert scheduler.queued("m") == 0 and depth() == 0 and scheduler.busy("m") == 0
    pool.close()


class _Admissions:
    """A scheduler stand-in that records how each pass asked to be admitted, then refuses it
    (the pass itself is not these tests' business)."""

    def __init__(self) -> None:
        self.live: list[bool] = []

    def queued(self, model_id: str) -> int:
        return 0

    @asynccontextmanager
    async def admit(
        self, spec: ModelSpec, ctx: RequestContext | None = None, *, live: bool = False
    ) -> AsyncIterator[None]:
        self.live.append(live)
        raise server_busy(spec.id, 0, 1)
        yield


async def test_required_passes_are_admitted_as_live_work_here_and_on_a_replica():
    """A final pass or a translation (`optional=False`) is admitted with `live=True`, an
    optional one as an ordinary request; on a cluster the ingress's `RemoteDecodePasses`
    calls a replica's `ModelServer.decode_pass`, whose own `ScheduledPasses` admits it the
    same way (only `optional` crosses; a stand-in handle calls the replica directly)."""
    from voxserve.cluster.calls import RemoteModel
    from voxserve.cluster.proxies import RemoteDecodePasses, RemoteModels
    from voxserve.cluster.replica import ModelServer
    from voxserve.cluster.served import serving_model

    model = Catalog(Settings()).resolve("whisper-1")
    assert model is not None
    here = _Admissions()
    local = ScheduledPasses(here)  # type: ignore[arg-type]
    replica = _Admissions()
    server = object.__new__(ModelServer)  # its __init__ loads the model; only the call matters
    server._services = SimpleNamespace(passes=ScheduledPasses(replica))  # type: ignore[arg-type]

    class Handle:
        def __getattr__(self, method: str) -> object:
            return SimpleNamespace(remote=getattr(server, method))

    remote = RemoteDecodePasses(RemoteModels(
        {serving_model(model.spec): RemoteModel(model.spec.id, Handle(), retries=0)}))
    for passes in (local, remote):
        for optional in (False, True):
            with pytest.raises(Busy):
                await passes.decode(model, np.zeros(1), None, RequestContext(),  # type: ignore[arg-type]
                                    optional=optional)
    assert here.live == [True, False]
    assert replica.live == [True, False]
