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

A phrase is translated before it has officially ended: once the speaker has paused for 200 ms
(and nothing else waits for the model), its translation starts on the audio so far; if the VAD
then ends the phrase with no more speech, that translation is the phrase's (the audio differs
only in trailing silence), so the VAD's 500 ms of silence and the decode overlap. Its speech
starts with the text's opening clause (`split_lead`), which Piper speaks in a fraction of the
time of a whole sentence; the rest follows while the first part plays.

`session.close` flushes: the phrase in progress is ended, everything queued is translated and
spoken, then `session.closed` is sent. A client that leaves (or any other end) cancels the
workers; a pass or a sentence in flight is dropped by the scheduler or stops after the
sentence it is on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
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
from voxserve.realtime.session import PAUSE, SessionLimits
from voxserve.realtime.session_base import Handler, SessionBase
from voxserve.realtime.session_config import ModelResolver
from voxserve.realtime.transcriber import (
    EarlyDecode,
    PassDecoder,
    PassOptions,
    PassResult,
    join,
)
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
from voxserve.tts.text import split_lead

log = logging.getLogger("voxserve.realtime")

TRANSLATION_CLIENT_EVENTS = (
    "session.update",
    "session.input_audio_buffer.append",
    "session.close",
)
FRAME_MS = 200  # OpenAI's translation frame: elapsed_ms advances in these steps
# Phrases are translated with beam search, as the file endpoint translates. Greedy phrases
# came out 0.15 s sooner (first audio p50 1.16 s against 1.31 s on the 42 s French clip) but
# lost 0.09 chrF against OpenAI's translation where beam 5 loses 0.02 (docs/benchmarks.md).
TRANSLATE_BEAM = 5
TRANSLATE = PassOptions(task="translate", beam_size=TRANSLATE_BEAM)


