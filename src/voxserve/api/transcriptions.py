"""`POST /v1/audio/transcriptions` and `POST /v1/audio/translations`: one handler, a task flag."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from voxserve.api.forms import FormReader, parse_number
from voxserve.api.openapi_bodies import TRANSCRIPTION_BODY, TRANSLATION_BODY
from voxserve.api.sse import DONE, sse_error, sse_event, sse_response
from voxserve.diarize.params import DiarizeParams
from voxserve.diarize.wiring import is_diarization_model
from voxserve.domain import Segment, Task, without_leading_space
from voxserve.errors import InvalidInput, ServiceError, model_not_found, server_error
from voxserve.formats.transcript import (
    diarized_segment_object,
    logprob_objects,
    render_transcript,
)
from voxserve.languages import normalize_language
from voxserve.stt.engine import DecodeEnd, VadSettings
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import (
    StreamItem,
    StreamStart,
    build_transcript,
    render_options,
    tokens_usage,
)

log = logging.getLogger("voxserve.api")

router = APIRouter()

GRANULARITIES = {"word", "segment"}
INCLUDABLE = {"logprobs", "language_probabilities"}  # the second: extension
DECODING_MODES = {"chunked", "sequential"}  # the `decoding` extension (config: `decoding`)


@router.post("/v1/audio/transcriptions", openapi_extra=TRANSCRIPTION_BODY)
async def create_transcription(request: Request) -> Response:
    return await _speech_to_text(request, "transcribe")


@router.post("/v1/audio/translations", openapi_extra=TRANSLATION_BODY)
async def create_translation(request: Request) -> Response:
    return await _speech_to_text(request, "translate")


async def _speech_to_text(request: Request, task: Task) -> Response:
    req = await read_speech_to_text_request(request, task)
    diarized = is_diarization_model(req.model.spec)
    service = request.app.state.services.transcriber_for(req.model.spec)
    if req.wants_stream:
        items = service.decode(req, request.state.context)
        start = await anext(items)  # errors up to here are plain HTTP errors
        # OpenAI streams diarization as whole speaker segments, everything else as deltas.
        event = diarized_segment_object if diarized else delta_event(req)
        return sse_response(transcript_events(req, start, items, event))
    transcript = await service.transcribe(req, request.state.context)
    rendered = render_transcript(transcript, req.response_format, render_options(req, transcript))
    return Response(rendered.body, media_type=rendered.content_type)


def delta_event(req: SpeechToTextRequest) -> Callable[[Segment], dict | None]:
    """`transcript.text.delta` per segment; the first loses Whisper's leading space so the
    deltas join into exactly the final text, and its tokens lose it too so that they spell the
    delta (as OpenAI's do)."""
    first = True

    def event(segment: Segment) -> dict | None:
        nonlocal first
        text, logprobs = segment.text, segment.logprobs
        if first:
            text, logprobs = text.lstrip(), without_leading_space(logprobs)
        if not text:
            return None
        first = False
        payload: dict = {"type": "transcript.text.delta", "delta": text}
        if req.include_logprobs:
            payload["logprobs"] = logprob_objects(logprobs)
        return payload

    return event


async def transcript_events(
    req: SpeechToTextRequest,
    start: StreamStart,
    items: AsyncIterator[StreamItem],
    segment_event: Callable[[Segment], dict | None],
) -> AsyncIterator[bytes]:
    segments: list[Segment] = []
    end = DecodeEnd(0.0)
    try:
        # aclosing: a client that goes away closes the decoder too, which stops the worker.
        async with aclosing(items):
            async for item in items:
                if isinstance(item, DecodeEnd):
                    end = item
                    continue
                segments.append(item)
                payload = segment_event(item)
                if payload is not None:
                    yield sse_event(payload)
    except ServiceError as exc:
        yield sse_error(exc)
        return
    except Exception:
        log.exception("transcription stream failed")
        yield sse_error(server_error())
        return
    transcript = build_transcript(req, start, segments, end)
    done: dict = {"type": "transcript.text.done", "text": transcript.text}
    if req.include_logprobs:
        done["logprobs"] = logprob_objects(transcript.logprobs)
    done["usage"] = tokens_usage(transcript)
    yield sse_event(done)
    yield DONE


async def read_multipart(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        shown = content_type or "none"
        raise InvalidInput(
            f"Unsupported content type: '{shown}'. This API method only accepts "
            f"'multipart/form-data' requests, but you specified the header 'Content-Type: "
            f"{shown}'. Please try again with a supported content type.",
            code="unsupported_content_type",
        )
    max_bytes = request.app.state.settings.max_upload_bytes
    try:
        return await request.form(max_files=4, max_fields=200, max_part_size=max_bytes)
    except ServiceError:
        raise
    except Exception as exc:  # malformed multipart bodies
        raise InvalidInput(f"Could not parse the multipart form: {exc}") from exc


def _missing(field: str) -> InvalidInput:
    return InvalidInput(
        f"1 validation error for Request\nbody -> {field}\n  field required "
        "(type=value_error.missing)"
    )


async def read_speech_to_text_request(request: Request, task: Task) -> SpeechToTextRequest:
    form = await read_multipart(request)
    reader = FormReader(form)
    upload = reader.file("file")
    if upload is None:
        raise _missing("file")
    model_name = (reader.text("model") or "").strip()
    if not model_name:
        raise _missing("model")
    model = request.app.state.catalog.resolve(model_name)
    if model is None:
        raise model_not_found(model_name)
    if model.spec.kind != "stt":
        raise InvalidInput(
            f"Model '{model_name}' is not a speech-to-text model.",
            param="model",
            code="invalid_value",
        )

    language = None
    raw_language = reader.text("language")
    if raw_language is not None and raw_language.strip():
        language = normalize_language(raw_language)
        if language is None:
            raise InvalidInput(
                f"Invalid language '{raw_language}'. Language parameter must be specified in "
                "ISO-639-1 format.",
                param="language",
                code="invalid_language_format",
                extra={"usage": {"type": "duration", "seconds": 0}},
            )

    granularities = set(reader.values("timestamp_granularities"))
    unknown = granularities - GRANULARITIES
    if unknown:
        raise InvalidInput(
            f"Invalid value: '{sorted(unknown)[0]}'. Supported values are: 'word' and 'segment'.",
            param="timestamp_granularities",
            code="invalid_value",
        )

    include: set[str] = set()
    stream = False
    vad = None
    diarize = DiarizeParams()
    if task == "transcribe":  # translations have no include/stream/chunking_strategy fields
        include = set(reader.values("include"))
        unknown = include - INCLUDABLE
        if unknown:
            raise InvalidInput(
                f"Invalid value: '{sorted(unknown)[0]}'. Supported values are: 'logprobs' "
                "and 'language_probabilities'.",
                param="include",
                code="invalid_value",
            )
        stream = bool(reader.boolean("stream"))
        vad = parse_chunking_strategy(reader.object("chunking_strategy"))
        diarize = read_diarize_params(reader)

    return SpeechToTextRequest(
        task=task,
        model=model,
        audio=await upload.read(),
        response_format=(reader.text("response_format") or "json").strip() or "json",
        language=language,
        prompt=reader.text("prompt") or None,
        temperature=reader.number("temperature", 0.0, 1.0),
        timestamp_granularities=frozenset(granularities),
        include_logprobs="logprobs" in include,
        include_language_probabilities="language_probabilities" in include,
        stream=stream,
        vad=vad,
        diarize=diarize,
        extra=read_decoder_extensions(reader),
    )


def read_decoder_extensions(reader: FormReader) -> dict:
    """voxserve's per-request decoder settings (faster-whisper's own knobs), validated like
    OpenAI's fields; only the ones a client sends are returned."""
    values: dict = {
        "vad_filter": reader.boolean("vad_filter"),
        "condition_on_previous_text": reader.boolean("condition_on_previous_text"),
        "no_speech_threshold": reader.number("no_speech_threshold", 0.0, 1.0),
        "hallucination_silence_threshold": reader.number(
            "hallucination_silence_threshold", 0.0, 60.0
        ),
        "hotwords": reader.text("hotwords") or None,
    }
    beam_size = reader.number("beam_size", 1, 20)
    if beam_size is not None:
        if not float(beam_size).is_integer():
            raise InvalidInput(
                f"Invalid 'beam_size': expected an integer, but got {beam_size} instead.",
                param="beam_size",
                code="invalid_type",
            )
        values["beam_size"] = int(beam_size)
    decoding = reader.text("decoding")
    if decoding is not None:
        if decoding not in DECODING_MODES:
            raise InvalidInput(
                f"Invalid 'decoding': expected 'chunked' or 'sequential', got '{decoding}'.",
                param="decoding", code="invalid_value",
            )
        values["decoding"] = decoding
    if values["hotwords"] is not None and len(values["hotwords"]) > 1000:
        raise InvalidInput(
            "Invalid 'hotwords': at most 1000 characters.", param="hotwords", code="invalid_value"
        )
    return {k: v for k, v in values.items() if v is not None}


def read_diarize_params(reader: FormReader) -> DiarizeParams:
    """`known_speaker_names[]`/`known_speaker_references[]` (OpenAI) and voxserve's
    `min_speakers`/`max_speakers`; checked against each other by the diarizer."""
    low = reader.number("min_speakers", 1, 16)
    high = reader.number("max_speakers", 1, 16)
    return DiarizeParams(
        known_speaker_names=tuple(reader.values("known_speaker_names")),
        known_speaker_references=tuple(reader.values("known_speaker_references")),
        min_speakers=None if low is None else int(low),
        max_speakers=None if high is None else int(high),
    )


def parse_chunking_strategy(value: str | dict | None) -> VadSettings | None:
    """`auto` or a `server_vad` object (contract §2.1.2) as VAD settings; None when unset."""
    param = "chunking_strategy"
    if value is None:
        return None
    if isinstance(value, str):
        if value == "auto":
            return VadSettings()
        raise InvalidInput(
            f"Invalid value: '{value}'. Supported values are: 'auto' or a server_vad object.",
            param=param,
            code="invalid_value",
        )
    if value.get("type") != "server_vad":
        raise InvalidInput(
            f"Invalid '{param}.type': expected 'server_vad', got '{value.get('type')}'.",
            param=f"{param}.type",
            code="invalid_value",
        )
    defaults = VadSettings()
    threshold = value.get("threshold", defaults.threshold)
    prefix = value.get("prefix_padding_ms", defaults.prefix_padding_ms)
    silence = value.get("silence_duration_ms", defaults.silence_duration_ms)
    return VadSettings(
        threshold=parse_number(f"{param}.threshold", threshold, 0.0, 1.0),
        prefix_padding_ms=int(parse_number(f"{param}.prefix_padding_ms", prefix, 0, 10_000)),
        silence_duration_ms=int(
            parse_number(f"{param}.silence_duration_ms", silence, 0, 10_000)
        ),
    )
