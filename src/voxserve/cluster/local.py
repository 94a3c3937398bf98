"""The services a process runs locally, built from the settings: the one place to swap for
the composition root `voxserve.services.build_services` once it exists. Until then they are
taken from the app `create_app` wires (no second copy of the wiring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxserve.config import Settings
from voxserve.runtime.catalog import Catalog
from voxserve.runtime.metrics import Metrics
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.scheduler import Scheduler


@dataclass
class LocalServices:
    settings: Settings
    catalog: Catalog
    metrics: Metrics
    pool: ModelPool
    scheduler: Scheduler
    stt: Any
    diarized_stt: Any
    tts: Any

    async def close(self) -> None:
        self.pool.close()


def build_local_services(settings: Settings) -> LocalServices:
    from voxserve.app import create_app

    state = create_app(settings).state
    return LocalServices(
        settings, state.catalog, state.metrics, state.pool, state.scheduler, state.stt,
        state.diarized_stt, state.tts,
    )
