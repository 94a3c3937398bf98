"""Admission: bounded FIFO queues and a fixed number of slots per loaded model.

A unit of work that wants an engine asks `Scheduler.admit(spec, ctx)`: transcriptions and
translations (diarized ones in their Whisper model's lane), speech, and each decode pass of a
live session alike. Each native model has a *lane*: `slots` requests run at once (for a speech-
to-text model sized by its engine, for Whisper by `stt/whisper/layout.py`, so that they keep it
busy; for a speech model one per core, as a voice synthesizes on one thread), up to `max_queue`
more wait in arrival order, and anything beyond that is refused at once with `Busy` and a retry
time estimated from how long slots have recently been held. When a slot frees it goes straight
to the oldest waiter, so order is FIFO across requests (live sessions' required passes aside,
below); a long file holds one slot for its whole run, and the other slots keep serving short
requests past it (hence the default of several slots per model).

A live session's *required* passes (a committed item's final pass, a phrase's translation:
`admit(..., live=True)`) wait in a queue of their own in the lane: a freed slot goes to the
oldest of them before any other waiter, and they are never refused because the ordinary queue
is full, so uploads delay a session's turns (by at most the runs holding the slots) but cannot
make it lose one. Priority is strict: sessions bound these passes (a session has at most a few
under way, such as a committed item's final pass and an early one of the turn in progress, and
a door limits its sessions), so they keep uploads waiting only while the sessions alone keep
every slot busy, the point where the session limit, not the queue, has to give. Their queue
still has a cap of its own, `live_max_queue`, so that nothing in the lane is unbounded. A
session's optional passes (partial text) are ordinary requests and give way on their own
(stt/passes.py).

Every request has a deadline (`request_timeout` seconds after its context started, 0 for
none). Waiting past it in the queue, or running past it (checked at every item the engine
yields), ends the request with `TimedOut`. A waiter whose caller has gone is dropped with
`ClientGone` when its slot comes up, before the engine ever sees it. The doors decide what
these look like (the HTTP edge: 429 with Retry-After, 504, 499).

Batching happens below this layer: the requests holding slots decode in their own threads and
Whisper's engine calls are merged in `stt/whisper/batching.py`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from voxserve.config import Settings
from voxserve.errors import (
    Busy,
    ServiceError,
    client_closed,
    deadline_exceeded,
    server_busy,
)
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.context import RequestContext
from voxserve.runtime.deadlines import wait_until
from voxserve.runtime.metrics import Metrics
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.threads import WorkerPool

log = logging.getLogger("voxserve.scheduler")

T = TypeVar("T")

# The SDK does not retry at all when asked to wait more than 120 s; stay well under that.
MAX_RETRY_AFTER = 60
# Weight of the newest slot hold time in the running estimate behind Retry-After.
EWMA_WEIGHT = 0.2
# The least room for live sessions' required passes waiting per model. Sessions bound them
# (a few per session; realtime_max_sessions per door, several doors may share a cluster's
# replica), so this is only a backstop that keeps the queue finite, not a limit meant to bite.
LIVE_MAX_QUEUE = 256


@dataclass(frozen=True)
class SchedulerConfig:
    slots: int = 1  # per speech-to-text model, unless its engine has its own below
    max_queue: int = 32
    live_max_queue: int = LIVE_MAX_QUEUE  # live sessions' required passes, beside max_queue
    timeout: float = 0.0  # seconds from arrival; 0: no deadline
    speech_slots: int = 1  # per speech model
    engine_slots: Mapping[str, int] = field(default_factory=dict)  # stt engine -> slots

    @classmethod
    def from_settings(cls, settings: Settings, engine_slots: Mapping[str, int]) -> SchedulerConfig:
        """`engine_slots`: what each speech-to-text engine wants (stt/engines.py)."""
        return cls(
            slots=max(engine_slots.values(), default=1),
            max_queue=settings.max_queue,
            live_max_queue=max(settings.max_queue, LIVE_MAX_QUEUE),
            timeout=settings.request_timeout,
            speech_slots=settings.slots or max(2, os.cpu_count() or 1),
            engine_slots=dict(engine_slots),
        )

    def slots_for(self, spec: ModelSpec) -> int:
        if spec.kind == "tts":
            return self.speech_slots
        return self.engine_slots.get(spec.engine, self.slots)


class _Lane:
    """The queues and slots of one model: `live` (live sessions' required passes) is served
    before `waiters` (everything else), each in arrival order."""

    def __init__(
        self, model_id: str, slots: int, max_queue: int, metrics: Metrics,
        live_max_queue: int = LIVE_MAX_QUEUE,
    ) -> None:
        self.model_id = model_id
        self.slots = slots
        self.max_queue = max_queue
        self.live_max_queue = live_max_queue
        self.busy = 0
        self.waiters: deque[asyncio.Future[float]] = deque()
        self.live: deque[asyncio.Future[float]] = deque()
        self.hold_seconds = 1.0  # running estimate of how long a slot is held
        self._depth = metrics.queue_depth.labels(model_id)
        self._busy = metrics.slots_busy.labels(model_id)

    @property
    def queued(self) -> int:
        return len(self.live) + len(self.waiters)

    def retry_after(self, live: bool = False) -> int:
        # Everyone served before a new request waits ahead of it: a live pass waits only
        # for the live queue, anything else for both.
        ahead = len(self.live) if live else self.queued
        waits = (ahead + 1) / self.slots * self.hold_seconds
        return max(1, min(MAX_RETRY_AFTER, math.ceil(waits)))

    async def acquire(self, deadline: float | None, timeout: float, live: bool = False) -> float:
        """Wait for a slot; returns when it was granted (time.monotonic()). `live`: a live
        session's required pass, served first and counted against `live_max_queue` only."""
        queue = self.live if live else self.waiters
        limit = self.live_max_queue if live else self.max_queue
        if self.busy < self.slots and not self.live and (live or not self.waiters):
            self._take()
            return time.monotonic()
        if len(queue) >= limit:
            raise server_busy(self.model_id, len(queue), self.retry_after(live))
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        self._depth.set(self.queued)
        self._dispatch()
        # The waiter is shielded, so only this coroutine (below) or `_dispatch` ever settles
        # it: a cancelled caller cannot leave a dead waiter for `_dispatch` to grant a slot to.
        try:
            if deadline is None:
                return await asyncio.shield(waiter)
            return await wait_until(asyncio.shield(waiter), deadline)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done():
                self.release(waiter.result())  # granted at the last moment: pass it on
            else:
                waiter.cancel()
                queue.remove(waiter)
                self._depth.set(self.queued)
            if isinstance(exc, asyncio.TimeoutError):
                raise deadline_exceeded(timeout, queued=True) from None
            raise

    def release(self, granted_at: float) -> None:
        held = time.monotonic() - granted_at
        self.hold_seconds += EWMA_WEIGHT * (held - self.hold_seconds)
        self.busy -= 1
        self._busy.set(self.busy)
        self._dispatch()

    def _take(self) -> None:
        self.busy += 1
        self._busy.set(self.busy)

    def _dispatch(self) -> None:
        """Hand free slots to the oldest live waiters, then to the oldest others."""
        while self.busy < self.slots and (self.live or self.waiters):
            waiter = (self.live or self.waiters).popleft()
            if waiter.done():  # never expected (waiters are shielded); never grant to one
                continue
            self._take()
            waiter.set_result(time.monotonic())
        self._depth.set(self.queued)


class Lease:
    """A granted slot and a loaded engine. Work on the engine goes through `iterate`, which
    enforces the deadline and keeps the slot (and the model) held until the worker thread has
    stopped, even when the request has already ended with an error."""

    def __init__(
        self,
        engine: Any,
        deadline: float | None,
        timeout: float,
        on_done: Callable[[], None],
        workers: WorkerPool,
    ) -> None:
        self.engine = engine
        self._workers_pool = workers
        self.deadline = deadline
        self._timeout = timeout
        self._on_done = on_done
        self._workers = 0
        self._closed = False
        self.timed_out = False
        self.audio_seconds = 0.0  # set by the work once it knows the file's duration

    async def iterate(self, make_iterator: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        """The items of `make_iterator()`, made in a worker thread under this lease's
        deadline."""
        items = self._workers_pool.iterate(
            make_iterator, deadline=self.deadline, on_worker=self._track
        )
        try:
            async with aclosing(items):
                async for item in items:
                    yield item
        except asyncio.TimeoutError:
            self.timed_out = True
            raise deadline_exceeded(self._timeout, queued=False) from None

    def _track(self, worker: asyncio.Future) -> None:
        self._workers += 1
        worker.add_done_callback(self._worker_done)

    def _worker_done(self, _: asyncio.Future) -> None:
        self._workers -= 1
        self._maybe_done()

    def close(self) -> None:
        self._closed = True
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._closed and self._workers == 0 and self._on_done is not None:
            done, self._on_done = self._on_done, None
            done()


class Scheduler:
    def __init__(
        self,
        pool: ModelPool,
        config: SchedulerConfig,
        metrics: Metrics | None = None,
        workers: WorkerPool | None = None,
    ) -> None:
        self._pool = pool
        self.config = config
        self._metrics = metrics or Metrics()
        self.workers = workers or WorkerPool()
        self._lanes: dict[str, _Lane] = {}

    def queued(self, model_id: str) -> int:
        """Requests waiting for a slot of the model, live passes included."""
        lane = self._lanes.get(model_id)
        return lane.queued if lane else 0

    def busy(self, model_id: str) -> int:
        lane = self._lanes.get(model_id)
        return lane.busy if lane else 0

    def _lane(self, spec: ModelSpec) -> _Lane:
        lane = self._lanes.get(spec.id)
        if lane is None:
            lane = self._lanes[spec.id] = _Lane(
                spec.id, self.config.slots_for(spec), self.config.max_queue, self._metrics,
                live_max_queue=self.config.live_max_queue,
            )
        return lane

    @asynccontextmanager
    async def admit(
        self, spec: ModelSpec, ctx: RequestContext | None = None, *, live: bool = False
    ) -> AsyncIterator[Lease]:
        """A slot in `spec`'s lane and its loaded engine, for the duration of the block.

        `ctx` is the caller's: its deadline counts from `ctx.started`. `live`: a live
        session's required pass, admitted before other waiters and never refused for their
        full queue (see the module's docstring). Raises `Busy` when its queue is full,
        `TimedOut` when the deadline passes while queued, and `ClientGone` when the caller
        went away before its slot came up.
        """
        ctx = ctx or RequestContext()
        timeout = self.config.timeout
        deadline = ctx.started + timeout if timeout > 0 else None
        m, model_id = self._metrics, spec.id
        ctx.model = model_id
        lane = self._lane(spec)
        queued_at = time.monotonic()
        try:
            granted_at = await lane.acquire(deadline, timeout, live)
        except ServiceError as exc:
            if isinstance(exc, Busy):
                m.rejected.labels(model_id).inc()
            else:
                m.dropped.labels(model_id, "deadline").inc()
            raise
        m.queue_wait.labels(model_id).observe(granted_at - queued_at)
        ctx.queue_seconds = granted_at - queued_at
        lease: Lease | None = None
        try:
            if await ctx.is_disconnected():
                m.dropped.labels(model_id, "disconnected").inc()
                log.info("dropped before the engine: model=%s reason=disconnected", model_id)
                raise client_closed()
            engine = await self._pool.acquire(spec)

            def done() -> None:
                self._pool.release(model_id)
                lane.release(granted_at)

            lease = Lease(engine, deadline, timeout, done, self.workers)
            m.admitted.labels(model_id).inc()
            yield lease
            if lease.audio_seconds > 0:
                m.audio_seconds.labels(model_id).inc(lease.audio_seconds)
                m.rtf.labels(model_id).observe(
                    (time.monotonic() - granted_at) / lease.audio_seconds
                )
        except BaseException:
            if lease is not None and lease.timed_out:
                m.dropped.labels(model_id, "deadline").inc()
            raise
        finally:
            if lease is not None:
                lease.close()
            else:
                lane.release(granted_at)
