"""Live audio into utterances: the first stage of every live session, whatever it does with
the speech afterwards.

A `Segmenter` owns one session's input side: the wire format's decoder and resampler
(`audio_in.AudioInput`), Silero scores (`audio.vad.StreamingVad`), the turn detector
(`turns.TurnDetector`) and the input buffer (`buffer.SampleBuffer`) with its limit. `push`
takes an append's raw bytes and returns what happened in them, in order: a turn started, an
utterance ended (by the VAD, or cut inside a long turn), an idle timeout. A client's commit,
clear and (translation's) close act on the same state.

`push` is CPU work (resampling, one ONNX call per 4 s of audio, a Python loop over 32 ms
frames): the session runs it in a worker thread, one push at a time and in the order the
client sent them. The open turn's audio is read from the event loop while a push may be under
way (`audio_since`), so a push touches the buffer only under the lock, and the pipeline reads
the detector's position from `progress`, a snapshot taken at the end of each push. Everything
else (`commit`, `clear`, `flush`, the settings) runs on the loop between pushes: the ingest
worker never starts one while a push is under way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.audio.vad import StreamingVad
from voxserve.errors import InvalidInput
from voxserve.realtime.audio_in import AudioInput, InputFormat
from voxserve.realtime.buffer import SampleBuffer
from voxserve.realtime.turns import (
    IdleTimeout,
    TurnConfig,
    TurnCut,
    TurnDetector,
    TurnStarted,
    TurnStopped,
)

MIN_COMMIT_MS = 100
# Audio is scored in pieces of this many samples, so one huge append (15 MiB is four minutes)
# never makes one huge ONNX batch.
PUSH_PIECE = 4 * SAMPLE_RATE
# Kept before the prefix padding between turns: the VAD's frame and the resampler's delay.
PADDING_SLACK = 1024


@dataclass(frozen=True)
class Utterance:
    """A stretch of the input that ended: `samples` from `start` to `end` (absolute)."""

    start: int
    end: int
    samples: np.ndarray
    # Its last voiced sample when the VAD ended it (None: cut, committed or flushed), so that
    # a decode started in the pause before can be matched to it.
    voice_end: int | None = None


@dataclass(frozen=True)
class Ended:
    """A turn ended: by the VAD, or cut inside a long turn (then a `TurnStarted` at the cut
    follows: the speech goes on in a new turn)."""

    utterance: Utterance


@dataclass(frozen=True)
class Progress:
    """Where the detector stood after the latest push."""

    end: int = 0  # the buffer's end: every sample pushed so far
    voice_end: int = 0  # the end of the last voiced frame of the current (or last) turn
    trailing_silence: int = 0  # samples of silence since then, inside a turn


SegmentEvent = TurnStarted | Ended | IdleTimeout


class Segmenter:
    def __init__(
        self,
        fmt: InputFormat,
        turn: TurnConfig | None,
        *,
        max_turn_samples: int,
        max_buffer_samples: int,
        full_message: str,
        sentence_ended: Callable[[], bool] = lambda: False,
    ) -> None:
        self._max_turn = max_turn_samples
        self._max_buffer = max_buffer_samples
        self._full_message = full_message
        self._sentence_ended = sentence_ended
        self._lock = threading.Lock()  # the buffer: read from the loop, written in a thread
        self._buffer = SampleBuffer()
        self._audio = AudioInput(fmt)
        self.turn = turn
        self._vad = StreamingVad()
        self._detector = self._new_detector(0)
        self.open_start: int | None = None  # the turn in progress starts here
        self.progress = Progress()

    @property
    def held_samples(self) -> int:
        return len(self._buffer)

    @property
    def buffer_start(self) -> int:
        """Where the audio held starts (absolute)."""
        return self._buffer.start

    # -- configuration -------------------------------------------------------------------

    def set_format(self, fmt: InputFormat) -> None:
        if fmt != self._audio.format:
            self._audio = AudioInput(fmt)

    def set_turn(self, turn: TurnConfig | None) -> None:
        """Turn detection starts over from the next sample: a fresh VAD stream and a detector
        whose frame clock starts where the buffer ends (a turn in progress is dropped)."""
        if turn == self.turn:
            return
        self.turn = turn
        self.open_start = None
        self._vad = StreamingVad()
        self._detector = self._new_detector(self._buffer.end)

    def _new_detector(self, position: int) -> TurnDetector:
        config = self.turn or TurnConfig()  # without turn detection it is never fed
        return TurnDetector(config, self._max_turn, self._sentence_ended, position=position)

    # -- input (in a worker thread) ------------------------------------------------------

    def push(self, data: bytes) -> list[SegmentEvent]:
        """An append's bytes decoded, buffered and screened; refused whole (before any of it
        reaches the stateful resampler) when the buffer cannot take it."""
        if self._buffer_samples() + self._audio.samples_in(data) > self._max_buffer:
            raise InvalidInput(self._full_message, param="audio",
                               code="input_audio_buffer_full")
        samples = self._audio.push(data)
        events: list[SegmentEvent] = []
        for at in range(0, samples.size, PUSH_PIECE):
            events += self._take(samples[at:at + PUSH_PIECE])
        self._snapshot()
        return events

    def _buffer_samples(self) -> int:
        with self._lock:
            return len(self._buffer)

    def _take(self, samples: np.ndarray) -> list[SegmentEvent]:
        with self._lock:
            self._buffer.append(samples)
        if self.turn is None:
            return []
        events: list[SegmentEvent] = []
        for event in self._detector.push(self._vad.push(samples)):
            if isinstance(event, TurnStarted):
                self.open_start = event.start
                events.append(event)
            elif isinstance(event, TurnStopped) and self.open_start is not None:
                events.append(Ended(self._end(event.end, event.voice_end)))
            elif isinstance(event, TurnCut) and self.open_start is not None:
                events.append(Ended(self._end(event.at, None)))
                self.open_start = event.at  # the same speech goes on as a new turn
                events.append(TurnStarted(event.at))
            elif isinstance(event, IdleTimeout):
                events.append(event)
        if self.open_start is None:
            # Between turns only the prefix padding can still become part of one.
            padding = self.turn.prefix_padding_ms * SAMPLE_RATE // 1000
            with self._lock:
                self._buffer.drop_before(self._detector.position - padding - PADDING_SLACK)
        return events

    def _end(self, end: int, voice_end: int | None) -> Utterance:
        assert self.open_start is not None
        with self._lock:
            samples = self._buffer.view(self.open_start, end).copy()
            self._buffer.drop_before(end)
        utterance = Utterance(self.open_start, end, samples, voice_end)
        self.open_start = None
        return utterance

    def _snapshot(self) -> None:
        detector = self._detector
        self.progress = Progress(self._buffer.end, detector.voice_end,
                                 detector.trailing_silence)

    # -- the client's own cuts -----------------------------------------------------------

    def commit(self) -> Utterance:
        """Everything held becomes one utterance (OpenAI's refusal when under 100 ms)."""
        held_ms = self.held_samples * 1000 / SAMPLE_RATE
        if held_ms < MIN_COMMIT_MS:
            raise InvalidInput(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {held_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        with self._lock:
            start = self.open_start if self.open_start is not None else self._buffer.start
            end = self._buffer.end
        self.open_start = start
        utterance = self._end(end, None)
        self._detector.reset(end)
        self._snapshot()
        return utterance

    def flush(self) -> Utterance | None:
        """The turn in progress ended where the input ends (the session is closing)."""
        if self.open_start is None:
            return None
        return self._end(self._buffer.end, self._detector.voice_end)

    def clear(self) -> None:
        self.open_start = None
        with self._lock:
            self._buffer.drop_before(self._buffer.end)
        self._detector.reset(self._detector.position)
        self._snapshot()

    # -- reading (from the event loop) ---------------------------------------------------

    def audio_since(self, start: int) -> np.ndarray | None:
        """A copy of the input from `start` on; None once the buffer has moved past `start`:
        a push in flight has just ended that turn (its audio is an utterance now, and the
        session will hear of it when the push returns)."""
        with self._lock:
            if start < self._buffer.start:
                return None
            return self._buffer.view(start).copy()
