"""The composition root: every door (the HTTP app, the CLI, a live session, a cluster replica)
builds what it serves from `build_services(settings)`, so they all see the same catalog,
aliases, engines, limits and scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from voxserve.config import Settings
from voxserve.diarize import wiring as diarize_wiring
from voxserve.diarize.service import DiarizedSpeechToText
from voxserve.runtime.blas import limit_blas_threads
from voxserve.runtime.catalog import Catalog, ModelSpec
from voxserve.runtime.metrics import Metrics
from voxserve.runtime.pool import ModelPool, PoolLimits
from voxserve.runtime.scheduler import Scheduler, SchedulerConfig
from voxserve.runtime.threads import WorkerPool
from voxserve.stt.engines import lane_slots, load_stt_engine
from voxserve.stt.passes import DecodePasses, ScheduledPasses
from voxserve.stt.service import SpeechToText, TranscriptionService
from voxserve.tts.engine import load_speech_engine
from voxserve.tts.models import register_speech_models
from voxserve.tts.service import TextToSpeech

log = logging.getLogger("voxserve")


@dataclass
class Services:
    """What one voxserve instance serves, and the runtime shared by everything in it."""

    settings: Settings
    catalog: Catalog
    metrics: Metrics
    pool: ModelPool
    workers: WorkerPool
    scheduler: Scheduler
    stt: SpeechToText
    diarized_stt: DiarizedSpeechToText
    tts: TextToSpeech
    passes: DecodePasses  # live sessions' decode passes

    def transcriber_for(self, spec: ModelSpec) -> TranscriptionService:
        """The speech-to-text pipeline that serves `spec` (a `+diarize` model adds speakers)."""
        return self.diarized_stt if diarize_wiring.is_diarization_model(spec) else self.stt

    def preload_specs(self) -> list[ModelSpec]:
        """The native models named in `preload`, each once."""
        specs: dict[str, ModelSpec] = {}
        for name in self.settings.preload:
            public = self.catalog.resolve(name)
            if public is None:
                raise ValueError(f"VOXSERVE_PRELOAD names unknown model {name!r}")
            specs[public.spec.id] = public.spec
        limit = self.settings.max_models
        if limit and len(specs) > limit:
            log.warning(
                "%d models are preloaded (and kept) but max_models is %d: the limit cannot hold",
                len(specs), limit,
            )
        return list(specs.values())

    def close(self) -> None:
        """Unload every model and stop the worker threads."""
        self.pool.close()
        self.workers.close()


def build_services(settings: Settings) -> Services:
    limit_blas_threads()  # the engines' thread layout owns the cores
    metrics = Metrics()
    catalog = Catalog(settings)
    limits = PoolLimits(
        ttl={"stt": settings.stt_model_ttl, "tts": settings.tts_model_ttl},
        max_models=settings.max_models,
        memory_bytes=settings.model_memory_mb * 2**20,
    )
    pool = ModelPool(
        {
            "stt": partial(load_stt_engine, settings=settings, metrics=metrics),
            "tts": partial(load_speech_engine, settings=settings),
        },
        limits,
        metrics,
    )
    # Every engine registers its models (and their OpenAI names) before aliases are checked.
    diarize_wiring.install(catalog, pool, settings)  # `<whisper>+diarize`, the OpenAI alias
    register_speech_models(catalog, settings)  # installed speech engines only
    for alias, target in catalog.broken_aliases().items():
        log.warning("alias %s points at unknown model %s; it is not served", alias, target)
    workers = WorkerPool()
    engines = sorted({p.spec.engine for p in catalog.public_models() if p.spec.kind == "stt"})
    config = SchedulerConfig.from_settings(settings, lane_slots(settings, engines))
    scheduler = Scheduler(pool, config, metrics, workers)
    return Services(
        settings=settings,
        catalog=catalog,
        metrics=metrics,
        pool=pool,
        workers=workers,
        scheduler=scheduler,
        stt=SpeechToText(settings, scheduler),
        diarized_stt=DiarizedSpeechToText(settings, pool, catalog, scheduler),
        tts=TextToSpeech(settings, pool, scheduler),
        passes=ScheduledPasses(scheduler),
    )
