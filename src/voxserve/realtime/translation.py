"""A realtime translation session: speech in, English text and speech out, as it goes.

The same live pipeline as a transcription session (`pipeline.py`), with Whisper's translate
task: the segmenter cuts the 24 kHz PCM16 appends into phrases (server_vad), the pipeline
translates each phrase in order (its decode starts in the speaker's 200 ms pause, as a
transcription item's final pass does), and the speech stage (`speech_stage.py`) speaks the
English text, its opening clause first, while the next phrase is translated. When
`audio.input.transcription` is set, a second pipeline on the same phrases sends the source
text. Every event of a phrase carries `elapsed_ms`: the input time (ms since the first
sample, in 200 ms frames) at which the phrase ended, so a client can line the output up with
the input. On a cluster the passes and the speech run on model replicas.

`session.close` flushes: the phrase in progress is ended, everything queued is translated and
spoken, then `session.closed` is sent and the socket closes with 1000. A client that leaves
(or any other end) cancels the workers; a pass or a sentence in flight is dropped by the
scheduler or stops after the sentence it is on.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.errors import InvalidInput, ServiceError
from voxserve.realtime.audio_in import InputFormat
from voxserve.realtime.events import error_event, new_id
from voxserve.realtime.pipeline import LivePipeline, LiveUtterance
from voxserve.realtime.segmenter import Ended, Segmenter, SegmentEvent, Utterance
from voxserve.realtime.session_base import NORMAL, Handler, SessionBase, SessionLimits
from voxserve.realtime.session_config import ModelResolver
from voxserve.realtime.speakers import SpeakerSegment
from voxserve.realtime.speech_stage import FRAME_MS, SpeechStage
from voxserve.realtime.transcriber import (
    PassDecoder,
    PassOptions,
    Piece,
    UtteranceTranscriber,
)
from voxserve.realtime.translation_config import (
    TranslationConfig,
    TranslationModels,
    build_translation_config,
    merge_translation_update,
)
from voxserve.realtime.turns import TurnConfig, TurnStarted
from voxserve.stt.passes import DecodePasses
from voxserve.tts.service import TextToSpeech

TRANSLATION_CLIENT_EVENTS = (
    "session.update",
    "session.input_audio_buffer.append",
    "session.close",
)
# Phrases are translated with beam search, as the file endpoint translates. Greedy phrases
# came out 0.15 s sooner (first audio p50 1.16 s against 1.31 s on the 42 s French clip) but
# lost 0.09 chrF against OpenAI's translation where beam 5 loses 0.02 (docs/benchmarks.md).
TRANSLATE_BEAM = 5
TRANSLATE = PassOptions(task="translate", beam_size=TRANSLATE_BEAM)


def elapsed_ms(end: int) -> int:
    """The input time at which a phrase ended, in OpenAI's 200 ms frames."""
    return math.ceil(end * 1000 / SAMPLE_RATE / FRAME_MS) * FRAME_MS


class _Stream:
    """One append-only text stream (the translation, or the source text): phrases after the
    first start with the space that separates them, since clients join deltas as they come."""

    def __init__(self, session: TranslationSession, event: str) -> None:
        self._session = session
        self._event = event
        self._begun = False

    def send(self, text: str, elapsed: int) -> None:
        text = text.strip()
        if not text:
            return
        self._session._send(self._event, delta=f" {text}" if self._begun else text,
                            elapsed_ms=elapsed)
        self._begun = True


class _Translated:
    """The translate pipeline's sink: the text goes out, then to the speech stage."""

    def __init__(self, session: TranslationSession) -> None:
        self._session = session
        self._text = _Stream(session, "session.output_transcript.delta")

    def partial(self, utterance: LiveUtterance, pieces: list[Piece]) -> None:
        pass  # phrases are translated whole

    def final(self, utterance: LiveUtterance, rest: list[Piece],
              segments: list[SpeakerSegment] | None) -> None:
        assert utterance.ended is not None
        elapsed = elapsed_ms(utterance.ended.end)
        text = utterance.transcriber.text.strip()
        self._text.send(text, elapsed)
        if text:
            self._session.speech.say(text, elapsed)

    def failed(self, utterance: LiveUtterance, error: ServiceError) -> None:
        self._session.outbox.put_nowait(error_event(error))


