"""Every error leaves as OpenAI's compact envelope, whatever raised it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from voxserve.errors import APIError, server_error
from voxserve.formats.transcript import JSON_CONTENT_TYPE, compact_json

log = logging.getLogger("voxserve.api")


def error_response(error: APIError) -> Response:
    return Response(
        compact_json(error.envelope()),
        status_code=error.status,
        media_type=JSON_CONTENT_TYPE,
        headers=error.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        if exc.status >= 500:
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
        return error_response(APIError(message, status=exc.status_code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = first.get("msg", "Invalid request")
        if param:
            message = f"Invalid '{param}': {message}"
        return error_response(APIError(message, param=param, code="invalid_value"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(server_error())
