"""Loaded models, shared by every request.

A model loads on first use, once even when many requests ask for it at the same moment, in a
worker thread so the event loop keeps serving. While a request uses it, it is reference-counted
and never unloaded. When the last user lets go, its idle time starts: after the TTL of its kind
(`-1` never, `0` at once) it is unloaded. At most `max_models` stay loaded (and, when a memory
budget is set, at most that many bytes by their measured footprint): making room unloads the
least recently used *idle* model.

The limits are enforced whenever a model becomes idle, not by making a load wait: a request
that needs a model while every loaded one is busy gets it at once, a little over the limit,
and the limit is restored when one of them is released. Waiting instead could deadlock (a
request that holds two models at once, like diarization) or starve a rarely used model behind
a busy one.

Loads are serialised pool-wide: they are rare, and one at a time keeps memory peaks down and
makes the footprint (RSS before/after) a fair measurement.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from voxserve.runtime.catalog import ModelKind, ModelSpec
from voxserve.runtime.metrics import Metrics

log = logging.getLogger("voxserve.pool")

Loader = Callable[[ModelSpec], Any]

NEVER = -1.0


@dataclass
class PoolLimits:
    """TTL by model kind in seconds (-1 never, 0 right after use); 0 for max_models or
    memory_bytes means no limit."""

    ttl: dict[str, float] = field(default_factory=dict)
    max_models: int = 0
    memory_bytes: int = 0


@dataclass
class _Entry:
    spec: ModelSpec
    engine: Any
    footprint: int  # bytes, measured as the RSS growth during the load
    refs: int = 0
    last_used: float = field(default_factory=time.monotonic)
    pinned: bool = False  # preloaded: never unloaded while the server runs
    expiry: asyncio.TimerHandle | None = None


class ModelPool:
    def __init__(
        self,
        loaders: dict[ModelKind, Loader],
        limits: PoolLimits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._loaders = dict(loaders)
        self._limits = limits or PoolLimits()
        self._metrics = metrics or Metrics()
        self._entries: dict[str, _Entry] = {}
        self._load_lock = asyncio.Lock()
        self._pinned: set[str] = set()
        self._failures: dict[str, str] = {}

    def add_loader(self, kind: ModelKind, loader: Loader) -> None:
        self._loaders[kind] = loader

    def loaded_ids(self) -> list[str]:
        return list(self._entries)

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._entries

    def load_failure(self, model_id: str) -> str | None:
        """Why the last load of this model failed, or None."""
        return self._failures.get(model_id)

    async def acquire(self, spec: ModelSpec) -> Any:
        """The loaded engine for `spec`, held (never unloaded) until `release(spec.id)`."""
        entry = self._entries.get(spec.id) or await self._load(spec)
        entry.refs += 1
        if entry.expiry is not None:
            entry.expiry.cancel()
            entry.expiry = None
        return entry.engine

    def release(self, model_id: str) -> None:
        entry = self._entries[model_id]
        entry.refs -= 1
        entry.last_used = time.monotonic()
        if entry.refs == 0:
            self._became_idle(entry)

    @asynccontextmanager
    async def use(self, spec: ModelSpec) -> AsyncIterator[Any]:
        """`acquire` and `release` around a block."""
        engine = await self.acquire(spec)
        try:
            yield engine
        finally:
            self.release(spec.id)

    async def preload(self, specs: Iterable[ModelSpec]) -> None:
        """Load these models now and keep them for the life of the server (pinned)."""
        for spec in specs:
            self._pinned.add(spec.id)
            try:
                entry = self._entries.get(spec.id) or await self._load(spec)
            except Exception as exc:
                log.error("preloading %s failed: %s", spec.id, exc)
                continue
            entry.pinned = True
            if entry.expiry is not None:
                entry.expiry.cancel()
                entry.expiry = None

    async def _load(self, spec: ModelSpec) -> _Entry:
        async with self._load_lock:
            if spec.id in self._entries:
                return self._entries[spec.id]
            loader = self._loaders.get(spec.kind)
            if loader is None:
                raise RuntimeError(f"no engine is installed for {spec.kind} models")
            self._make_room(extra_models=1)
            started = time.perf_counter()
            rss_before = _rss_bytes()
            try:
                engine = await anyio.to_thread.run_sync(loader, spec)
            except Exception as exc:
                self._failures[spec.id] = str(exc) or type(exc).__name__
                raise
            seconds = time.perf_counter() - started
            entry = _Entry(spec, engine, max(0, _rss_bytes() - rss_before))
            entry.pinned = spec.id in self._pinned
            self._entries[spec.id] = entry
            self._failures.pop(spec.id, None)
            m = self._metrics
            m.model_loads.labels(spec.id).inc()
            m.model_load_seconds.labels(spec.id).observe(seconds)
            m.models_loaded.labels(spec.id, spec.kind).set(1)
            log.info(
                "model loaded: model=%s kind=%s seconds=%.2f footprint_mb=%.0f loaded=%d",
                spec.id, spec.kind, seconds, entry.footprint / 2**20, len(self._entries),
            )
            # The engine is not in use yet: the caller takes a reference right away, so the
            # idle timer starts only when that first user lets go.
            return entry

    def _became_idle(self, entry: _Entry) -> None:
        if self._over_limits():
            self._make_room()
            if entry.spec.id not in self._entries:
                return
        ttl = self._ttl(entry)
        if ttl == NEVER or entry.pinned:
            return
        if ttl == 0:
            self._unload(entry, "ttl")
            return
        loop = asyncio.get_running_loop()
        entry.expiry = loop.call_later(ttl, self._expire, entry)

    def _expire(self, entry: _Entry) -> None:
        entry.expiry = None
        if entry.refs == 0 and self._entries.get(entry.spec.id) is entry:
            self._unload(entry, "ttl")

    def _ttl(self, entry: _Entry) -> float:
        ttl = self._limits.ttl.get(entry.spec.kind, NEVER)
        return NEVER if ttl < 0 else ttl

    def _over_limits(self, extra_models: int = 0) -> bool:
        limits = self._limits
        if limits.max_models and len(self._entries) + extra_models > limits.max_models:
            return True
        used = sum(e.footprint for e in self._entries.values())
        return bool(limits.memory_bytes) and used > limits.memory_bytes

    def _make_room(self, extra_models: int = 0) -> None:
        """Unload least recently used idle models until within the limits (or none is idle)."""
        while self._over_limits(extra_models):
            idle = [e for e in self._entries.values() if e.refs == 0 and not e.pinned]
            if not idle:
                log.warning(
                    "model limit exceeded while every loaded model is in use: loaded=%s",
                    ",".join(self._entries),
                )
                return
            self._unload(min(idle, key=lambda e: e.last_used), "evicted")

    def _unload(self, entry: _Entry, reason: str) -> None:
        if entry.expiry is not None:
            entry.expiry.cancel()
        del self._entries[entry.spec.id]
        # Dropping the last reference frees the weights (CTranslate2 releases them in the
        # model's destructor); a request that still holds a StreamStart keeps only the tokenizer.
        entry.engine = None
        self._metrics.models_loaded.labels(entry.spec.id, entry.spec.kind).set(0)
        self._metrics.model_unloads.labels(entry.spec.id, reason).inc()
        log.info(
            "model unloaded: model=%s reason=%s idle_seconds=%.1f loaded=%d",
            entry.spec.id, reason, time.monotonic() - entry.last_used, len(self._entries),
        )

    def close(self) -> None:
        for entry in list(self._entries.values()):
            self._unload(entry, "shutdown")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux: no footprint, the memory budget is inert
        return 0
