"""Pure ASGI middleware: request ids (and the runtime's view of the request), access logs and
metrics, and the upload size limit.

The size limit is enforced on the raw body before anything parses it. A body announced larger
than the limit is read and thrown away (so the client, which is still sending, receives the
413 instead of a broken pipe) and never held in memory; a body with no announced size is
counted as it arrives and stopped at the limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.errors import upload_too_large
from voxserve.formats.transcript import compact_json
from voxserve.runtime.context import RequestContext, new_request_id
from voxserve.runtime.metrics import Metrics

access_log = logging.getLogger("voxserve.access")

# Past this many bytes an oversize upload is no longer drained: the connection is closed.
_DRAIN_FACTOR = 4


class RequestIdMiddleware:
    """Adds `x-request-id` to every response, as OpenAI does (the SDK exposes it), and gives the
    runtime a `RequestContext`: the id, the arrival time and a way to ask whether the client is
    still connected."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        watched, is_disconnected = _disconnect_probe(receive)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        # Handlers pass it on explicitly (`request.state.context`) to the services.
        state["context"] = RequestContext(request_id, is_disconnected=is_disconnected)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, watched, send_with_id)


def _disconnect_probe(receive: Receive) -> tuple[Receive, Callable[[], Awaitable[bool]]]:
    """A receive that notes the end of the body and a disconnect, and a check that asks the
    server without waiting (as Starlette's `Request.is_disconnected`). The check only reads
    once the body is complete: a read before that would swallow part of the upload."""
    state = {"body_done": False, "gone": False}

    async def watched() -> Message:
        message = await receive()
        if message["type"] == "http.disconnect":
            state["gone"] = True
        elif message["type"] == "http.request" and not message.get("more_body", False):
            state["body_done"] = True
        return message

    async def is_disconnected() -> bool:
        if state["gone"] or not state["body_done"]:
            return state["gone"]
        message: Message = {}
        with anyio.CancelScope() as scope:
            scope.cancel()  # take a message only if one is already there
            message = await receive()
        if message.get("type") == "http.disconnect":
            state["gone"] = True
        return state["gone"]

    return watched, is_disconnected


class AccessLogMiddleware:
    """One structured log line and the request metrics per HTTP request.

    The line is logfmt (`key=value`) for people and grep; the same fields ride along as
    `extra` attributes for JSON log formatters. The route label is the route's template (or
    `unmatched`), never the raw path, so that metrics stay bounded.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        ctx: RequestContext | None = scope.get("state", {}).get("context")
        model = (ctx.model if ctx else None) or ""
        self.metrics.requests.labels(route, model, str(status)).inc()
        self.metrics.request_latency.labels(route).observe(seconds)
        fields = {
            "request_id": ctx.request_id if ctx else "",
            "method": scope.get("method", ""),
            "path": scope.get("path", ""),
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "model": model,
            "queue_ms": round(ctx.queue_seconds * 1000, 1)
            if ctx and ctx.queue_seconds is not None else "",
            "client": (scope.get("client") or ("", ""))[0],
        }
        access_log.info(
            " ".join(f"{k}={v}" for k, v in fields.items() if v != ""), extra=fields
        )


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
