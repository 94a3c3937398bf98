"""A realtime transcription session: OpenAI's GA transcription protocol as a state machine.

Transport-free: `receive(text)` takes a client event, server events go to `outbox` (the edge
sends them). Audio is decoded and resampled as it arrives, screened by the turn detector, and
held in one buffer; a turn (or a manual commit) becomes an *item*. One worker task per session
decodes: final passes of committed items first, in order, then a live pass of the turn in
progress whenever it has grown by `partial_interval` seconds. Each pass is admitted by the
scheduler on its own (`stt/passes.py`), so sessions and file uploads take turns on the engines.

Per item the client sees `speech_started`, live `…transcription.delta`s, `speech_stopped`,
`committed` (with `previous_item_id`), `conversation.item.added`, the last deltas,
`…transcription.completed` (the deltas joined) and `conversation.item.done`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.audio.vad import StreamingVad
from voxserve.diarize.pipeline import Turn
from voxserve.domain import Transcript
from voxserve.errors import InvalidInput, ServiceError, server_error
from voxserve.formats.transcript import duration_usage
from voxserve.realtime.audio_in import AudioInput
from voxserve.realtime.events import TRANSCRIPTION_CLIENT_EVENTS, new_id
from voxserve.realtime.models import labels_speakers
from voxserve.realtime.session_base import Handler, SessionBase
from voxserve.realtime.session_config import (
    ModelResolver,
    SessionConfig,
    build_config,
    merge_update,
)
from voxserve.realtime.speakers import SessionSpeakers
from voxserve.realtime.transcriber import (
    EarlyDecode,
    PassDecoder,
    PassOptions,
    Piece,
    UtteranceTranscriber,
    ends_sentence,
    join,
)
from voxserve.realtime.turns import (
    IdleTimeout,
    TurnConfig,
    TurnCut,
    TurnDetector,
    TurnStarted,
    TurnStopped,
)
from voxserve.stt.passes import DecodePasses
from voxserve.stt.profiles import profile_for
from voxserve.stt.service import tokens_usage

log = logging.getLogger("voxserve.realtime")

MIN_COMMIT_MS = 100
# No live pass before a turn has this much audio (Whisper guesses wildly on less), nor while
# its speech has paused this long.
FIRST_PASS = SAMPLE_RATE
PAUSE = SAMPLE_RATE // 5


@dataclass(frozen=True)
class SessionLimits:
    max_buffer_seconds: float = 600.0  # uncommitted audio
    max_turn_seconds: float = 28.0  # a longer turn is cut at a pause (Whisper reads 30 s)
    partial_interval: float = 0.5  # seconds of new audio between live passes
    max_backlog_seconds: float = 30.0  # committed audio waiting: past it, an error says so
    beam_size: int = 5


@dataclass
class _Item:
    id: str
    start: int
    transcriber: UtteranceTranscriber
    previous_id: str | None = None
    samples: np.ndarray | None = None  # set when committed
    committed_at: float = 0.0  # time.monotonic()
    discarded: bool = False
    speakers: bool = False  # a diarization model's item: speaker segments before .completed
    voice_end: int | None = None  # set when the VAD ended the turn: its last voiced sample
    # The final pass started in a pause: `.completed` then follows `speech_stopped` by what
    # is left of the decode, not all of it.
    early: EarlyDecode | None = None

    def drop_early(self) -> None:
        if self.early is not None:
            self.early.cancel()
            self.early = None


@dataclass
class TranscriptionSession(SessionBase):
    passes: DecodePasses
    resolve_model: ModelResolver
    limits: SessionLimits
    initial: dict  # the wire session it starts with (defaults, or an ephemeral secret's)
    # Makes the session's speaker tracker, for diarization models (None: none served).
    new_speakers: Callable[[], SessionSpeakers] | None = field(default=None, kw_only=True)

    CLIENT_EVENTS = TRANSCRIPTION_CLIENT_EVENTS

    def __post_init__(self) -> None:
        super().__post_init__()
        self._wire = self.initial
        self.config: SessionConfig = build_config(self._wire, self.resolve_model)
        self._audio = AudioInput(self.config.format)
        self._detector = self._new_detector(0)
        self._open: _Item | None = None
        self._finals: deque[_Item] = deque()
        self._last_item_id: str | None = None
        self._wake = asyncio.Event()
        self._speakers: SessionSpeakers | None = None  # made with the first diarized item
        self._segments = 0  # speaker segments sent: their ids

    # -- lifecycle ---------------------------------------------------------------------

    def _workers_to_start(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return [(f"realtime-{self.id}", self._work())]

    def session_object(self) -> dict:
        return {"id": self.id, "object": "realtime.transcription_session",
                "expires_at": self.expires_at, **self.config.wire()}

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
        if config.format != old.format:
            self._audio = AudioInput(config.format)
        if config.turn != old.turn:
            # Turn detection starts over from the next sample: a fresh VAD stream and a
            # detector whose frame clock starts where the buffer ends.
            self._discard_open()
            self._vad = StreamingVad()
            self._detector = self._new_detector(self._buffer.end)
        self._send("session.updated", session=self.session_object())

    def _append(self, event: dict) -> None:
        limit = self.limits.max_buffer_seconds
        samples = self._take_audio(
            event, limit,
            f"The input audio buffer is full: it holds at most {limit:g} seconds of "
            "uncommitted audio. Commit or clear it before appending more.",
        )
        if self.config.turn is None:
            return
        for turn_event in self._detector.push(self._vad.push(samples)):
            self._on_turn(turn_event)
        if self._open is None:
            # Between turns only the prefix padding can still become part of an item.
            padding = self.config.turn.prefix_padding_ms * SAMPLE_RATE // 1000
            self._buffer.drop_before(self._detector.position - padding - 1024)
        else:
            self._wake.set()

    def _commit_by_client(self, event: dict) -> None:
        held_ms = len(self._buffer) * 1000 / SAMPLE_RATE
        if held_ms < MIN_COMMIT_MS:
            raise InvalidInput(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {held_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        item = self._open or self._new_item(self._buffer.start)
        self._open = None
        self._commit(item, self._buffer.end)
        self._detector.reset(self._buffer.end)

    def _clear(self, event: dict) -> None:
        self._discard_open()
        self._buffer.drop_before(self._buffer.end)
        self._detector.reset(self._detector.position)
        self._send("input_audio_buffer.cleared")

    # -- turns -------------------------------------------------------------------------

    def _on_turn(self, turn_event: object) -> None:
        if isinstance(turn_event, TurnStarted):
            self._open = self._new_item(turn_event.start)
            self._send("input_audio_buffer.speech_started", item_id=self._open.id,
                       audio_start_ms=_ms(turn_event.start))
        elif isinstance(turn_event, (TurnStopped, TurnCut)) and self._open is not None:
            end = turn_event.end if isinstance(turn_event, TurnStopped) else turn_event.at
            item, self._open = self._open, None
            if isinstance(turn_event, TurnStopped):
                item.voice_end = turn_event.voice_end
            else:
                item.drop_early()
            self._send("input_audio_buffer.speech_stopped", item_id=item.id,
                       audio_end_ms=_ms(end))
            self._commit(item, end)
            if isinstance(turn_event, TurnCut):  # the same speech goes on in a new item
                self._on_turn(TurnStarted(end))
        elif isinstance(turn_event, IdleTimeout):
            self._send("input_audio_buffer.timeout_triggered", item_id=new_id("item"),
                       audio_start_ms=_ms(turn_event.start), audio_end_ms=_ms(turn_event.end))

    def _new_item(self, start: int) -> _Item:
        config = self.config
        decoder = PassDecoder(self.passes, config.model, self.id, self._gone)
        speakers = labels_speakers(config.model) and self.new_speakers is not None
        options = PassOptions(language=config.language, prompt=config.prompt,
                              logprobs=config.include_logprobs, beam_size=self.limits.beam_size,
                              word_timestamps=speakers)
        return _Item(new_id("item"), start, UtteranceTranscriber(decoder, options),
                     speakers=speakers)

    def _new_detector(self, position: int) -> TurnDetector:
        turn = self.config.turn
        return TurnDetector(
            turn, int(self.limits.max_turn_seconds * SAMPLE_RATE), self._sentence_ended,
            position=position,
        ) if turn is not None else TurnDetector(TurnConfig(), 0, position=position)  # never fed

    def _sentence_ended(self) -> bool:
        return self._open is not None and ends_sentence(self._open.transcriber.latest_text)

    def _discard_open(self) -> None:
        if self._open is not None:
            self._open.discarded = True
            self._open.drop_early()
            self._open = None

    async def close(self) -> None:
        for item in (self._open, *self._finals):
            if item is not None:
                item.drop_early()
        await super().close()

    def _commit(self, item: _Item, end: int) -> None:
        item.samples = self._buffer.view(item.start, end).copy()
        item.committed_at = time.monotonic()
        self._buffer.drop_before(end)
        item.previous_id, self._last_item_id = self._last_item_id, item.id
        self._send("input_audio_buffer.committed", item_id=item.id,
                   previous_item_id=item.previous_id)
        self._send("conversation.item.added", previous_item_id=item.previous_id,
                   item=_message(item.id, None, "in_progress"))
        self._finals.append(item)
        self._check_backlog()
        self._wake.set()

    def _check_backlog(self) -> None:
        """How far transcripts lag: the committed audio waiting to be decoded, or how long the
        oldest committed item has waited, whichever is more."""
        waiting = sum(i.samples.size for i in self._finals if i.samples is not None)
        lag = waiting / SAMPLE_RATE
        if self._finals:
            lag = max(lag, time.monotonic() - self._finals[0].committed_at)
        self._report_backlog(
            lag, self.limits.max_backlog_seconds,
            f"The server cannot keep up with this session: its transcripts are {lag:.0f} "
            "seconds behind the audio. They will follow, late; send audio no faster than "
            "real time, or use fewer sessions or a smaller model.",
        )

    # -- decoding ----------------------------------------------------------------------

    async def _work(self) -> None:
        interval = int(self.limits.partial_interval * SAMPLE_RATE)
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                if self._finals:
                    self._check_backlog()
                    await self._finish(self._finals[0])
                    self._finals.popleft()
                    self._check_backlog()
                    continue
                item = self._open
                if item is None or item.transcriber.failed:
                    break
                if item.early is not None and not item.early.holds(self._detector.voice_end):
                    item.drop_early()  # the speaker went on
                if self._detector.trailing_silence >= PAUSE:
                    # The turn may be ending: rather than a live pass, which would only delay
                    # the final one, start the final pass now on the audio so far.
                    # (Like live text it gives way to work waiting for the model.)
                    if item.early is None and not self.passes.waiting(item.transcriber.model_id):
                        self._start_early_final(item)
                    break
                size = self._buffer.end - item.start
                # A live pass waits for twice its predecessor's duration of new audio: on a
                # slow or busy machine live passes then take at most a third of the session's
                # time, and a final pass rarely has to wait behind one.
                needed = max(interval, int(2 * item.transcriber.last_pass_seconds * SAMPLE_RATE))
                if size - item.transcriber.decoded_samples < needed or size < FIRST_PASS:
                    break
                if not self.passes.optional_may_start(item.transcriber.model_id):
                    # Live text is optional work: it gives way to final passes (this
                    # session's or others') and to anything queued for the model. The next
                    # append tries again.
                    break
                samples = self._buffer.view(item.start).copy()
                started = loop.time()
                try:
                    pieces = await item.transcriber.live_pass(samples)
                    item.transcriber.last_pass_seconds = loop.time() - started
                except Exception:  # live text is optional: the final pass reports failures
                    log.exception("live pass failed (session %s)", self.id)
                    item.transcriber.failed = True
                    continue
                log.debug("live pass: %s, %.1f s of audio in %.2f s, %d pieces stable: %r",
                          item.id, samples.size / SAMPLE_RATE, loop.time() - started,
                          len(pieces), item.transcriber.latest_text[-60:])
                if not item.discarded:
                    self._send_delta(item, pieces)

    async def _finish(self, item: _Item) -> None:
        assert item.samples is not None
        # Who spoke is found beside the final pass (the diarizer needs only the audio).
        turns = self._speaker_turns(item) if item.speakers else None
        rest = None
        try:
            rest = await self._final_pass(item)
        finally:
            if rest is None and turns is not None:  # failed or the session ended
                turns.cancel()
        if rest is None:
            return
        self._send_delta(item, rest)
        transcript = item.transcriber.text
        if turns is not None:
            with self._errors_as_events("diarization"):
                await self._send_segments(item, transcript, await turns)
        fields: dict = {}
        if self.config.include_logprobs:
            fields["logprobs"] = _logprobs(item.transcriber.agreement.committed)
        self._send("conversation.item.input_audio_transcription.completed", item_id=item.id,
                   content_index=0, transcript=transcript, usage=self._usage(item), **fields)
        self._send("conversation.item.done", previous_item_id=item.previous_id,
                   item=_message(item.id, transcript, "completed"))

    def _start_early_final(self, item: _Item) -> None:
        samples = self._buffer.view(item.start).copy()
        item.early = EarlyDecode.start(item.transcriber.final_decode(samples),
                                       self._detector.voice_end)

    async def _final_decode(self, item: _Item) -> list[Piece]:
        assert item.samples is not None
        early, item.early = item.early, None
        if early is not None and early.holds(item.voice_end):
            try:
                return item.transcriber.accept_final(await early.decode)
            except Exception:  # e.g. its deadline: decode the committed audio as usual
                log.debug("early final pass failed (session %s)", self.id, exc_info=True)
        elif early is not None:
            early.cancel()
        return await item.transcriber.final_pass(item.samples)

    async def _final_pass(self, item: _Item) -> list[Piece] | None:
        """The text the final pass adds; None when it failed (`.failed` is sent)."""
        assert item.samples is not None
        started = time.monotonic()
        try:
            rest = await self._final_decode(item)
        except ServiceError as error:
            self._send_failed(item, error)
            return None
        except Exception:
            log.exception("realtime transcription failed (session %s)", self.id)
            self._send_failed(item, server_error())
            return None
        log.debug("final pass: %s, %.1f s of audio in %.2f s", item.id,
                  item.samples.size / SAMPLE_RATE, time.monotonic() - started)
        return rest

    def _speaker_turns(self, item: _Item) -> asyncio.Future[list[Turn]]:
        assert item.samples is not None and self.new_speakers is not None
        if self._speakers is None:
            self._speakers = self.new_speakers()
        return asyncio.ensure_future(self._speakers.turns(item.samples))

    async def _send_segments(self, item: _Item, transcript: str, turns: list[Turn]) -> None:
        assert item.samples is not None and self._speakers is not None
        words = item.transcriber.final_words
        for segment in self._speakers.segments(transcript, words, turns, item.samples.size):
            self._send("conversation.item.input_audio_transcription.segment", item_id=item.id,
                       content_index=0, id=f"seg_{self._segments}", text=segment.text,
                       speaker=segment.speaker, start=segment.start, end=segment.end)
            self._segments += 1

    def _send_delta(self, item: _Item, pieces: list[Piece]) -> None:
        if not pieces:
            return
        fields: dict = {}
        if self.config.include_logprobs:
            fields["logprobs"] = _logprobs(pieces)
        self._send("conversation.item.input_audio_transcription.delta", item_id=item.id,
                   content_index=0, delta=join(pieces), **fields)

    def _send_failed(self, item: _Item, error: ServiceError) -> None:
        self._send("conversation.item.input_audio_transcription.failed", item_id=item.id,
                   content_index=0, error={"type": error.type, "code": error.code,
                                           "message": error.message, "param": error.param})

    def _usage(self, item: _Item) -> dict:
        duration = item.samples.size / SAMPLE_RATE if item.samples is not None else 0.0
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
