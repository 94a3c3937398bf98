"""`create_app(settings)`: the HTTP door. The services come from the composition root
(`voxserve.services`); this module adds the routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI

from voxserve import __version__
from voxserve.api import (
    health,
    models,
    playground,
    realtime,
    speech,
    transcriptions,
)
from voxserve.api.auth import require_api_key
from voxserve.api.errors import install_error_handlers
from voxserve.api.middleware import (
    AccessLogMiddleware,
    RequestIdMiddleware,
    UploadLimitMiddleware,
)
from voxserve.config import Settings
from voxserve.realtime.hub import RealtimeHub
from voxserve.services import Services, build_services


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The OpenAI-compatible HTTP app over `services` (built from `settings` when not given;
    a cluster ingress passes services whose models live elsewhere)."""
    if services is None:
        services = build_services(settings or Settings())
    settings = services.settings
    app = FastAPI(
        title="voxserve", version=__version__, docs_url=None, redoc_url=None,  # /docs: playground
        lifespan=_lifespan,
    )
    app.state.services = services
    # The handlers' short names for what they use.
    app.state.settings = settings
    app.state.catalog = services.catalog
    app.state.metrics = services.metrics
    app.state.pool = services.pool
    app.state.scheduler = services.scheduler
    app.state.tts = services.tts

    install_error_handlers(app)
    protected = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(models.router, dependencies=protected)
    app.include_router(transcriptions.router, dependencies=protected)
    app.include_router(speech.router, dependencies=protected)
    # Realtime transcription sessions (voxserve.realtime): the WebSocket authenticates itself.
    # Both kinds (transcription, translation) share one hub: limits, secrets, services.
    app.state.realtime = RealtimeHub(
        settings, services.catalog, services.passes, services.tts
    )
    app.include_router(realtime.router)
    app.include_router(realtime.secrets_router, dependencies=protected)
    # The browser playground and offline /docs; the pages are open, their data calls are not.
    app.include_router(playground.router)

    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(AccessLogMiddleware, metrics=services.metrics)
    app.add_middleware(RequestIdMiddleware)

    app.state.preload_specs = services.preload_specs()
    app.state.preload_ids = [spec.id for spec in app.state.preload_specs]
    return app


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
        app.state.services.close()