class _Sources(_Translated):
    """The source pipeline's sink: the phrase's text in its own language."""

    def __init__(self, session: TranslationSession) -> None:
        self._session = session
        self._text = _Stream(session, "session.input_transcript.delta")

    def final(self, utterance: LiveUtterance, rest: list[Piece],
              segments: list[SpeakerSegment] | None) -> None:
        assert utterance.ended is not None
        self._text.send(utterance.transcriber.text, elapsed_ms(utterance.ended.end))


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
        limit = self.limits.max_buffer_seconds
        self.segmenter = Segmenter(  # 24 kHz PCM16, the only format OpenAI takes
            InputFormat(), TurnConfig(),
            max_turn_samples=int(self.limits.max_turn_seconds * SAMPLE_RATE),
            max_buffer_samples=int(limit * SAMPLE_RATE),
            full_message=f"The input audio buffer is full: a phrase may hold at most {limit:g} "
                         "seconds of audio.",
        )
        common = {"session_id": self.id, "errors_as_events": self._errors_as_events,
                  "partial_interval": None}
        self.pipeline = LivePipeline(self.passes, self.segmenter, _Translated(self), **common)
        self._sources = LivePipeline(self.passes, self.segmenter, _Sources(self), early=False,
                                     **common)
        self.speech = SpeechStage(self.tts, self.models.speaker, lambda: self.config.voice,
                                  self.id, self._gone, self._send_audio,
                                  self._errors_as_events)
        self._translator = PassDecoder(self.passes, self.models.translator, self.id,
                                       self._gone)
        self._closing = False
        self._sources_done = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def _workers_to_start(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        # Each stage a worker of its own, so a failing one ends the session (session_base).
        return [
            (f"translate-{self.id}", self._translate()),
            (f"source-{self.id}", self._transcribe_sources()),
            (f"speak-{self.id}", self._speak_then_close()),
        ]

    async def _translate(self) -> None:
        """Until the session closes and every phrase (and its source text) is done."""
        await self.pipeline.run()
        await self._sources_done.wait()
        self.speech.finish()

    async def _transcribe_sources(self) -> None:
        await self._sources.run()
        self._sources_done.set()

    async def _speak_then_close(self) -> None:
        await self.speech.run()
        self._send("session.closed")
        self._end(NORMAL)

    async def close(self) -> None:
        self.pipeline.close()
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

    def _refuse_append(self) -> None:
        if self._closing:
            raise InvalidInput("The session is closing: no more audio is accepted.",
                               code="session_closing")

    def _segments_pushed(self, events: list[SegmentEvent]) -> None:
        for event in events:
            if isinstance(event, TurnStarted):
                self.pipeline.begin(self._new_phrase(event.start))
            elif isinstance(event, Ended) and self.pipeline.open is not None:
                self._end_phrase(self.pipeline.open, event.utterance)
        self.pipeline.wake()

    def _close_by_client(self, event: dict) -> None:
        if self._closing:
            return
        self._closing = True
        last = self.segmenter.flush()
        if last is not None and self.pipeline.open is not None:
            self._end_phrase(self.pipeline.open, last)
        # The workers finish what is queued, then the session closes.
        self.pipeline.finish()
        self._sources.finish()

    # -- phrases -----------------------------------------------------------------------

    def _new_phrase(self, start: int) -> LiveUtterance:
        return LiveUtterance(new_id("phrase"), start,
                             UtteranceTranscriber(self._translator, TRANSLATE))

    def _end_phrase(self, phrase: LiveUtterance, utterance: Utterance) -> None:
        self.pipeline.commit(phrase, utterance)
        model = self.config.transcriber
        if model is not None:
            decoder = PassDecoder(self.passes, model, self.id, self._gone)
            source = LiveUtterance(phrase.id, utterance.start, UtteranceTranscriber(
                decoder, PassOptions(beam_size=self.limits.beam_size)))
            self._sources.commit(source, utterance)
        self._check_backlog()

    def _lag(self) -> float:
        # Every stage's: a phrase leaves the translator before it is spoken, and the source
        # text may fall behind on its own.
        return max(self.pipeline.lag(), self._sources.lag(), self.speech.lag())

    def _send_audio(self, frame: str, elapsed: int, rate: int) -> None:
        self._send("session.output_audio.delta", delta=frame, format="pcm16",
                   sample_rate=rate, channels=1, elapsed_ms=elapsed)
