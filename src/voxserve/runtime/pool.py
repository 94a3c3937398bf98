"""Loaded models, shared by every request.

A model loads on first use, once even when many requests ask for it at the same moment, in a
worker thread so the event loop keeps serving, and then stays loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from voxserve.runtime.catalog import ModelKind, ModelSpec

log = logging.getLogger("voxserve.pool")

Loader = Callable[[ModelSpec], Any]


class ModelPool:
    def __init__(self, loaders: dict[ModelKind, Loader]) -> None:
        self._loaders = dict(loaders)
        self._loaded: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def add_loader(self, kind: ModelKind, loader: Loader) -> None:
        self._loaders[kind] = loader

    def loaded_ids(self) -> list[str]:
        return list(self._loaded)

    @asynccontextmanager
    async def use(self, spec: ModelSpec) -> AsyncIterator[Any]:
        """The loaded engine for `spec`, for the duration of the block."""
        engine = self._loaded.get(spec.id)
        if engine is None:
            engine = await self._load(spec)
        yield engine

    async def _load(self, spec: ModelSpec) -> Any:
        lock = self._locks.setdefault(spec.id, asyncio.Lock())
        async with lock:
            if spec.id in self._loaded:
                return self._loaded[spec.id]
            loader = self._loaders.get(spec.kind)
            if loader is None:
                raise RuntimeError(f"no engine is installed for {spec.kind} models")
            started = time.perf_counter()
            engine = await anyio.to_thread.run_sync(loader, spec)
            log.info("loaded %s in %.2f s", spec.id, time.perf_counter() - started)
            self._loaded[spec.id] = engine
            return engine

    def close(self) -> None:
        self._loaded.clear()
