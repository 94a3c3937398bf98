"""`GET /v1/models` and `GET /v1/models/{id}`, pretty-printed as OpenAI does (contract §5)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.responses import Response

from voxserve.errors import model_not_found
from voxserve.realtime.models import realtime_only_models
from voxserve.runtime.catalog import PublicModel

router = APIRouter()


def model_object(model: PublicModel) -> dict:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
    }


def _pretty(value: dict) -> Response:
    return Response(json.dumps(value, indent=2), media_type="application/json")


def _served(request: Request) -> list[PublicModel]:
    """The catalog's models, then the realtime-only transcription names (`gpt-transcribe`,
    `gpt-live-transcribe`, `gpt-realtime-whisper`) that a live session can use here."""
    catalog = request.app.state.catalog
    return [*catalog.public_models(),
            *realtime_only_models(catalog, request.app.state.settings)]


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    return _pretty({"object": "list", "data": [model_object(m) for m in _served(request)]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Response:
    model = request.app.state.catalog.resolve(model_id) or next(
        (m for m in _served(request) if m.id == model_id), None)
    if model is None:
        raise model_not_found(model_id)
    return _pretty(model_object(model))
