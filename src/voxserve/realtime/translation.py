"""A realtime translation session: speech in, English text and speech out, as it goes.

Built from the transcription session's parts: `AudioInput` decodes the 24 kHz PCM16 appends,
`StreamingVad` + `TurnDetector` (server_vad) cut the stream into phrases, and `PassDecoder`
runs each phrase through the scheduler with Whisper's translate task, exactly as a
transcription session's final pass does. The English text of a phrase then goes to the speech
service (`TextToSpeech.open`, also through the scheduler), which speaks it sentence by sentence.
Both are the instance's services: on a cluster the passes and the speech run on model replicas.

Two workers make a pipeline, so the next phrase is translated while the last one is spoken:
the *recognizer* translates phrases in order, the *synthesizer* speaks their text in order;
when `audio.input.transcription` is set, a third worker transcribes the phrases too. Every
event of a phrase carries `elapsed_ms`: the input time (ms since the first sample, in 200 ms
frames) at which the phrase ended, so a client can line the output up with the input.

`session.close` flushes: the phrase in progress is ended, everything queued is translated and
spoken, then `session.closed` is sent. A client that leaves (or any other end) cancels the
workers; a pass or a sentence in flight is dropped by the scheduler or stops after the
sentence it is on.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.audio.encode import OUTPUT_RATE
from voxserve.errors import InvalidInput
from voxserve.realtime.audio_in import AudioInput, InputFormat
from voxserve.realtime.session import SessionLimits
from voxserve.realtime.session_base import Handler, SessionBase
from voxserve.realtime.session_config import ModelResolver
from voxserve.realtime.transcriber import PassDecoder, PassOptions, join
from voxserve.realtime.translation_config import (
    TranslationConfig,
    TranslationModels,
    build_translation_config,
    merge_translation_update,
)
from voxserve.realtime.turns import (
    TurnConfig,
    TurnCut,
    TurnDetector,
    TurnStarted,
    TurnStopped,
)
from voxserve.runtime.catalog import PublicModel
from voxserve.runtime.context import RequestContext
from voxserve.stt.passes import DecodePasses
from voxserve.tts.service import SpeechRequest, TextToSpeech

TRANSLATION_CLIENT_EVENTS = (
    "session.update",
    "session.input_audio_buffer.append",
    "session.close",
)
FRAME_MS = 200  # OpenAI's translation frame: elapsed_ms advances in these steps
# Phrases are translated greedily (with Whisper's temperature fallback when a decode fails its
# checks): the phrase's speech waits on this pass, and beam search costs several times more.
TRANSLATE_BEAM = 1


@dataclass(frozen=True)
class _Phrase:
    samples: np.ndarray
    elapsed_ms: int


@dataclass(frozen=True)
class _Source:
    phrase: _Phrase
    model: PublicModel  # the session's transcription model when the phrase ended


@dataclass
class TranslationSession(SessionBase):
    passes: DecodePasses
    tts: TextToSpeech
    models: TranslationModels
    resolve_transcriber: ModelResolver
    limits: SessionLimits
    default_voice: str
    initial: dict  # the wire session it starts with (empty, or an ephemeral secret's)

    CLIENT_EVENTS = TRANSLATION_CLIENT_EVENTS

    def __post_init__(self) -> None:
        super().__post_init__()
        self._wire = self.initial
        self.config: TranslationConfig = self._build(self._wire)
        self._audio = AudioInput(InputFormat())  # 24 kHz PCM16, the only format OpenAI takes
        self._turns = TurnConfig()
        self._detector = TurnDetector(self._turns, int(self.limits.max_turn_seconds * SAMPLE_RATE))
        self._open: int | None = None  # where the phrase in progress starts
        self._phrases: asyncio.Queue[_Phrase | None] = asyncio.Queue()
        self._speech: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        self._sources: asyncio.Queue[_Source | None] = asyncio.Queue()
        self._waiting = 0  # samples of phrases not yet translated
        self._begun: set[str] = set()  # the text streams that have sent a delta
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------

    def _workers_to_start(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        # The synthesizer waits for the source worker (the third) before it closes.
        return [
            (f"translate-{self.id}", self._recognize()),
            (f"speak-{self.id}", self._synthesize()),
            (f"source-{self.id}", self._transcribe_sources()),
        ]

    def session_object(self) -> dict:
        return {"id": self.id, "object": "realtime.translation_session", "type": "translation",
                "model": self.models.name, "expires_at": self.expires_at,
                **self.config.wire()}

    def _build(self, wire: dict) -> TranslationConfig:
        return build_translation_config(wire, self.default_voice, self.resolve_transcriber)

    # -- client events -----------------------------------------------------------------

    def _handlers(self) -> dict[str, Handler]:
        return {
            "session.update": self._update,
            "session.input_audio_buffer.append": self._append,
            "session.close": self._close_by_client,
        }

    def _update(self, event: dict) -> None:
        update = self._session_field(event)
        if isinstance(update, dict) and update.get("model") not in (None, self.models.name):
            raise InvalidInput(
                "The session's model is set when it is created and cannot be changed with "
                "session.update.", param="session.model", code="invalid_value",
            )
        wire = merge_translation_update(self._wire, update)
        self.config, self._wire = self._build(wire), wire
        self._send("session.updated", session=self.session_object())

    def _append(self, event: dict) -> None:
        if self._closing:
            raise InvalidInput("The session is closing: no more audio is accepted.",
                               code="session_closing")
        limit = self.limits.max_buffer_seconds
        samples = self._take_audio(
            event, limit,
            f"The input audio buffer is full: a phrase may hold at most {limit:g} seconds "
            "of audio.",
        )
        for turn in self._detector.push(self._vad.push(samples)):
            if isinstance(turn, TurnStarted):
                self._open = turn.start
            elif isinstance(turn, (TurnStopped, TurnCut)) and self._open is not None:
                end = turn.end if isinstance(turn, TurnStopped) else turn.at
                self._end_phrase(end)
                if isinstance(turn, TurnCut):  # the same speech goes on as a new phrase
                    self._open = end
        if self._open is None:
            # Between phrases only the prefix padding can still become part of one.
            padding = self._turns.prefix_padding_ms * SAMPLE_RATE // 1000
            self._buffer.drop_before(self._detector.position - padding - 1024)

    def _close_by_client(self, event: dict) -> None:
        if self._closing:
            return
        self._closing = True
        if self._open is not None:
            self._end_phrase(self._buffer.end)
        self._phrases.put_nowait(None)  # the workers finish what is queued, then close
        self._sources.put_nowait(None)

    def _end_phrase(self, end: int) -> None:
        assert self._open is not None
        samples = self._buffer.view(self._open, end).copy()
        self._buffer.drop_before(end)
        self._open = None
        elapsed = math.ceil(end * 1000 / SAMPLE_RATE / FRAME_MS) * FRAME_MS
        phrase = _Phrase(samples, elapsed)
        self._phrases.put_nowait(phrase)
        if self.config.transcriber is not None:
            self._sources.put_nowait(_Source(phrase, self.config.transcriber))
        self._waiting += samples.size
        self._check_backlog()

    def _check_backlog(self) -> None:
        seconds = self._waiting / SAMPLE_RATE
        self._report_backlog(
            seconds, self.limits.max_backlog_seconds,
            f"The server cannot keep up with this session: {seconds:.0f} seconds of "
            "speech are waiting to be translated. Their translations will follow, late; "
            "send audio no faster than real time or use fewer sessions.",
        )

    # -- the recognizer: phrase -> English text (and the source text) --------------------

    async def _recognize(self) -> None:
        decoder = PassDecoder(self.passes, self.models.translator, self.id, self._gone)
        translate = PassOptions(task="translate", beam_size=TRANSLATE_BEAM)
        while (phrase := await self._phrases.get()) is not None:
            try:
                with self._errors_as_events("translation"):
                    result = await decoder.run(phrase.samples, translate, final=True)
                    text = join(result.pieces).strip()
                    if text:
                        self._send_text("session.output_transcript.delta", text,
                                        phrase.elapsed_ms)
                        self._speech.put_nowait((text, phrase.elapsed_ms))
            finally:
                self._waiting -= phrase.samples.size
                self._check_backlog()
        self._speech.put_nowait(None)

    async def _transcribe_sources(self) -> None:
        """The source text, on a worker of its own: it is optional, so the translation of the
        next phrase never waits for it."""
        while (source := await self._sources.get()) is not None:
            decoder = PassDecoder(self.passes, source.model, self.id, self._gone)
            options = PassOptions(beam_size=self.limits.beam_size)
            with self._errors_as_events("source transcription"):
                result = await decoder.run(source.phrase.samples, options, final=True)
                text = join(result.pieces).strip()
                if text:
                    self._send("session.input_transcript.delta",
                               delta=self._spaced(text, "input"),
                               elapsed_ms=source.phrase.elapsed_ms)

    # -- the synthesizer: English text -> PCM16 deltas -----------------------------------

    async def _synthesize(self) -> None:
        while (said := await self._speech.get()) is not None:
            text, elapsed = said
            request = SpeechRequest(model=self.models.speaker, input=text,
                                    voice=self.config.voice, response_format="pcm")
            ctx = RequestContext(f"{self.id}-speak-{time.monotonic_ns()}",
                                 is_disconnected=self._gone)
            with self._errors_as_events("speech"):
                stream = await self.tts.open(request, ctx)
                try:
                    async for chunk in stream.chunks:
                        self._send("session.output_audio.delta",
                                   delta=base64.b64encode(chunk).decode(), format="pcm16",
                                   sample_rate=OUTPUT_RATE, channels=1, elapsed_ms=elapsed)
                finally:
                    await stream.chunks.aclose()  # type: ignore[attr-defined]
        await self._workers[2]  # the source text of the last phrases, when asked for
        self._send("session.closed")
        self.outbox.put_nowait(None)  # the edge ends the connection

    # -- events ------------------------------------------------------------------------

    def _send_text(self, type_: str, text: str, elapsed_ms: int) -> None:
        self._send(type_, delta=self._spaced(text, "output"), elapsed_ms=elapsed_ms)

    def _spaced(self, text: str, stream: str) -> str:
        # Deltas are append-only and clients join them as they come: phrases after the
        # first start with the space that separates them.
        said = stream in self._begun
        self._begun.add(stream)
        return f" {text}" if said else text
