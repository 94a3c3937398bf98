"""The WebSocket edge every realtime session kind shares: the socket is accepted, the caller
authenticated (bearer header, `openai-insecure-api-key.` subprotocol or ephemeral secret),
connect-time refusals sent, and events moved between the socket and the session until either
side ends or the session reaches its maximum length.

A refusal is an `error` event and then a close frame with a reason, so that clients (the SDK
included) can read why. Close codes follow the SDK's reconnect rules (it reconnects, up to
five times, after 1001, 1005, 1006, 1011-1013 and 1015): 1008 (policy) for authentication,
bad requests and a session that broke its limits, 1000 for a session that ended normally or
reached its maximum length, 1013 (try again later) only when the server is full, 1011 when a
session's worker failed. The key subprotocol is never echoed back: the handshake answers with
`realtime` (or nothing), so the key does not travel twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress

from fastapi import WebSocket
from starlette.websockets import WebSocketState

from voxserve.api.auth import check_key, presented_key
from voxserve.errors import InvalidInput, ServiceError, Unauthorized, Unavailable, server_error
from voxserve.realtime.events import BETA_SHAPE_DISABLED, error_event
from voxserve.realtime.hub import SECRET_PREFIX, Grant, RealtimeHub
from voxserve.realtime.session_base import INTERNAL, NORMAL, POLICY, SessionBase

log = logging.getLogger("voxserve.realtime")

KEY_SUBPROTOCOL = "openai-insecure-api-key."
TRY_LATER = 1013
BETA_SHAPE = 4000
# After the session's end, how long its last events may take to reach a client that reads.
DRAIN_SECONDS = 2.0


async def run_socket(ws: WebSocket, kind_name: str) -> None:
    """Accepts, authenticates and serves one connection of the named session kind."""
    hub: RealtimeHub = ws.app.state.realtime
    kind = hub.kinds[kind_name]
    offered = list(ws.scope.get("subprotocols") or [])
    await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
    try:
        grant = _authenticate(ws, hub, offered)
        kind.check_connect(ws.query_params, ws.headers)
        if grant is not None and grant.kind != kind.name:
            raise InvalidInput(
                f"This client secret was made for a {grant.kind} session, not a {kind.name} "
                "session: create one for this endpoint.", param="session.type",
                code="invalid_value",
            )
        initial = grant.session if grant is not None else None
        session = hub.admit(lambda: kind.open(hub, ws.query_params, initial))
    except ServiceError as error:
        await _close(ws, error, _refusal_code(error))
        return
    try:
        await _serve(ws, session, hub.settings.realtime_max_session_seconds)
    finally:
        hub.release()


def _refusal_code(error: ServiceError) -> int:
    if isinstance(error, Unavailable):
        return TRY_LATER
    return BETA_SHAPE if error.code == BETA_SHAPE_DISABLED else POLICY


async def _serve(ws: WebSocket, session: SessionBase, max_seconds: float) -> None:
    session.start()
    reading = asyncio.create_task(_read(ws, session))
    writing = asyncio.create_task(_write(ws, session))
    expiry = asyncio.create_task(asyncio.sleep(max_seconds))
    ended = asyncio.create_task(session.ended.wait())
    tasks = [reading, writing, expiry, ended]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if reading in done and reading.exception() is not None:
            log.error("realtime socket read failed (session %s)", session.id,
                      exc_info=reading.exception())
            await _close(ws, server_error(), INTERNAL)
        elif expiry in done:
            minutes = max_seconds / 60
            shown = f"{minutes:g} minutes" if minutes >= 1 else f"{max_seconds:g} seconds"
            await _close(ws, InvalidInput(
                f"Your session hit the maximum duration of {shown}.", code="session_expired"
            ), NORMAL)
        elif ended in done or writing in done:
            # The session said its last word: let it reach the client, then close as it said.
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writing), DRAIN_SECONDS)
            outbox = session.outbox
            if outbox.close_code is not None:
                await _close(ws, None, outbox.close_code, outbox.close_reason)
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
    while (text := await session.outbox.get_text()) is not None:
        try:
            await ws.send_text(text)
        except Exception:  # the client is gone (however the server library says so)
            log.debug("realtime client gone while writing (session %s)", session.id)
            return


async def _close(ws: WebSocket, error: ServiceError | None, code: int, reason: str = "") -> None:
    """An `error` event when there is one, then the close frame (if the client is still
    there to get it)."""
    with suppress(Exception):
        if error is not None:
            await ws.send_text(json.dumps(error_event(error)))
            reason = error.code or error.type
        if ws.application_state != WebSocketState.DISCONNECTED:
            await asyncio.wait_for(ws.close(code=code, reason=reason[:120]), DRAIN_SECONDS)


def _authenticate(ws: WebSocket, hub: RealtimeHub, offered: list[str]) -> Grant | None:
    """What an ephemeral secret was made for, or None for a default session; raises
    Unauthorized for a missing or wrong key."""
    key = presented_key(ws.headers.get("authorization"))
    if key is None:
        for protocol in offered:
            if protocol.startswith(KEY_SUBPROTOCOL):
                key = protocol[len(KEY_SUBPROTOCOL):] or None
    if key is not None and key.startswith(SECRET_PREFIX):
        grant = hub.secrets.grant_for(key)
        if grant is not None:
            return grant
        raise Unauthorized(
            "The ephemeral client secret is invalid or has expired. Create a new one with "
            "POST /v1/realtime/client_secrets.", code="invalid_api_key",
        )
    check_key(hub.settings.api_keys, key)
    return None
