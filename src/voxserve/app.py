"""`create_app(settings)`: wires the catalog, model pool, services and routes together."""

from __future__ import annotations

import logging
from functools import partial

from fastapi import Depends, FastAPI

from voxserve import __version__
from voxserve.api import health, models, speech, transcriptions
from voxserve.api.auth import require_api_key
from voxserve.api.errors import install_error_handlers
from voxserve.api.middleware import RequestIdMiddleware, UploadLimitMiddleware
from voxserve.config import Settings
from voxserve.diarize import wiring as diarize_wiring
from voxserve.diarize.service import DiarizedSpeechToText
from voxserve.runtime.catalog import Catalog
from voxserve.runtime.pool import ModelPool
from voxserve.stt.engine import load_whisper
from voxserve.stt.service import SpeechToText
from voxserve.tts.engine import load_speech_engine
from voxserve.tts.models import register_speech_models
from voxserve.tts.service import TextToSpeech

log = logging.getLogger("voxserve")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="voxserve", version=__version__, docs_url="/docs", redoc_url=None)
    catalog = Catalog(settings)
    for alias, target in catalog.broken_aliases().items():
        log.warning("alias %s points at unknown model %s; it is not served", alias, target)
    pool = ModelPool({"stt": partial(load_whisper, settings=settings)})

    app.state.settings = settings
    app.state.catalog = catalog
    app.state.pool = pool
    app.state.stt = SpeechToText(settings, pool)
    # Diarization (voxserve.diarize): `<whisper>+diarize` ids and gpt-4o-transcribe-diarize.
    diarize_wiring.install(catalog, pool, settings)
    app.state.diarized_stt = DiarizedSpeechToText(settings, pool, catalog)
    # Text-to-speech: only installed engines are offered; each loads on first use.
    register_speech_models(catalog, settings)
    pool.add_loader("tts", partial(load_speech_engine, settings=settings))
    app.state.tts = TextToSpeech(settings, pool)

    install_error_handlers(app)
    protected = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(models.router, dependencies=protected)
    app.include_router(transcriptions.router, dependencies=protected)
    app.include_router(speech.router, dependencies=protected)

    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
