"""Server-sent events as OpenAI frames them: only `data:` lines, CRLF, ending `data: [DONE]`."""

from __future__ import annotations

from typing import Any

from starlette.responses import StreamingResponse

from voxserve.errors import ServiceError
from voxserve.formats.transcript import compact_json

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
DONE = b"data: [DONE]\r\n\r\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + compact_json(payload) + b"\r\n\r\n"


def sse_error(error: ServiceError) -> bytes:
    """An error after the stream began; the SDK raises APIError from its `error` key."""
    return sse_event(error.envelope())


def sse_response(events) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type=SSE_CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )
