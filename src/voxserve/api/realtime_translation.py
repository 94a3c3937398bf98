"""The realtime translation edge: `GET /v1/realtime/translations?model=<id>` and
`POST /v1/realtime/translations/client_secrets`.

The same edge as live transcription (`voxserve.api.realtime_edge`): the same authentication
(header, subprotocol, ephemeral secret), session limit, maximum duration and event loop; only
the session differs (`voxserve.realtime.translation`). The socket closes after
`session.closed`.
"""

from __future__ import annotations

from contextlib import suppress

from fastapi import APIRouter, Request, WebSocket

from voxserve.api.realtime import read_secret_request
from voxserve.api.realtime_edge import run_socket
from voxserve.errors import InvalidInput
from voxserve.realtime.hub import RealtimeHub
from voxserve.realtime.translation import TranslationSession
from voxserve.realtime.translation_config import (
    TranslationModels,
    build_translation_config,
    merge_translation_update,
    resolve_translation_models,
    unknown_translation_model,
)

router = APIRouter()  # the WebSocket authenticates itself (header or subprotocol)
secrets_router = APIRouter()  # behind the usual API-key dependency


@router.websocket("/v1/realtime/translations")
async def realtime_translation(ws: WebSocket) -> None:
    if await run_socket(ws, lambda hub, initial: _open(ws, hub, initial or {})):
        with suppress(Exception):
            await ws.close(code=1000)


def _open(ws: WebSocket, hub: RealtimeHub, initial: dict) -> TranslationSession:
    if initial and initial.get("type") != "translation":
        raise InvalidInput(
            "This client secret was made for a transcription session: connect to "
            "/v1/realtime?intent=transcription, or create one with "
            "POST /v1/realtime/translations/client_secrets.", code="invalid_value",
        )
    models = _models(hub, ws.query_params.get("model") or initial.get("model"))
    # InvalidInput when the secret's session no longer checks out
    return hub.admit(lambda: TranslationSession(
        hub.passes, ws.app.state.tts, models, hub.resolve, hub.limits,
        hub.settings.realtime_translation_voice, initial, expires_at=hub.expires_at(),
    ))


def _models(hub: RealtimeHub, name: str | None) -> TranslationModels:
    if not name:
        raise InvalidInput(
            "Missing required parameter: 'model'. Translation sessions need a model query "
            "parameter.", param="model", code="missing_required_parameter",
        )
    models = resolve_translation_models(hub.catalog, hub.settings, name)
    if models is None:
        raise unknown_translation_model(name)
    return models


@secrets_router.post("/v1/realtime/translations/client_secrets")
async def create_translation_client_secret(request: Request) -> dict:
    hub: RealtimeHub = request.app.state.realtime
    body, seconds = await read_secret_request(request)
    session = body.get("session")
    if not isinstance(session, dict):
        raise InvalidInput("Missing required parameter: 'session'.", param="session",
                           code="missing_required_parameter")
    name = session.get("model")
    if not isinstance(name, str) or not name:
        raise InvalidInput("Missing required parameter: 'session.model'.",
                           param="session.model", code="missing_required_parameter")
    models = resolve_translation_models(hub.catalog, hub.settings, name)
    if models is None:
        raise unknown_translation_model(name)
    wire = merge_translation_update({"type": "translation"}, session)
    config = build_translation_config(wire, hub.settings.realtime_translation_voice, hub.resolve)
    value, expires_at = hub.secrets.create(wire, seconds)
    shown = {"id": "", "object": "realtime.translation_session", "type": "translation",
             "model": name, "expires_at": 0, **config.wire()}
    return {"value": value, "expires_at": expires_at, "session": shown}
