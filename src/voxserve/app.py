"""`create_app(settings)`: wires the catalog, model pool, services and routes together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial

from fastapi import Depends, FastAPI

from voxserve import __version__
from voxserve.api import health, models, realtime, speech, transcriptions
from voxserve.api.auth import require_api_key
from voxserve.api.errors import install_error_handlers
from voxserve.api.middleware import (
    AccessLogMiddleware,
    RequestIdMiddleware,
    UploadLimitMiddleware,
)
from voxserve.config import Settings
from voxserve.diarize import wiring as diarize_wiring
from voxserve.diarize.service import DiarizedSpeechToText
from voxserve.realtime.hub import RealtimeHub
from voxserve.runtime.catalog import Catalog, ModelSpec
from voxserve.runtime.metrics import Metrics
from voxserve.runtime.pool import ModelPool, PoolLimits
from voxserve.runtime.scheduler import Scheduler, SchedulerConfig
from voxserve.stt.engine import load_whisper
from voxserve.stt.service import SpeechToText
from voxserve.tts.engine import load_speech_engine
from voxserve.tts.models import register_speech_models
from voxserve.tts.service import TextToSpeech

log = logging.getLogger("voxserve")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="voxserve", version=__version__, docs_url="/docs", redoc_url=None,
        lifespan=_lifespan,
    )
    catalog = Catalog(settings)
    for alias, target in catalog.broken_aliases().items():
        log.warning("alias %s points at unknown model %s; it is not served", alias, target)
    metrics = Metrics()
    limits = PoolLimits(
        ttl={"stt": settings.stt_model_ttl, "tts": settings.tts_model_ttl},
        max_models=settings.max_models,
        memory_bytes=settings.model_memory_mb * 2**20,
    )
    pool = ModelPool(
        {"stt": partial(load_whisper, settings=settings, metrics=metrics)}, limits, metrics
    )
    scheduler = Scheduler(pool, SchedulerConfig.from_settings(settings), metrics)

    app.state.settings = settings
    app.state.catalog = catalog
    app.state.metrics = metrics
    app.state.pool = pool
    app.state.scheduler = scheduler
    app.state.stt = SpeechToText(settings, pool, scheduler)
    # Diarization (voxserve.diarize): `<whisper>+diarize` ids and gpt-4o-transcribe-diarize.
    diarize_wiring.install(catalog, pool, settings)
    app.state.diarized_stt = DiarizedSpeechToText(settings, pool, catalog, scheduler)
    # Text-to-speech: only installed engines are offered; each loads on first use.
    register_speech_models(catalog, settings)
    pool.add_loader("tts", partial(load_speech_engine, settings=settings))
    app.state.tts = TextToSpeech(settings, pool, scheduler)

    install_error_handlers(app)
    protected = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(models.router, dependencies=protected)
    app.include_router(transcriptions.router, dependencies=protected)
    app.include_router(speech.router, dependencies=protected)
    # Realtime transcription sessions (voxserve.realtime): the WebSocket authenticates itself.
    app.state.realtime = RealtimeHub(settings, catalog, scheduler)
    app.include_router(realtime.router)
    app.include_router(realtime.secrets_router, dependencies=protected)

    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)

    # Last, once every engine has registered its models in the catalog.
    app.state.preload_specs = _preload_specs(settings, catalog)
    app.state.preload_ids = [spec.id for spec in app.state.preload_specs]
    return app


def _preload_specs(settings: Settings, catalog: Catalog) -> list[ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for name in settings.preload:
        public = catalog.resolve(name)
        if public is None:
            raise ValueError(f"VOXSERVE_PRELOAD names unknown model {name!r}")
        specs[public.spec.id] = public.spec
    if settings.max_models and len(specs) > settings.max_models:
        log.warning(
            "%d models are preloaded (and kept) but max_models is %d: the limit cannot hold",
            len(specs), settings.max_models,
        )
    return list(specs.values())


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Preloading runs beside serving: /health answers at once, /ready once it is done.
    preloading = None
    if app.state.preload_specs:
        preloading = asyncio.create_task(app.state.pool.preload(app.state.preload_specs))
    try:
        yield
    finally:
        if preloading is not None:
            preloading.cancel()
            with suppress(asyncio.CancelledError):
                await preloading
        app.state.pool.close()
