"""The speech pipeline: text -> sentences -> PCM per sentence -> encoded bytes, streamed.

Synthesis and encoding run in one worker thread per request (runtime.threads), sentence by
sentence, and each sentence's bytes are handed to the event loop as soon as they exist. When
the client goes away the consumer stops and the worker stops after the sentence it is on.

A speech request takes a slot in its model's lane (runtime.scheduler) like a transcription:
a full queue is `Busy`, the request deadline `TimedOut`, and the slot (with the model, which the
pool must not unload while it speaks) is held until the last chunk is out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from voxserve.audio.encode import SPEECH_FORMATS, AudioEncoder
from voxserve.config import Settings
from voxserve.errors import Internal, ServiceError
from voxserve.runtime.catalog import PublicModel
from voxserve.runtime.context import RequestContext
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.scheduler import Scheduler
from voxserve.tts.engine import SpeechEngine
from voxserve.tts.models import speech_profile
from voxserve.tts.text import approx_tokens, split_sentences
from voxserve.tts.voices import resolve_voice, voice_map

log = logging.getLogger("voxserve.tts")

# Input with nothing to read (only emoji or punctuation) becomes this much silence: a valid,
# playable file is friendlier to a chat client than an error for a message like "👍".
SILENCE_FOR_NOTHING = 0.25
# OpenAI's usage for its one recorded stream is about 26 output tokens per second of audio.
AUDIO_TOKENS_PER_SECOND = 25


@dataclass(frozen=True)
class SpeechRequest:
    model: PublicModel
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float = 1.0
    instructions: str | None = None  # accepted; neither engine can follow it (docs/speech.md)
    stream_format: str = "audio"


@dataclass
class SynthesisStats:
    """Filled in by the worker as it goes; read once the stream has ended."""

    sample_rate: int
    sentences: int
    sentences_done: int = 0
    samples: int = 0

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


@dataclass
class SpeechStream:
    content_type: str
    chunks: AsyncIterator[bytes]
    stats: SynthesisStats
    input_tokens: int
    sse: bool = False

    def usage(self) -> dict:
        output = math.ceil(self.stats.seconds * AUDIO_TOKENS_PER_SECOND)
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": output,
            "total_tokens": self.input_tokens + output,
        }


class TextToSpeech:
    def __init__(self, settings: Settings, pool: ModelPool, scheduler: Scheduler) -> None:
        self._settings = settings
        self._pool = pool
        self._scheduler = scheduler  # the instance's one queue, slots and deadline

    async def engine(self, model: PublicModel) -> SpeechEngine:
        """The loaded engine, for a quick look (voices); speaking goes through `open`."""
        try:
            async with self._pool.use(model.spec) as engine:
                return engine
        except ServiceError:
            raise
        except Exception as exc:
            raise _load_failed(model, exc) from exc

    def voice_map(self, model: PublicModel, engine: SpeechEngine) -> dict[str, str]:
        configured = {
            "piper": self._settings.piper_voices, "kokoro": self._settings.kokoro_voices,
        }.get(model.spec.options.get("engine"), {})
        return voice_map(engine.default_voice_map, configured)

    async def open(self, req: SpeechRequest, ctx: RequestContext | None = None) -> SpeechStream:
        """Take a slot, load the engine and check the voice (errors raise here, before any
        byte is sent), then hand back the stream of encoded audio."""
        chunks = self._speak(req, ctx)
        # The generator is started here, so the slot it holds is released by its `finally`
        # however the stream ends, even if the response never sends a byte.
        try:
            stats = await anext(chunks)
        except ServiceError:
            raise
        except Exception as exc:  # anything else before the first byte: the engine's load
            raise _load_failed(req.model, exc) from exc
        assert isinstance(stats, SynthesisStats)
        return SpeechStream(
            content_type=SPEECH_FORMATS[req.response_format].content_type,
            chunks=chunks,  # type: ignore[arg-type]  # bytes from here on
            stats=stats,
            input_tokens=approx_tokens(req.input) + approx_tokens(req.instructions or ""),
            sse=req.stream_format == "sse" and speech_profile(req.model).sse,
        )

    async def _speak(
        self, req: SpeechRequest, ctx: RequestContext | None
    ) -> AsyncIterator[SynthesisStats | bytes]:
        """Yields the request's SynthesisStats once it is admitted and ready, then its bytes."""
        async with self._scheduler.admit(req.model.spec, ctx) as lease:
            engine: SpeechEngine = lease.engine
            voice = resolve_voice(
                req.voice, speech_profile(req.model).voices, self.voice_map(req.model, engine),
                engine.voices,
            )
            sentences = split_sentences(req.input)
            stats = SynthesisStats(engine.sample_rate, len(sentences))
            yield stats
            work = partial(
                render_speech, engine, sentences, voice, req.speed, req.response_format, stats
            )
            async for chunk in lease.iterate(work):
                yield chunk
            lease.audio_seconds = stats.seconds


def _load_failed(model: PublicModel, exc: Exception) -> Internal:
    log.exception("loading speech model %s failed", model.spec.id)
    return Internal(f"The speech model '{model.id}' could not be loaded: {exc}")


def render_speech(
    engine: SpeechEngine,
    sentences: list[str],
    voice: str,
    speed: float,
    response_format: str,
    stats: SynthesisStats,
) -> Iterator[bytes]:
    """Blocking: the encoded bytes of each sentence as soon as it is spoken, then the tail."""
    rate = engine.sample_rate
    encoder = AudioEncoder(response_format, rate)

    def encode(pcm: np.ndarray) -> bytes:
        stats.samples += len(pcm)
        return encoder.encode(pcm)

    try:
        if not sentences:
            out = encode(np.zeros(int(SILENCE_FOR_NOTHING * rate), np.float32))
            if out:
                yield out
        pause = np.zeros(int(engine.sentence_pause / speed * rate), np.float32)
        for index, sentence in enumerate(sentences):
            out = encode(pause) if index else b""
            for pcm in engine.synthesize(sentence, voice, speed):
                out += encode(pcm)
            stats.sentences_done += 1
            log.debug("synthesized sentence %d/%d", index + 1, len(sentences))
            if out:
                yield out
        tail = encoder.finish()
        if tail:
            yield tail
    finally:
        encoder.close()
        # Tests and operators read this to see that a disconnect stopped the work.
        log.debug("synthesis ended after %d/%d sentences", stats.sentences_done, len(sentences))
