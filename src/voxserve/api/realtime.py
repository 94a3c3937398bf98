"""The realtime doors: `GET /v1/realtime?intent=transcription` and
`GET /v1/realtime/translations?model=<id>` (WebSockets), and their client secrets,
`POST /v1/realtime/client_secrets` and `POST /v1/realtime/translations/client_secrets`.

Everything protocol-level lives in `voxserve.realtime` (each session kind's connect checks and
secret checks in `realtime/kinds.py`), the socket handling (authentication, refusals, the
event loop) in `voxserve.api.realtime_edge`; this module only routes.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, WebSocket

from voxserve.api.realtime_edge import run_socket
from voxserve.errors import InvalidInput, number_out_of_range
from voxserve.realtime.hub import SECRET_DEFAULT_SECONDS, SECRET_SECONDS, Grant, RealtimeHub
from voxserve.realtime.kinds import TRANSCRIPTION, TRANSLATION

router = APIRouter()  # the WebSockets authenticate themselves (header or subprotocol)
secrets_router = APIRouter()  # behind the usual API-key dependency


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    await run_socket(ws, TRANSCRIPTION)


@router.websocket("/v1/realtime/translations")
async def realtime_translation(ws: WebSocket) -> None:
    await run_socket(ws, TRANSLATION)


@secrets_router.post("/v1/realtime/client_secrets")
async def create_client_secret(request: Request) -> dict:
    return await _client_secret(request, TRANSCRIPTION)


@secrets_router.post("/v1/realtime/translations/client_secrets")
async def create_translation_client_secret(request: Request) -> dict:
    return await _client_secret(request, TRANSLATION)


async def _client_secret(request: Request, kind_name: str) -> dict:
    hub: RealtimeHub = request.app.state.realtime
    body, seconds = await _read_secret_request(request)
    wire, shown = hub.kinds[kind_name].secret_session(hub, body.get("session"))
    value, expires_at = hub.secrets.create(Grant(kind_name, wire), seconds)
    return {"value": value, "expires_at": expires_at, "session": shown}


async def _read_secret_request(request: Request) -> tuple[dict, int]:
    """A client-secret request's JSON body and its `expires_after.seconds` (checked)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise InvalidInput(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)", code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.", code="invalid_value")
    seconds = SECRET_DEFAULT_SECONDS
    expires = body.get("expires_after") or {}
    if isinstance(expires, dict) and expires.get("seconds") is not None:
        seconds = expires["seconds"]
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise InvalidInput("Invalid type for 'expires_after.seconds': expected an integer.",
                               param="expires_after.seconds", code="invalid_type")
        low, high = SECRET_SECONDS
        if not low <= seconds <= high:
            raise number_out_of_range("expires_after.seconds", seconds, low, high)
    return body, seconds
