"""Every error leaves as OpenAI's compact envelope, whatever raised it.

The core raises `voxserve.errors.ServiceError`s that say what went wrong; this module is the one
place that knows which HTTP status and headers each kind of failure gets.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from voxserve.errors import (
    Busy,
    ClientGone,
    Internal,
    InvalidInput,
    NotFound,
    ServiceError,
    TimedOut,
    TooLarge,
    Unauthorized,
    Unavailable,
    server_error,
)
from voxserve.formats.transcript import JSON_CONTENT_TYPE, compact_json

log = logging.getLogger("voxserve.api")

# Most specific first: a subclass of one of these gets its parent's status.
_STATUS: tuple[tuple[type[ServiceError], int], ...] = (
    (InvalidInput, 400),
    (Unauthorized, 401),
    (NotFound, 404),
    (TooLarge, 413),
    (Busy, 429),
    (ClientGone, 499),  # nginx's "client closed request": for the access log and metrics
    (Internal, 500),
    (Unavailable, 503),
    (TimedOut, 504),
)


def http_status(error: ServiceError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400 if error.type == "invalid_request_error" else 500


def http_headers(error: ServiceError) -> dict[str, str]:
    if isinstance(error, Busy):
        return {"retry-after": str(error.retry_after)}
    if isinstance(error, TimedOut):
        # A request that timed out in the queue may well succeed later; one that timed out
        # while running would only repeat the same work, so the SDK is told not to retry it.
        return {"x-should-retry": "true" if error.queued else "false"}
    if isinstance(error, Unavailable) and error.code == "not_ready":
        return {"retry-after": "1"}
    return {}


def error_response(error: ServiceError, status: int | None = None) -> Response:
    return Response(
        compact_json(error.envelope()),
        status_code=status or http_status(error),
        media_type=JSON_CONTENT_TYPE,
        headers=http_headers(error),
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        if http_status(exc) >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(InvalidInput(message), status=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = first.get("msg", "Invalid request")
        if param:
            message = f"Invalid '{param}': {message}"
        return error_response(InvalidInput(message, param=param, code="invalid_value"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(server_error())
