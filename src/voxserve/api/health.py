"""Liveness (`/health`), readiness (`/ready`) and Prometheus metrics (`/metrics`), all open
without an API key: they are for load balancers and scrapers, and reveal no transcripts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from voxserve.api.errors import error_response
from voxserve.errors import Unavailable
from voxserve.runtime.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict:
    return {
        "status": "ok",
        "loaded_models": request.app.state.pool.loaded_ids(),
        "busy_workers": request.app.state.scheduler.workers.active,
    }


@router.get("/ready", response_model=None)
async def ready(request: Request) -> Response | dict:
    """200 once every model named in `preload` is loaded; 503 (OpenAI's envelope) until then,
    or for good when one of them failed to load."""
    pool = request.app.state.pool
    wanted: list[str] = request.app.state.preload_ids
    missing = [m for m in wanted if not pool.is_loaded(m)]
    if not missing:
        return {"status": "ready", "loaded_models": pool.loaded_ids()}
    failures = {m: pool.load_failure(m) for m in missing if pool.load_failure(m)}
    if failures:
        detail = "; ".join(f"{m}: {why}" for m, why in failures.items())
        message = f"Not ready: preloading failed for {detail}."
    else:
        message = f"Not ready: still loading {', '.join(missing)}."
    return error_response(
        Unavailable(message, code="not_ready")
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE)
