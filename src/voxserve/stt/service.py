"""The speech-to-text pipeline, one for transcription and translation (the task is a flag):
decode the upload, get the loaded model, check what only the model can tell (is it
English-only?), decode speech lazily, and build the Transcript."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import anyio
import numpy as np

from voxserve.audio.decode import SAMPLE_RATE, decode_audio
from voxserve.config import Settings
from voxserve.domain import Segment, Transcript
from voxserve.errors import APIError
from voxserve.formats.transcript import RenderOptions, duration_usage
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.scheduler import Scheduler, SchedulerConfig
from voxserve.stt.engine import FALLBACK_TEMPERATURES, DecodeInfo, DecodeOptions, WhisperEngine
from voxserve.stt.request import SpeechToTextRequest, check_against_profile

# gpt-4o models count audio as about ten tokens a second (1.7 s -> 17 tokens in OpenAI's usage).
AUDIO_TOKENS_PER_SECOND = 10


@dataclass(frozen=True)
class StreamStart:
    """The first item of a decoding stream: what is known before any segment."""

    info: DecodeInfo
    engine: WhisperEngine


class SpeechToText:
    def __init__(
        self, settings: Settings, pool: ModelPool, scheduler: Scheduler | None = None
    ) -> None:
        self._settings = settings
        self._pool = pool
        # The server shares one scheduler (queue, slots, deadline); the CLI needs no limits.
        self._scheduler = scheduler or Scheduler(pool, SchedulerConfig())

    async def transcribe(self, req: SpeechToTextRequest) -> Transcript:
        """The whole transcript, for the non-streaming formats."""
        segments: list[Segment] = []
        start: StreamStart | None = None
        async for item in self.decode(req):
            if isinstance(item, StreamStart):
                start = item
            else:
                segments.append(item)
        assert start is not None
        return build_transcript(req, start, segments)

    async def decode(self, req: SpeechToTextRequest) -> AsyncIterator[StreamStart | Segment]:
        """A StreamStart, then segments as the engine finishes each one.

        Every check that can fail runs before the StreamStart is yielded, so a caller that
        streams can still answer with a plain HTTP error until then.
        """
        check_against_profile(req)
        audio = await anyio.to_thread.run_sync(
            decode_audio, req.audio, self._settings.max_audio_seconds
        )
        seconds = audio.size / SAMPLE_RATE
        async with self._scheduler.admit(req.model.spec, audio_seconds=seconds) as lease:
            engine = lease.engine
            check_language_support(req, engine)
            options = decode_options(req, self._settings)

            def run():
                segments, info = engine.transcribe(audio, options)
                yield StreamStart(_with_duration(info, audio), engine)
                yield from segments

            async for item in lease.iterate(run):
                yield item


def _with_duration(info: DecodeInfo, audio: np.ndarray) -> DecodeInfo:
    return DecodeInfo(info.language, info.language_probability, audio.size / SAMPLE_RATE)


def check_language_support(req: SpeechToTextRequest, engine: WhisperEngine) -> None:
    if engine.multilingual:
        return
    if req.task == "translate":
        raise APIError(
            f"Model '{req.model.id}' is English-only and cannot translate. "
            "Use a multilingual model such as 'whisper-base'.",
            param="model",
            code="unsupported_value",
        )
    if req.language not in (None, "en"):
        raise APIError(
            f"Model '{req.model.id}' is English-only and cannot transcribe language "
            f"'{req.language}'. Use a multilingual model such as 'whisper-base'.",
            param="language",
            code="unsupported_value",
        )


def decode_options(req: SpeechToTextRequest, settings: Settings) -> DecodeOptions:
    # Omitted or 0 means Whisper's fallback ladder; any other value is used as given.
    if not req.temperature:
        temperatures = FALLBACK_TEMPERATURES
    else:
        temperatures = (req.temperature,)
    return DecodeOptions(
        task=req.task,
        language=req.language,
        prompt=req.prompt,
        temperatures=temperatures,
        word_timestamps=req.word_timestamps,
        beam_size=settings.beam_size,
        vad=req.vad,
        extra=dict(req.extra),
    )


def build_transcript(
    req: SpeechToTextRequest, start: StreamStart, segments: list[Segment]
) -> Transcript:
    transcript = Transcript(
        task=req.task,
        language="en" if req.task == "translate" else start.info.language,
        duration=start.info.duration,
        segments=tuple(segments),
        language_probability=start.info.language_probability,
        text_tokens_in=start.engine.count_tokens(req.prompt or ""),
    )
    return replace(transcript, output_tokens=start.engine.count_tokens(transcript.text))


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
    )
