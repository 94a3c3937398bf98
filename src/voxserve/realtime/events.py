"""The JSON events of a realtime session: ids, server event builders, client event parsing.

Errors are `APIError`s (the domain's error records); `error_event` renders one as OpenAI's
`error` event, echoing the client event's id when the error answers one.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from voxserve.errors import InvalidInput, ServiceError

# OpenAI refuses a single append over 15 MiB of base64 text.
MAX_APPEND_BYTES = 15 * 2**20

TRANSCRIPTION_CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


def new_id(prefix: str) -> str:
    """OpenAI's id style: a prefix and 22 characters (`event_…`, `item_…`, `sess_…`)."""
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


def server_event(type_: str, **fields: Any) -> dict:
    return {"type": type_, "event_id": new_id("event"), **fields}


def error_event(error: ServiceError, client_event_id: str | None = None) -> dict:
    return server_event("error", error={
        "type": error.type,
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "event_id": client_event_id,
    })


def invalid_json(detail: str) -> InvalidInput:
    return InvalidInput(
        f"Invalid JSON in the client event: {detail}. Each WebSocket message must be one JSON "
        "object with a 'type'.",
        code="invalid_json",
    )


def unknown_event(value: object, supported: tuple[str, ...]) -> InvalidInput:
    if value == "transcription_session.update":  # the beta shape's update
        return InvalidInput(
            "Passing a transcription session update event to a realtime session is not "
            "allowed.", param="type", code="invalid_value",
        )
    shown = ", ".join(f"'{s}'" for s in supported[:-1]) + f", and '{supported[-1]}'"
    return InvalidInput(
        f"Invalid value: '{value}'. Supported values are: {shown}.",
        param="type",
        code="invalid_value",
    )


# The beta API's shape (the `OpenAI-Beta: realtime=v1` header) is refused at connect with this
# code, and the socket closed with 4000: an application close code, which the SDK does not
# reconnect after.
BETA_SHAPE_DISABLED = "beta_api_shape_disabled"


def beta_api_refused() -> InvalidInput:
    return InvalidInput(
        "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
        code=BETA_SHAPE_DISABLED,
    )


def missing_parameter(param: str) -> InvalidInput:
    return InvalidInput(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def wrong_type(param: str, expected: str, value: object) -> InvalidInput:
    return InvalidInput(
        f"Invalid type for '{param}': expected {expected}, but got "
        f"{_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def parse_client_event(text: str | bytes, supported: tuple[str, ...]) -> dict:
    """A client event as a dict with a known `type`; raises the error to send otherwise.

    The caller reads `event.get("event_id")` first-hand only after this succeeded; an event
    rejected here still has its id echoed when one could be read (see `client_event_id`).
    """
    try:
        event = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_json(str(exc)) from None
    if not isinstance(event, dict):
        raise invalid_json(f"expected an object, got {_json_type(event)}")
    kind = event.get("type")
    if kind is None:
        raise missing_parameter("type")
    if kind not in supported:
        raise unknown_event(kind, supported)
    event_id = event.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise wrong_type("event_id", "a string", event_id)
    return event


def client_event_id(text: str | bytes) -> str | None:
    """The `event_id` of a client event, when it can be read at all (for error echoes)."""
    try:
        event = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None


def decode_audio_field(event: dict) -> bytes:
    """The raw bytes of an append's base64 `audio`, with OpenAI's refusals."""
    audio = event.get("audio")
    if audio is None:
        raise missing_parameter("audio")
    if not isinstance(audio, str):
        raise wrong_type("audio", "a string", audio)
    if len(audio) > MAX_APPEND_BYTES:
        raise InvalidInput(
            f"Invalid 'audio': string too long. Expected a string with maximum length "
            f"{MAX_APPEND_BYTES}, but got a string with length {len(audio)} instead.",
            param="audio",
            code="string_above_max_length",
        )
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "Invalid 'audio'. Expected base64-encoded audio bytes.",
            param="audio",
            code="invalid_value",
        ) from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
