"""Serve's HTTP proxy answers some failures itself, not through the ingress: in plain text, or,
when the ingress replica dies mid-request, with nothing at all (Ray's proxy sends no response
for a 500, and uvicorn then writes "Internal Server Error"). This ASGI middleware runs inside
every proxy (Serve's `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, which `deploy` sets for the
proxies it starts) and gives those answers OpenAI's envelope, so a client sees the same error
bodies whichever part of the cluster failed:

- no response at all (the ingress replica died): 503 `replica_unavailable`, which the SDK
  retries (Serve starts a new ingress replica meanwhile);
- a plain-text error of Serve's (503: no ingress replica; 429: the proxy's queue for the
  ingress is full; 408: Serve's own request timeout; 404: no application on that route yet):
  the same status and headers, Serve's text as the message.

The ingress's own responses (errors are JSON already), WebSockets and Serve's `/-/` routes
pass unchanged. A response the ingress had started before it died cannot be replaced: the
connection is closed mid-body, which clients see as a dropped connection.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.api.errors import error_response
from voxserve.errors import Busy, Internal, NotFound, ServiceError, Unavailable

# The import path Serve's proxies call for their middlewares (set by `deploy`).
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "voxserve.cluster.proxy_errors:proxy_middlewares"


def proxy_middlewares() -> list[Middleware]:
    return [Middleware(OpenAIErrors)]


def ingress_lost() -> Unavailable:
    return Unavailable(
        "The server's ingress replica stopped while working on this request. Please retry.",
        code="replica_unavailable",
    )


def serve_error(status: int, text: str, headers: Headers) -> ServiceError:
    """OpenAI's error for one of Serve's plain-text answers."""
    text = text.strip() or "The server could not handle this request. Please retry."
    if status == 429:
        retry_after = headers.get("retry-after", "1")
        return Busy(text, retry_after=int(retry_after) if retry_after.isdigit() else 1)
    if status == 404:
        return NotFound(text, code="not_found")
    if status == 408:
        return ServiceError(text, type="server_error", code="timeout")
    if status == 503:
        return Unavailable(text, code="service_unavailable")
    return Internal(text)


class OpenAIErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/-/"):
            # WebSockets, and Serve's own routes (`/-/healthz`, `/-/routes`: load balancers
            # read those as Serve writes them).
            await self.app(scope, receive, send)
            return
        started = False
        held: Message | None = None  # a plain-text error's start, until its body is complete
        body = b""

        async def replace_held() -> None:
            nonlocal held
            assert held is not None
            status, headers = held["status"], Headers(raw=held.get("headers", []))
            held = None
            error = serve_error(status, body.decode(errors="replace"), headers)
            await error_response(error, status)(scope, receive, send)

        async def relay(message: Message) -> None:
            nonlocal started, held, body
            if message["type"] == "http.response.start":
                started = True
                headers = Headers(raw=message.get("headers", []))
                if message["status"] >= 400 and "json" not in headers.get("content-type", ""):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    await replace_held()
                return
            await send(message)

        await self.app(scope, receive, relay)
        if not started:
            await error_response(ingress_lost())(scope, receive, send)
        elif held is not None:  # the body never finished
            await replace_held()
