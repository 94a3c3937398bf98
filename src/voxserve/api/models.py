"""`GET /v1/models` and `GET /v1/models/{id}`, pretty-printed as OpenAI does (contract §5)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.responses import Response

from voxserve.errors import model_not_found
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


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    models = request.app.state.catalog.public_models()
    return _pretty({"object": "list", "data": [model_object(m) for m in models]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Response:
    model = request.app.state.catalog.resolve(model_id)
    if model is None:
        raise model_not_found(model_id)
    return _pretty(model_object(model))
