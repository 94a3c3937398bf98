"""Pure ASGI middleware: request ids and the upload size limit.

The size limit is enforced on the raw body before anything parses it. A body announced larger
than the limit is read and thrown away (so the client, which is still sending, receives the
413 instead of a broken pipe) and never held in memory; a body with no announced size is
counted as it arrives and stopped at the limit.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.errors import upload_too_large
from voxserve.formats.transcript import compact_json

# Past this many bytes an oversize upload is no longer drained: the connection is closed.
_DRAIN_FACTOR = 4


class RequestIdMiddleware:
    """Adds `x-request-id` to every response, as OpenAI does (the SDK exposes it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            read = await _drain(receive, self.max_bytes * _DRAIN_FACTOR)
            await _send_413(send, self.max_bytes, max(read, announced))
            return
        await self.app(scope, _counting(receive, self.max_bytes), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _drain(receive: Receive, cap: int) -> int:
    read = 0
    while read <= cap:
        message = await receive()
        if message["type"] != "http.request":
            break
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return read


async def _send_413(send: Send, limit: int, read: int) -> None:
    body = compact_json(upload_too_large(limit, read).envelope())
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _counting(receive: Receive, limit: int) -> Receive:
    read = 0

    async def counted() -> Message:
        nonlocal read
        message = await receive()
        if message["type"] == "http.request":
            read += len(message.get("body", b""))
            if read > limit:
                raise upload_too_large(limit, read)
        return message

    return counted
