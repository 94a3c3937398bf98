"""Run a blocking iterator in a worker thread and consume it from the event loop.

Used for decoding: faster-whisper produces segments lazily, so a stream can send each one as
soon as it exists. When the consumer stops early (a client went away), the worker stops at the
next item instead of decoding the rest of the file for nobody.

Two hooks serve the scheduler: a `deadline` (time.monotonic() seconds) after which the consumer
gets `TimeoutError` while the worker stops at its next item, and `on_worker`, which receives the
worker's future, so that whoever counts busy slots can keep the slot busy until the thread has
really stopped, not merely until the consumer gave up on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from voxserve.runtime.deadlines import wait_until

T = TypeVar("T")

_END = object()
# Decode and synthesis workers are kept apart from asyncio's default pool (min(32, cores + 4)
# threads: six on a 2-core machine, fewer than the scheduler's slots). They mostly wait inside
# the engines, which release the GIL; the scheduler, not this pool, bounds how many run.
MAX_WORKERS = 128


class WorkerPool:
    """The decode and synthesis threads of one server (or one CLI run, or one cluster replica),
    and how many of them are producing right now (`/health`'s `busy_workers`)."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="voxserve-worker")
        self._active = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        """Worker threads still producing items (a test watches this drop to zero after a
        client disconnects)."""
        return self._active

    def _count(self, delta: int) -> None:
        with self._lock:
            self._active += delta

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def iterate(
        self,
        make_iterator: Callable[[], Iterator[T]],
        *,
        deadline: float | None = None,
        on_worker: Callable[[asyncio.Future], None] | None = None,
    ) -> AsyncIterator[T]:
        """The items of `make_iterator()`, produced in one of this pool's threads."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            self._count(+1)
            try:
                iterator = make_iterator()
                for item in iterator:
                    loop.call_soon_threadsafe(queue.put_nowait, (True, item))
                    if cancelled.is_set():
                        close = getattr(iterator, "close", None)
                        if close is not None:
                            close()
                        return
                loop.call_soon_threadsafe(queue.put_nowait, (True, _END))
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, (False, exc))
            finally:
                self._count(-1)

        worker = loop.run_in_executor(self._executor, produce)
        if on_worker is not None:
            on_worker(worker)
        try:
            while True:
                if deadline is None:
                    ok, item = await queue.get()
                else:
                    ok, item = await wait_until(queue.get(), deadline)
                if not ok:
                    raise item
                if item is _END:
                    break
                yield item
        finally:
            cancelled.set()
            if worker.done():
                worker.result()
