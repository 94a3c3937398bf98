"""The HTTP side of diarized transcription: one JSON/text response, or a stream of
`transcript.text.segment` events then `transcript.text.done` (OpenAI sends no deltas here)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.responses import Response

from voxserve.api.sse import DONE, sse_error, sse_event, sse_response
from voxserve.diarize.service import DiarizedSpeechToText
from voxserve.domain import Segment
from voxserve.errors import APIError, server_error
from voxserve.formats.transcript import diarized_segment_object, render_transcript
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import StreamStart, build_transcript, render_options, tokens_usage

log = logging.getLogger("voxserve.diarize")


async def respond(service: DiarizedSpeechToText, req: SpeechToTextRequest) -> Response:
    if req.wants_stream:
        events = service.decode(req)
        start = await anext(events)  # errors up to here are plain HTTP errors
        return sse_response(_segment_events(req, start, events))
    transcript = await service.transcribe(req)
    rendered = render_transcript(transcript, req.response_format, render_options(req, transcript))
    return Response(rendered.body, media_type=rendered.content_type)


async def _segment_events(
    req: SpeechToTextRequest, start: StreamStart, segments: AsyncIterator[Segment]
) -> AsyncIterator[bytes]:
    collected: list[Segment] = []
    try:
        async with aclosing(segments):  # a client that leaves stops both models' work
            async for segment in segments:
                collected.append(segment)
                yield sse_event(diarized_segment_object(segment))
    except APIError as exc:
        yield sse_error(exc)
        return
    except Exception:
        log.exception("diarized transcription stream failed")
        yield sse_error(server_error())
        return
    transcript = build_transcript(req, start, collected)
    yield sse_event(
        {"type": "transcript.text.done", "text": transcript.text, "usage": tokens_usage(transcript)}
    )
    yield DONE
