"""Live transcription's doors: `GET /v1/realtime?intent=transcription` and
`POST /v1/realtime/client_secrets`.

Everything protocol-level lives in `voxserve.realtime`, and the socket handling (authentication,
refusals, the event loop) in `voxserve.api.realtime_edge`; this module adds what OpenAI refuses
at a transcription connect, and the client secrets (whose body checks the translation door
shares).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, WebSocket

from voxserve.api.realtime_edge import run_socket
from voxserve.errors import InvalidInput, number_out_of_range
from voxserve.realtime.hub import SECRET_DEFAULT_SECONDS, SECRET_SECONDS, RealtimeHub
from voxserve.realtime.session import TranscriptionSession

router = APIRouter()  # the WebSocket authenticates itself (header or subprotocol)
secrets_router = APIRouter()  # behind the usual API-key dependency


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    await run_socket(ws, lambda hub, initial: _open(ws, hub, initial))


def _open(ws: WebSocket, hub: RealtimeHub, initial: dict | None) -> TranscriptionSession:
    _check_connect(ws)
    return hub.open(initial)  # InvalidInput for a secret made for another kind of session


def _check_connect(ws: WebSocket) -> None:
    query = ws.query_params
    if "realtime=v1" in (ws.headers.get("openai-beta") or "").replace(" ", ""):
        raise InvalidInput(
            "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA "
            "API.", code="beta_api_not_supported",
        )
    intent = query.get("intent")
    if intent == "transcription":
        if "model" in query:
            raise InvalidInput(
                "You must not provide a model parameter for transcription sessions.",
                param="model", code="invalid_value",
            )
        return
    raise InvalidInput(
        "This server offers realtime transcription sessions only: connect to "
        "/v1/realtime?intent=transcription.",
        param="intent", code="unsupported_value",
    )


@secrets_router.post("/v1/realtime/client_secrets")
async def create_client_secret(request: Request) -> dict:
    hub: RealtimeHub = request.app.state.realtime
    body, seconds = await read_secret_request(request)
    session = body.get("session") or {"type": "transcription"}
    wire = hub.check_session(session)
    value, expires_at = hub.secrets.create(wire, seconds)
    # The session object as the socket will show it, less what only a live session has.
    shown = hub.preview(wire)
    return {"value": value, "expires_at": expires_at, "session": shown}


async def read_secret_request(request: Request) -> tuple[dict, int]:
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
