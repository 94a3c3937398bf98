"""A realtime transcription session: OpenAI's GA transcription protocol over the live pipeline.

Transport-free: `receive(text)` takes a client event, server events go to `outbox` (the edge
sends them). The segmenter (`segmenter.py`) cuts the audio into turns (or the client commits);
each turn is an *item*, decoded by the live pipeline (`pipeline.py`): partial text while it
grows, a final pass once it is committed, speaker segments for diarization models. This
module only says what the client sees of that.

Per item the client sees `speech_started`, live `…transcription.delta`s, `speech_stopped`,
`committed` (with `previous_item_id`), `conversation.item.added`, the last deltas,
`…transcription.completed` (the deltas joined) and `conversation.item.done`.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.domain import Transcript
from voxserve.errors import ServiceError
from voxserve.formats.transcript import duration_usage
from voxserve.realtime.events import TRANSCRIPTION_CLIENT_EVENTS, new_id
from voxserve.realtime.models import COMMIT_ONLY_MODELS, labels_speakers
from voxserve.realtime.pipeline import LivePipeline, LiveUtterance
from voxserve.realtime.segmenter import Ended, Segmenter, SegmentEvent, Utterance
from voxserve.realtime.session_base import Handler, SessionBase, SessionLimits
from voxserve.realtime.session_config import (
    ModelResolver,
    SessionConfig,
    build_config,
    merge_update,
)
from voxserve.realtime.speakers import SessionSpeakers, SpeakerSegment
from voxserve.realtime.transcriber import (
    PassDecoder,
    PassOptions,
    Piece,
    UtteranceTranscriber,
    ends_sentence,
    join,
)
from voxserve.realtime.turns import IdleTimeout, TurnStarted
from voxserve.runtime.catalog import ModelSpec
from voxserve.stt.passes import DecodePasses
from voxserve.stt.profiles import profile_for
from voxserve.stt.service import tokens_usage

__all__ = ["SessionLimits", "TranscriptionSession"]


@dataclass
class TranscriptionSession(SessionBase):
    passes: DecodePasses
    resolve_model: ModelResolver
    limits: SessionLimits
    initial: dict  # the wire session it starts with (defaults, or an ephemeral secret's)
    # The diarizer of diarization models' items (None: none served, no speaker segments).
    diarizer: ModelSpec | None = field(default=None, kw_only=True)

    CLIENT_EVENTS = TRANSCRIPTION_CLIENT_EVENTS

    def __post_init__(self) -> None:
        super().__post_init__()
        self._wire = self.initial
        self.config: SessionConfig = build_config(self._wire, self.resolve_model)
        limit = self.limits.max_buffer_seconds
        self.segmenter = Segmenter(
            self.config.format, self.config.turn,
            max_turn_samples=int(self.limits.max_turn_seconds * SAMPLE_RATE),
            max_buffer_samples=int(limit * SAMPLE_RATE),
            full_message=f"The input audio buffer is full: it holds at most {limit:g} seconds "
                         "of uncommitted audio. Commit or clear it before appending more.",
            sentence_ended=self._sentence_ended,
        )
        self.pipeline = LivePipeline(
            self.passes, self.segmenter, self, session_id=self.id,
            errors_as_events=self._errors_as_events,
            partial_interval=self.config.partial_interval or self.limits.partial_interval,
            new_speakers=self._new_speakers,
        )
        self._last_item_id: str | None = None
        self._segments = 0  # speaker segments sent: their ids

    # -- lifecycle ---------------------------------------------------------------------

    def _workers_to_start(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return [(f"realtime-{self.id}", self.pipeline.run())]

    def session_object(self) -> dict:
        return {"id": self.id, "object": "realtime.transcription_session",
                "expires_at": self.expires_at, **self.config.wire()}

    async def close(self) -> None:
        self.pipeline.close()
        await super().close()

    # -- client events -----------------------------------------------------------------

    def _handlers(self) -> dict[str, Handler]:
        return {
            "session.update": self._update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit_by_client,
            "input_audio_buffer.clear": self._clear,
        }

    def _update(self, event: dict) -> None:
        wire = merge_update(self._wire, self._session_field(event))
        config = build_config(wire, self.resolve_model)
        old, self.config, self._wire = self.config, config, wire
        self.segmenter.set_format(config.format)
        self.pipeline.set_partial_interval(config.partial_interval or self.limits.partial_interval)
        if config.turn != old.turn:
            self.pipeline.discard_open()
            self.segmenter.set_turn(config.turn)
        self._send("session.updated", session=self.session_object())

    def _segments_pushed(self, events: list[SegmentEvent]) -> None:
        for event in events:
            if isinstance(event, TurnStarted):
                item = self._new_item(event.start)
                self.pipeline.begin(item)
                self._send("input_audio_buffer.speech_started", item_id=item.id,
                           audio_start_ms=_ms(event.start))
            elif isinstance(event, Ended) and self.pipeline.open is not None:
                item = self.pipeline.open
                self._send("input_audio_buffer.speech_stopped", item_id=item.id,
                           audio_end_ms=_ms(event.utterance.end))
                self._commit(item, event.utterance)
            elif isinstance(event, IdleTimeout):
                self._send("input_audio_buffer.timeout_triggered", item_id=new_id("item"),
                           audio_start_ms=_ms(event.start), audio_end_ms=_ms(event.end))
        if (self.config.model.id in COMMIT_ONLY_MODELS and self.pipeline.open is None
                and self.segmenter.held_samples):
            # A commit-only model's item is whatever the client will commit: it is open from
            # the first audio held, so its text streams (every `delay`) before the commit, as
            # these models' do at OpenAI. No VAD events: there are no turns. (Other models
            # with turn detection off decode on commit, as OpenAI's do.)
            self.pipeline.begin(self._new_item(self.segmenter.buffer_start))
        self.pipeline.wake()

    def _lag(self) -> float:
        return self.pipeline.lag()

    def _commit_by_client(self, event: dict) -> None:
        utterance = self.segmenter.commit()
        item = self.pipeline.open or self._new_item(utterance.start)
        self._commit(item, utterance)

    def _clear(self, event: dict) -> None:
        self.pipeline.discard_open()
        self.segmenter.clear()
        self._send("input_audio_buffer.cleared")

    # -- items -------------------------------------------------------------------------

    def _new_item(self, start: int) -> LiveUtterance:
        config = self.config
        decoder = PassDecoder(self.passes, config.model, self.id, self._gone)
        speakers = labels_speakers(config.model) and self.diarizer is not None
        options = PassOptions(language=config.language, prompt=config.prompt,
                              logprobs=config.include_logprobs, beam_size=self.limits.beam_size,
                              word_timestamps=speakers, hotwords=config.hotwords,
                              language_candidates=config.languages)
        return LiveUtterance(new_id("item"), start, UtteranceTranscriber(decoder, options),
                             speakers=speakers)

    def _new_speakers(self) -> SessionSpeakers:
        assert self.diarizer is not None
        return SessionSpeakers(self.passes, self.diarizer, self._gone)

    def _sentence_ended(self) -> bool:
        """Called from the segmenter's thread, inside a push: the item the loop knows as open
        is the turn in progress only if it starts where the segmenter's does (a push that
        ended one turn and began another has not been seen by the loop yet)."""
        item = self.pipeline.open
        return (item is not None and item.start == self.segmenter.open_start
                and ends_sentence(item.transcriber.latest_text))

    def _commit(self, item: LiveUtterance, utterance: Utterance) -> None:
        item.previous_id, self._last_item_id = self._last_item_id, item.id
        self._send("input_audio_buffer.committed", item_id=item.id,
                   previous_item_id=item.previous_id)
        self._send("conversation.item.added", previous_item_id=item.previous_id,
                   item=_message(item.id, None, "in_progress"))
        self.pipeline.commit(item, utterance)
        self._check_backlog()

    # -- what the pipeline found (UtteranceSink) ---------------------------------------

    def partial(self, utterance: LiveUtterance, pieces: list[Piece]) -> None:
        self._send_delta(utterance, pieces)

    def final(self, utterance: LiveUtterance, rest: list[Piece],
              segments: list[SpeakerSegment] | None) -> None:
        self._send_delta(utterance, rest)
        transcript = utterance.transcriber.text
        for segment in segments or ():
            self._send("conversation.item.input_audio_transcription.segment",
                       item_id=utterance.id, content_index=0, id=f"seg_{self._segments}",
                       text=segment.text, speaker=segment.speaker, start=segment.start,
                       end=segment.end)
            self._segments += 1
        fields: dict = {}
        if self.config.include_logprobs:
            fields["logprobs"] = _logprobs(utterance.transcriber.agreement.committed)
        self._send("conversation.item.input_audio_transcription.completed",
                   item_id=utterance.id, content_index=0, transcript=transcript,
                   usage=self._usage(utterance), **fields)
        self._send("conversation.item.done", previous_item_id=utterance.previous_id,
                   item=_message(utterance.id, transcript, "completed"))
        self._check_backlog()

    def failed(self, utterance: LiveUtterance, error: ServiceError) -> None:
        self._send("conversation.item.input_audio_transcription.failed",
                   item_id=utterance.id, content_index=0,
                   error={"type": error.type, "code": error.code, "message": error.message,
                          "param": error.param})
        self._check_backlog()

    def _send_delta(self, item: LiveUtterance, pieces: list[Piece]) -> None:
        if not pieces:
            return
        fields: dict = {}
        if self.config.include_logprobs:
            fields["logprobs"] = _logprobs(pieces)
        self._send("conversation.item.input_audio_transcription.delta", item_id=item.id,
                   content_index=0, delta=join(pieces), **fields)

    def _usage(self, item: LiveUtterance) -> dict:
        duration = item.samples.size / SAMPLE_RATE
        if profile_for(self.config.model.profile).usage == "duration":
            return duration_usage(duration)
        transcript = Transcript(
            task="transcribe", language="", duration=duration, segments=(),
            text_tokens_in=item.transcriber.prompt_tokens,
            output_tokens=item.transcriber.output_tokens,
        )
        return tokens_usage(transcript)


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _message(item_id: str, transcript: str | None, status: str) -> dict:
    return {
        "id": item_id, "object": "realtime.item", "type": "message", "role": "user",
        "status": status, "content": [{"type": "input_audio", "transcript": transcript}],
    }


def _logprobs(pieces: list[Piece]) -> list[dict]:
    return [{"token": p.logprob.token, "logprob": p.logprob.logprob,
             "bytes": list(p.logprob.bytes)} for p in pieces if p.logprob is not None]
