"""`POST /v1/audio/speech` (contract §4) and `GET /v1/audio/voices` (an extension).

The JSON body is read here rather than by FastAPI's model binding so that every mistake a
client can make leaves as OpenAI's error envelope with OpenAI's wording.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from voxserve.api.sse import DONE, sse_error, sse_event, sse_response
from voxserve.audio.encode import SPEECH_FORMATS
from voxserve.errors import (
    InvalidInput,
    ServiceError,
    model_not_found,
    number_out_of_range,
    server_error,
)
from voxserve.tts.models import speech_profile
from voxserve.tts.service import SpeechRequest, SpeechStream
from voxserve.tts.text import approx_tokens
from voxserve.tts.voices import unsupported_value

log = logging.getLogger("voxserve.api")

router = APIRouter()

MAX_INPUT_CHARS = 4096
MAX_INSTRUCTIONS_CHARS = 4096
SPEED_RANGE = (0.25, 4.0)
STREAM_FORMATS = ("audio", "sse")
KNOWN_FIELDS = {
    "model", "input", "voice", "instructions", "response_format", "speed", "stream_format",
}
# OpenAI sends each speech SSE delta as base64 of 4096 bytes of encoded audio (the last shorter).
SSE_AUDIO_BLOCK = 4096

BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)


@router.post("/v1/audio/speech")
async def create_speech(request: Request) -> Response:
    body = await read_json_body(request)
    speech = parse_speech_request(body, request.app.state.catalog)
    # Errors up to here are plain HTTP errors.
    stream = await request.app.state.tts.open(speech, request.state.context)
    if stream.sse:
        return sse_response(_speech_events(stream))
    # No Content-Length: Starlette sends it chunked, each sentence as soon as it is encoded.
    return StreamingResponse(stream.chunks, media_type=stream.content_type)


@router.get("/v1/audio/voices")
async def list_voices(request: Request, model: str | None = None) -> Response:
    """Per speech model: the voice names it accepts and the engine voice each one speaks with."""
    catalog = request.app.state.catalog
    if model is not None:
        public = catalog.resolve(model)
        if public is None or public.spec.kind != "tts":
            raise model_not_found(model)
        models = [public]
    else:
        models = [m for m in catalog.public_models() if m.spec.kind == "tts"]
    tts = request.app.state.tts
    data = []
    for public in models:
        engine = await tts.engine(public)
        mapping = tts.voice_map(public, engine)
        names = [*speech_profile(public).voices, *engine.voices]
        voices = [{"id": n, "engine_voice": mapping.get(n, n)} for n in dict.fromkeys(names)]
        data.append({"object": "speech.model", "model": public.id, "engine": public.spec.id,
                     "voices": voices})
    return Response(json.dumps({"object": "list", "data": data}, indent=2),
                    media_type="application/json")


async def read_json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        shown = content_type or "none"
        raise InvalidInput(
            f"Unsupported content type: '{shown}'. This API method only accepts "
            f"'application/json' requests, but you specified the header 'Content-Type: "
            f"{shown}'. Please try again with a supported content type.",
            code="unsupported_content_type",
        )
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(BAD_JSON) from None
    if not isinstance(body, dict):
        raise InvalidInput(BAD_JSON)
    return body


def parse_speech_request(body: dict[str, Any], catalog) -> SpeechRequest:
    """A validated SpeechRequest, or the error OpenAI would answer."""
    for name in body:
        if name not in KNOWN_FIELDS:
            raise InvalidInput(
                f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"
            )
    for name in ("model", "input", "voice"):
        if body.get(name) is None:
            raise InvalidInput(
                f"Missing required parameter: '{name}'.", param=name,
                code="missing_required_parameter",
            )
    model_name = _string(body, "model")
    model = catalog.resolve(model_name)
    if model is None:
        raise model_not_found(model_name)
    if model.spec.kind != "tts":
        raise InvalidInput(
            f"Model '{model_name}' is not a text-to-speech model.",
            param="model", code="invalid_value",
        )
    text = _string(body, "input")
    _check_length("input", text, MAX_INPUT_CHARS)
    profile = speech_profile(model)
    if profile.max_input_tokens is not None:
        tokens = approx_tokens(text)
        if tokens > profile.max_input_tokens:
            raise InvalidInput(
                f"Input of {tokens} tokens is over the maximum input limit of "
                f"{profile.max_input_tokens} tokens. Please shorten your input.",
                code="invalid_value",
            )
    instructions = body.get("instructions")
    if instructions is not None:
        instructions = _string(body, "instructions", allow_empty=True)
        _check_length("instructions", instructions, MAX_INSTRUCTIONS_CHARS)
    response_format = _choice(body, "response_format", tuple(SPEECH_FORMATS), "mp3")
    stream_format = _choice(body, "stream_format", STREAM_FORMATS, "audio")
    return SpeechRequest(
        model=model,
        input=text,
        voice=_voice(body["voice"]),
        response_format=response_format,
        speed=_speed(body.get("speed")),
        instructions=instructions,
        stream_format=stream_format,
    )


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an integer", float: "a decimal", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), "null")


def _invalid_type(param: str, expected: str, value: Any) -> InvalidInput:
    return InvalidInput(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param, code="invalid_type",
    )


def _string(body: dict[str, Any], param: str, allow_empty: bool = False) -> str:
    value = body[param]
    if not isinstance(value, str):
        raise _invalid_type(param, "a string", value)
    if not value and not allow_empty:
        raise InvalidInput(
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param=param, code="empty_string",
        )
    return value


def _check_length(param: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidInput(
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{limit}, but got a string with length {len(value)} instead.",
            param=param, code="string_above_max_length",
        )


def _choice(body: dict[str, Any], param: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(param)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _invalid_type(param, "a string", value)
    if value not in allowed:
        raise unsupported_value(param, value, allowed)
    return value


def _voice(value: Any) -> str:
    """A voice name, or a custom voice object `{"id": ...}` (its id is looked up as a name)."""
    if isinstance(value, dict):
        voice_id = value.get("id")
        if not isinstance(voice_id, str) or not voice_id:
            raise InvalidInput(
                "Missing required parameter: 'voice.id'.", param="voice.id",
                code="missing_required_parameter",
            )
        return voice_id
    if not isinstance(value, str):
        raise _invalid_type("voice", "a string or an object", value)
    return value


def _speed(value: Any) -> float:
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid_type("speed", "a decimal", value)
    low, high = SPEED_RANGE
    if not low <= value <= high:
        raise number_out_of_range("speed", value, low, high)
    return float(value)


async def _speech_events(stream: SpeechStream) -> AsyncIterator[bytes]:
    try:
        async with aclosing(_blocks(stream.chunks, SSE_AUDIO_BLOCK)) as blocks:
            async for block in blocks:
                audio = base64.b64encode(block).decode()
                yield sse_event({"type": "speech.audio.delta", "audio": audio})
    except ServiceError as exc:
        yield sse_error(exc)
        return
    except Exception:
        log.exception("speech stream failed")
        yield sse_error(server_error())
        return
    yield sse_event({"type": "speech.audio.done", "usage": stream.usage()})
    yield DONE


async def _blocks(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Re-cut a byte stream into blocks of exactly `size` bytes (the last one shorter)."""
    pending = b""
    async with aclosing(chunks):
        async for chunk in chunks:
            pending += chunk
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
    if pending:
        yield pending
