"""The WebSocket edge both realtime session kinds share: the socket is accepted, the caller
authenticated (bearer header, `openai-insecure-api-key.` subprotocol or ephemeral secret),
connect-time refusals sent, and events moved between the socket and the session until either
side ends or the session reaches its maximum length.

A refusal is an `error` event and then a close frame with a reason, so that clients (the SDK
included) can read why: 1008 (policy) for authentication and bad requests, 1013 (try again
later) when the server is full.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from contextlib import suppress

from fastapi import WebSocket
from starlette.websockets import WebSocketState

from voxserve.api.auth import MISSING_KEY, mask_key, presented_key
from voxserve.errors import InvalidInput, ServiceError, Unauthorized, Unavailable
from voxserve.realtime.events import error_event
from voxserve.realtime.hub import SECRET_PREFIX, RealtimeHub
from voxserve.realtime.session_base import SessionBase

KEY_SUBPROTOCOL = "openai-insecure-api-key."
# WebSocket close codes: 1008 policy violation (auth, refused requests), 1013 try again later.
POLICY = 1008
TRY_LATER = 1013

# Given the hub and the session an ephemeral secret was made for (None: no secret), opens
# a session through the hub's limit, or raises the ServiceError that refuses the connection.
SessionOpener = Callable[[RealtimeHub, dict | None], SessionBase]


async def run_socket(ws: WebSocket, open_session: SessionOpener) -> bool:
    """Accepts, authenticates and serves one connection; False when it was refused."""
    hub: RealtimeHub = ws.app.state.realtime
    offered = list(ws.scope.get("subprotocols") or [])
    chosen = "realtime" if "realtime" in offered else (offered[0] if offered else None)
    await ws.accept(subprotocol=chosen)
    try:
        session = open_session(hub, _authenticate(ws, hub, offered))
    except ServiceError as error:
        await _refuse(ws, error, TRY_LATER if isinstance(error, Unavailable) else POLICY)
        return False
    try:
        await _serve(ws, session, hub.settings.realtime_max_session_seconds)
    finally:
        hub.release()
    return True


async def _serve(ws: WebSocket, session: SessionBase, max_seconds: float) -> None:
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
        await session.close()  # the workers stop; a pass in flight frees its slot on exit


async def _read(ws: WebSocket, session: SessionBase) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        session.receive(data)


async def _write(ws: WebSocket, session: SessionBase) -> None:
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
    Unauthorized for a missing or wrong key."""
    key = presented_key(ws.headers.get("authorization"))
    if key is None:
        for protocol in offered:
            if protocol.startswith(KEY_SUBPROTOCOL):
                key = protocol[len(KEY_SUBPROTOCOL):] or None
    if key is not None and key.startswith(SECRET_PREFIX):
        session = hub.secrets.session_for(key)
        if session is not None:
            return session
        raise Unauthorized(
            "The ephemeral client secret is invalid or has expired. Create a new one with "
            "POST /v1/realtime/client_secrets.", code="invalid_api_key",
        )
    keys = hub.settings.api_keys
    if not keys:
        return None
    if key is None:
        raise Unauthorized(MISSING_KEY)
    matched = False
    for known in keys:  # every key compared in full: timing says nothing about which
        matched |= hmac.compare_digest(key.encode(), known.encode())
    if not matched:
        raise Unauthorized(
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )
    return None