@dataclass(frozen=True)
class _Phrase:
    samples: np.ndarray
    elapsed_ms: int
    early: asyncio.Future[PassResult] | None = None  # its translation, started in the pause


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
        self._translator = PassDecoder(self.passes, self.models.translator, self.id,
                                       self._gone)
        self._early: EarlyDecode | None = None  # of the phrase in progress
        self._early_decodes: set[asyncio.Future] = set()  # every one not finished yet

    # -- lifecycle ---------------------------------------------------------------------

    def _workers_to_start(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        # The synthesizer waits for the source worker (the third) before it closes.
        return [
            (f"translate-{self.id}", self._recognize()),
            (f"speak-{self.id}", self._synthesize()),
            (f"source-{self.id}", self._transcribe_sources()),
        ]

    async def close(self) -> None:
        for decode in list(self._early_decodes):
            decode.cancel()
        await super().close()

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
            elif isinstance(turn, TurnStopped) and self._open is not None:
                self._end_phrase(turn.end, turn.voice_end)
            elif isinstance(turn, TurnCut) and self._open is not None:
                # Cut inside speech: no early translation is the phrase's.
                self._end_phrase(turn.at, None)
                self._open = turn.at  # the same speech goes on as a new phrase
        if self._open is None:
            # Between phrases only the prefix padding can still become part of one.
            padding = self._turns.prefix_padding_ms * SAMPLE_RATE // 1000
            self._buffer.drop_before(self._detector.position - padding - 1024)
        else:
            self._translate_in_pause()

    def _translate_in_pause(self) -> None:
        """Start the open phrase's translation once the speaker has paused, unless the
        recognizer is busy or other work waits for the model (it would only be delayed)."""
        voice_end = self._detector.voice_end
        if self._early is not None and not self._early.holds(voice_end):
            self._drop_early()  # the speaker went on
        if (self._early is not None or self._detector.trailing_silence < PAUSE
                or self._waiting or self.passes.waiting(self.models.translator.spec.id)):
            return
        assert self._open is not None
        samples = self._buffer.view(self._open).copy()
        self._early = EarlyDecode.start(self._translator.run(samples, TRANSLATE, final=True),
                                        voice_end)
        self._early_decodes.add(self._early.decode)
        self._early.decode.add_done_callback(self._early_decodes.discard)

    def _drop_early(self) -> None:
        if self._early is not None:
            log.debug("early translation dropped: the speaker went on (session %s)", self.id)
            self._early.cancel()
            self._early = None

    def _close_by_client(self, event: dict) -> None:
        if self._closing:
            return
        self._closing = True
        if self._open is not None:
            self._end_phrase(self._buffer.end, self._detector.voice_end)
        self._phrases.put_nowait(None)  # the workers finish what is queued, then close
        self._sources.put_nowait(None)

    def _end_phrase(self, end: int, voice_end: int | None) -> None:
        """The open phrase ends at `end`; `voice_end`: its last voiced sample, when known (an
        early translation started since is the phrase's)."""
        assert self._open is not None
        samples = self._buffer.view(self._open, end).copy()
        self._buffer.drop_before(end)
        self._open = None
        elapsed = math.ceil(end * 1000 / SAMPLE_RATE / FRAME_MS) * FRAME_MS
        early, self._early = self._early, None
        if early is not None and not early.holds(voice_end):
            early.cancel()
            early = None
        phrase = _Phrase(samples, elapsed, early.decode if early is not None else None)
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
        while (phrase := await self._phrases.get()) is not None:
            try:
                with self._errors_as_events("translation"):
                    result = await self._translate(phrase)
                    text = join(result.pieces).strip()
                    if text:
                        self._send_text("session.output_transcript.delta", text,
                                        phrase.elapsed_ms)
                        self._speech.put_nowait((text, phrase.elapsed_ms))
            finally:
                self._waiting -= phrase.samples.size
                self._check_backlog()
        self._speech.put_nowait(None)

    async def _translate(self, phrase: _Phrase) -> PassResult:
        if phrase.early is not None:
            log.debug("phrase at %d ms: translated in the pause (session %s)",
                      phrase.elapsed_ms, self.id)
            try:
                return await phrase.early
            except Exception:  # e.g. its deadline: translate the phrase as usual
                log.debug("early translation failed (session %s)", self.id, exc_info=True)
        return await self._translator.run(phrase.samples, TRANSLATE, final=True)

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
            with self._errors_as_events("speech"):
                # The opening clause alone first: its audio starts sooner, and the rest is
                # spoken while it plays.
                for part in split_lead(text):
                    if part:
                        await self._speak(part, elapsed)
        await self._workers[2]  # the source text of the last phrases, when asked for
        self._send("session.closed")
        self.outbox.put_nowait(None)  # the edge ends the connection

    async def _speak(self, text: str, elapsed: int) -> None:
        request = SpeechRequest(model=self.models.speaker, input=text,
                                voice=self.config.voice, response_format="pcm")
        ctx = RequestContext(f"{self.id}-speak-{time.monotonic_ns()}",
                             is_disconnected=self._gone)
        stream = await self.tts.open(request, ctx)
        try:
            async for chunk in stream.chunks:
                self._send("session.output_audio.delta",
                           delta=base64.b64encode(chunk).decode(), format="pcm16",
                           sample_rate=OUTPUT_RATE, channels=1, elapsed_ms=elapsed)
        finally:
            await stream.chunks.aclose()  # type: ignore[attr-defined]

    # -- events ------------------------------------------------------------------------

    def _send_text(self, type_: str, text: str, elapsed_ms: int) -> None:
        self._send(type_, delta=self._spaced(text, "output"), elapsed_ms=elapsed_ms)

    def _spaced(self, text: str, stream: str) -> str:
        # Deltas are append-only and clients join them as they come: phrases after the
        # first start with the space that separates them.
        said = stream in self._begun
        self._begun.add(stream)
        return f" {text}" if said else text
