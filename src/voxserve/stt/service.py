"""The speech-to-text service, one for transcription and translation (the task is a flag):
open the upload, get the loaded engine, check what only the engine can tell (its
capabilities), decode speech lazily block by block (stt/pipeline.py), and build the
Transcript."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from voxserve.audio.blocks import cut_blocks
from voxserve.audio.decode import SAMPLE_RATE, open_audio
from voxserve.config import Settings
from voxserve.domain import Segment, Transcript
from voxserve.errors import InvalidInput
from voxserve.formats.transcript import RenderOptions, duration_usage
from voxserve.runtime.context import RequestContext
from voxserve.runtime.scheduler import Scheduler
from voxserve.stt.engine import (
    DecodeEnd,
    DecodeInfo,
    DecodeOptions,
    EngineCapabilities,
    SpeechToTextEngine,
)
from voxserve.stt.pipeline import decode_blocks
from voxserve.stt.request import SpeechToTextRequest, check_against_profile

# gpt-4o models count audio as about ten tokens a second (1.7 s -> 17 tokens in OpenAI's usage).
AUDIO_TOKENS_PER_SECOND = 10
# Where a block may be cut, counted back from its limit: long enough to always hold a pause.
BLOCK_SEARCH_SECONDS = 10
# The response formats that show segment times (json and text show only the text).
SEGMENT_TIME_FORMATS = frozenset({"verbose_json", "srt", "vtt", "diarized_json"})


@dataclass(frozen=True)
class StreamStart:
    """The first item of a decoding stream: what is known before any segment."""

    info: DecodeInfo


StreamItem = StreamStart | Segment | DecodeEnd


class TranscriptionService:
    """What every speech-to-text service offers: a stream of items, or the whole Transcript."""

    def check(self, req: SpeechToTextRequest) -> None:
        """The checks that read only the request's fields (OpenAI's rules for its model name),
        raising InvalidInput. `decode` runs them first; the cluster's ingress runs the local
        service's before calling a replica, so a request bound to fail never ships its upload
        across Ray."""
        check_against_profile(req)

    def decode(
        self, req: SpeechToTextRequest, ctx: RequestContext | None = None
    ) -> AsyncIterator[StreamItem]:
        raise NotImplementedError

    async def transcribe(
        self, req: SpeechToTextRequest, ctx: RequestContext | None = None
    ) -> Transcript:
        return await collect(req, self.decode(req, ctx))


class SpeechToText(TranscriptionService):
    def __init__(self, settings: Settings, scheduler: Scheduler) -> None:
        self._settings = settings
        self._scheduler = scheduler  # the instance's one queue, slots and deadline

    async def decode(
        self, req: SpeechToTextRequest, ctx: RequestContext | None = None
    ) -> AsyncIterator[StreamItem]:
        """A StreamStart, then segments as the engine finishes each one, then a DecodeEnd.

        Every check that can fail on the request or the file's start runs before the
        StreamStart is yielded, so a door that streams can still refuse the request as a
        whole until then (over HTTP: a plain error response instead of an SSE error event).
        """
        self.check(req)
        opened = await anyio.to_thread.run_sync(
            open_audio, req.audio, self._settings.max_audio_seconds
        )
        async with self._scheduler.admit(req.model.spec, ctx) as lease:
            engine: SpeechToTextEngine = lease.engine
            check_capabilities(req, engine.capabilities)
            options = decode_options(req, self._settings)
            block = int(self._settings.block_seconds * SAMPLE_RATE)
            search = min(block // 2, BLOCK_SEARCH_SECONDS * SAMPLE_RATE)
            # The first block holds what language detection reads, and no more (a stream
            # whose language is known: one window), so a stream's first words wait for that
            # much audio to be read and cut into chunks, not a whole block. (A whole response
            # keeps the longer block: chunks are balanced within a block, and a one-window
            # block is often cut into two half-empty chunks.)
            capabilities = engine.capabilities
            known = options.language is not None or capabilities.english_only
            first = int((capabilities.window_seconds if known and options.streamed
                         else capabilities.language_detection_seconds) * SAMPLE_RATE)

            def run():
                blocks = cut_blocks(opened.chunks(), block, search, first)
                for item in decode_blocks(engine, blocks, options):
                    if isinstance(item, DecodeEnd):
                        lease.audio_seconds = item.duration
                    yield StreamStart(item) if isinstance(item, DecodeInfo) else item

            async for item in lease.iterate(run):
                yield item


async def collect(req: SpeechToTextRequest, items: AsyncIterator[StreamItem]) -> Transcript:
    start: StreamStart | None = None
    end: DecodeEnd | None = None
    segments: list[Segment] = []
    async for item in items:
        if isinstance(item, StreamStart):
            start = item
        elif isinstance(item, DecodeEnd):
            end = item
        else:
            segments.append(item)
    assert start is not None and end is not None
    return build_transcript(req, start, segments, end)


def check_capabilities(req: SpeechToTextRequest, capabilities: EngineCapabilities) -> None:
    """What the request asks of the engine that it cannot do (checked once it is loaded)."""
    model = req.model.id
    if capabilities.english_only:
        hint = "Use a multilingual model such as 'whisper-base'."
        if req.task == "translate":
            raise InvalidInput(
                f"Model '{model}' is English-only and cannot translate. {hint}",
                param="model", code="unsupported_value",
            )
        if req.language not in (None, "en"):
            raise InvalidInput(
                f"Model '{model}' is English-only and cannot transcribe language "
                f"'{req.language}'. {hint}",
                param="language", code="unsupported_value",
            )
    if req.task == "translate" and not capabilities.translation:
        raise InvalidInput(
            f"Model '{model}' cannot translate.", param="model", code="unsupported_value"
        )
    if req.language is not None and not capabilities.transcribes(req.language):
        raise InvalidInput(
            f"Model '{model}' cannot transcribe language '{req.language}'.",
            param="language", code="unsupported_value",
        )
    wanted = (
        ("word timestamps", req.word_timestamps, capabilities.word_timestamps),
        ("logprobs", req.include_logprobs, capabilities.logprobs),
        ("a prompt", bool(req.prompt), capabilities.prompt),
    )
    for what, asked, offered in wanted:
        if asked and not offered:
            raise InvalidInput(
                f"Model '{model}' does not support {what}.", code="unsupported_value"
            )


def decode_options(req: SpeechToTextRequest, settings: Settings) -> DecodeOptions:
    # Per-request extensions (validated by the API layer) override the server's defaults.
    engine_options = {"beam_size": settings.beam_size, **req.extra}
    no_speech = engine_options.pop("no_speech_threshold", DecodeOptions.no_speech_threshold)
    decoding = engine_options.pop("decoding", settings.decoding)
    return DecodeOptions(
        task=req.task,
        language=req.language,
        prompt=req.prompt,
        # Omitted or 0 means the engine's own policy (Whisper's fallback ladder).
        temperature=req.temperature or None,
        word_timestamps=req.word_timestamps,
        logprobs=req.include_logprobs,
        chunking=req.vad,
        sequential=decoding == "sequential",
        streamed=req.wants_stream,
        segment_times=req.response_format in SEGMENT_TIME_FORMATS or req.word_timestamps,
        no_speech_threshold=no_speech,
        engine_options=engine_options,
    )


def build_transcript(
    req: SpeechToTextRequest, start: StreamStart, segments: list[Segment], end: DecodeEnd
) -> Transcript:
    return Transcript(
        task=req.task,
        language="en" if req.task == "translate" else start.info.language,
        duration=end.duration,
        segments=tuple(segments),
        language_probability=start.info.language_probability,
        language_probabilities=start.info.language_probabilities,
        text_tokens_in=start.info.prompt_tokens,
        output_tokens=end.output_tokens,
    )


def tokens_usage(transcript: Transcript) -> dict:
    audio_tokens = max(1, round(transcript.duration * AUDIO_TOKENS_PER_SECOND))
    input_tokens = audio_tokens + transcript.text_tokens_in
    return {
        "type": "tokens",
        "total_tokens": input_tokens + transcript.output_tokens,
        "input_tokens": input_tokens,
        "input_token_details": {
            "text_tokens": transcript.text_tokens_in,
            "audio_tokens": audio_tokens,
        },
        "output_tokens": transcript.output_tokens,
    }


def render_options(req: SpeechToTextRequest, transcript: Transcript) -> RenderOptions:
    """What goes into the JSON formats, by task and profile (contract §2.3, §3)."""
    usage = None
    if req.task == "transcribe":
        if req.profile.usage == "tokens":
            usage = tokens_usage(transcript)
        else:
            usage = duration_usage(transcript.duration)
    granularities = req.timestamp_granularities or frozenset({"segment"})
    return RenderOptions(
        usage=usage,
        segments="segment" in granularities,
        words="word" in granularities,
        logprobs=req.include_logprobs,
        language_probabilities=req.include_language_probabilities,
    )
