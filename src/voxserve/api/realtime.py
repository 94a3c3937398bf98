"""The realtime WebSocket edge: `GET /v1/realtime?intent=transcription` and
`POST /v1/realtime/client_secrets`.

Everything protocol-level lives in `voxserve.realtime`; this module only authenticates,
refuses what OpenAI refuses at connect time, and moves events between the socket and the
session. Refusals are sent as an `error` event and then the socket is closed with a reason,
so that clients (the SDK included) can read why.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import suppress

from fastapi import APIRouter, Request, WebSocket
from starlette.websockets import WebSocketState

from voxserve.api.auth import MISSING_KEY, mask_key, presented_key
from voxserve.errors import (
    InvalidInput,
    ServiceError,
    Unauthorized,
    Unavailable,
    number_out_of_range,
)
from voxserve.realtime.events import error_event
from voxserve.realtime.hub import (
    SECRET_DEFAULT_SECONDS,
    SECRET_PREFIX,
    SECRET_SECONDS,
    RealtimeHub,
)
from voxserve.realtime.session import TranscriptionSession

log = logging.getLogger("voxserve.realtime")

KEY_SUBPROTOCOL = "openai-insecure-api-key."
# WebSocket close codes: 1008 policy violation (auth, refused requests), 1013 try again later.
POLICY = 1008
TRY_LATER = 1013

router = APIRouter()  # the WebSocket authenticates itself (header or subprotocol)
secrets_router = APIRouter()  # behind the usual API-key dependency


class _Refused(Exception):
    def __init__(self, error: ServiceError, close_code: int = POLICY) -> None:
        self.error, self.close_code = error, close_code


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    hub: RealtimeHub = ws.app.state.realtime
    offered = list(ws.scope.get("subprotocols") or [])
    chosen = "realtime" if "realtime" in offered else (offered[0] if offered else None)
    await ws.accept(subprotocol=chosen)
    try:
        initial = _authenticate(ws, hub, offered)
        _check_connect(ws)
        session = hub.open(initial)
    except _Refused as refused:
        await _refuse(ws, refused.error, refused.close_code)
        return
    except InvalidInput as error:  # a secret made for another kind of session
        await _refuse(ws, error, POLICY)
        return
    except Unavailable as error:
        await _refuse(ws, error, TRY_LATER)
        return
    try:
        await _serve(ws, session, hub.settings.realtime_max_session_seconds)
    finally:
        hub.release()


async def _serve(ws: WebSocket, session: TranscriptionSession, max_seconds: float) -> None:
    session.start()
    tasks = [
        asyncio.create_task(_read(ws, session)),
        asyncio.create_task(_write(ws, session)),
        asyncio.create_task(asyncio.sleep(max_seconds)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[2] in done:
            minutes = max_seconds / 60
            shown = f"{minutes:g} minutes" if minutes >= 1 else f"{max_seconds:g} seconds"
            await _refuse(ws, InvalidInput(
                f"Your session hit the maximum duration of {shown}.", code="session_expired"
            ), 1000)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await task
        await session.close()  # the worker stops; a pass in flight frees its slot on exit


async def _read(ws: WebSocket, session: TranscriptionSession) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        session.receive(data)


async def _write(ws: WebSocket, session: TranscriptionSession) -> None:
    try:
        while True:
            event = await session.outbox.get()
            if event is None:  # the session has said its last word (session.closed)
                return
            await ws.send_text(json.dumps(event, separators=(",", ":")))
    except Exception:  # the client is gone (however the server library says so)
        return


async def _refuse(ws: WebSocket, error: ServiceError, code: int) -> None:
    with suppress(Exception):
        await ws.send_text(json.dumps(error_event(error)))
        reason = (error.code or error.type)[:120]
        if ws.application_state != WebSocketState.DISCONNECTED:
            await ws.close(code=code, reason=reason)


def _authenticate(ws: WebSocket, hub: RealtimeHub, offered: list[str]) -> dict | None:
    """The session an ephemeral secret was made for, or None for the default session; raises
    _Refused for a missing or wrong key."""
    key = presented_key(ws.headers.get("authorization"))
    if key is None:
        for protocol in offered:
            if protocol.startswith(KEY_SUBPROTOCOL):
                key = protocol[len(KEY_SUBPROTOCOL):] or None
    if key is not None and key.startswith(SECRET_PREFIX):
        session = hub.secrets.session_for(key)
        if session is not None:
            return session
        raise _Refused(Unauthorized(
            "The ephemeral client secret is invalid or has expired. Create a new one with "
            "POST /v1/realtime/client_secrets.", code="invalid_api_key",
        ))
    keys = hub.settings.api_keys
    if not keys:
        return None
    if key is None:
        raise _Refused(Unauthorized(MISSING_KEY))
    matched = False
    for known in keys:  # every key compared in full: timing says nothing about which
        matched |= hmac.compare_digest(key.encode(), known.encode())
    if not matched:
        raise _Refused(Unauthorized(
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        ))
    return None


def _check_connect(ws: WebSocket) -> None:
    query = ws.query_params
    if "realtime=v1" in (ws.headers.get("openai-beta") or "").replace(" ", ""):
        raise _Refused(InvalidInput(
            "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA "
            "API.", code="beta_api_not_supported",
        ))
    intent = query.get("intent")
    if intent == "transcription":
        if "model" in query:
            raise _Refused(InvalidInput(
                "You must not provide a model parameter for transcription sessions.",
                param="model", code="invalid_value",
            ))
        return
    raise _Refused(InvalidInput(
        "This server offers realtime transcription sessions only: connect to "
        "/v1/realtime?intent=transcription.",
        param="intent", code="unsupported_value",
    ))


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
