"""The live pipeline: utterances from the segmenter decoded into text, in order, by one worker.

Both session kinds run it; they differ only in the options their utterances are decoded with
(Whisper's task: transcribe or translate) and in what they do with the text (`UtteranceSink`).

The worker does, by priority:
1. the final pass of each committed utterance, in order (required work: beam search, as the
   file endpoint decodes), with its speaker turns beside it when the session labels speakers;
2. once the speaker has paused for `PAUSE`, the open utterance's final decode, early
   (`transcriber.EarlyDecode`): if the VAD then ends the turn with no more speech, that decode
   is the utterance's, so the VAD's silence and the decode overlap;
3. otherwise, when partial text is wanted, a live pass on the open utterance whenever it has
   grown enough (`UtteranceTranscriber.live_pass`: optional work, giving way to
   anything waiting for the model); its stable words go out as partial text.

Each pass is admitted by the scheduler on its own (`stt/passes.py`), so sessions and uploads
take turns on the engines. The worker runs on the event loop but only awaits: decoding runs in
the scheduler's worker threads, the segmenter's pushes in asyncio's default executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.diarize.pipeline import Turn
from voxserve.errors import ServiceError, server_error
from voxserve.realtime.segmenter import Segmenter, Utterance
from voxserve.realtime.speakers import SessionSpeakers, SpeakerSegment
from voxserve.realtime.transcriber import EarlyDecode, Piece, UtteranceTranscriber
from voxserve.stt.passes import DecodePasses

log = logging.getLogger("voxserve.realtime")

# No live pass before an utterance has this much audio, its 300 ms of padding included: from
# 0.8 s two passes agreed on a wrong first word ("I'll to be" for "Unless to be") that the
# deltas then locked in. Nor while its speech has paused this long: then the final decode
# starts early.
FIRST_PASS = SAMPLE_RATE
PAUSE = SAMPLE_RATE // 5


@dataclass
class LiveUtterance:
    """One utterance as the pipeline decodes it (an item, or a phrase to translate)."""

    id: str
    start: int
    transcriber: UtteranceTranscriber
    speakers: bool = False  # speaker segments are found beside the final pass
    previous_id: str | None = None
    ended: Utterance | None = None  # set when committed
    committed_at: float = 0.0  # time.monotonic()
    discarded: bool = False
    early: EarlyDecode | None = None  # the final decode, started in a pause

    @property
    def samples(self) -> np.ndarray:
        assert self.ended is not None
        return self.ended.samples

    def drop_early(self) -> None:
        if self.early is not None:
            self.early.cancel()
            self.early = None


class UtteranceSink(Protocol):
    """What a session kind does with the pipeline's text."""

    def partial(self, utterance: LiveUtterance, pieces: list[Piece]) -> None:
        """Words of the open utterance that stopped changing."""

    def final(self, utterance: LiveUtterance, rest: list[Piece],
              segments: list[SpeakerSegment] | None) -> None:
        """The utterance is done: `rest` completes the partial text sent."""

    def failed(self, utterance: LiveUtterance, error: ServiceError) -> None:
        """The final pass failed: the utterance ends without text."""


ErrorsAsEvents = Callable[[str], AbstractContextManager[None]]


class LivePipeline:
    def __init__(
        self,
        passes: DecodePasses,
        segmenter: Segmenter,
        sink: UtteranceSink,
        *,
        session_id: str,
        errors_as_events: ErrorsAsEvents,
        partial_interval: float | None,  # seconds of new audio between live passes; None: none
        early: bool = True,
        new_speakers: Callable[[], SessionSpeakers] | None = None,
    ) -> None:
        self._passes = passes
        self._segmenter = segmenter
        self._sink = sink
        self._session_id = session_id
        self._errors_as_events = errors_as_events
        self._interval = (int(partial_interval * SAMPLE_RATE)
                          if partial_interval is not None else None)
        self._early = early
        self._new_speakers = new_speakers
        self._speakers: SessionSpeakers | None = None  # made with the first labelled utterance
        self.open: LiveUtterance | None = None
        self._finals: deque[LiveUtterance] = deque()
        self._wake = asyncio.Event()
        self._finishing = False

    # -- what the session tells it -------------------------------------------------------

    def set_partial_interval(self, seconds: float | None) -> None:
        """Seconds of new audio between live passes from now on (None: no live passes)."""
        self._interval = int(seconds * SAMPLE_RATE) if seconds is not None else None

    def begin(self, utterance: LiveUtterance) -> None:
        self.open = utterance
        self._wake.set()

    def commit(self, utterance: LiveUtterance, ended: Utterance) -> None:
        """`utterance` ended as `ended`; its final pass is queued."""
        if utterance is self.open:
            self.open = None
        if ended.voice_end is None:
            utterance.drop_early()  # no decode started in a pause can be this audio's
        utterance.ended = ended
        utterance.committed_at = time.monotonic()
        self._finals.append(utterance)
        self._wake.set()

    def discard_open(self) -> None:
        if self.open is not None:
            self.open.discarded = True
            self.open.drop_early()
            self.open = None

    def wake(self) -> None:
        """New audio: a live pass or an early final decode may be due."""
        if self.open is not None:
            self._wake.set()

    def finish(self) -> None:
        """No more utterances: `run` returns once the committed ones are done."""
        self._finishing = True
        self._wake.set()

    def close(self) -> None:
        for utterance in (self.open, *self._finals):
            if utterance is not None:
                utterance.drop_early()

    def lag(self) -> float:
        """How far the text lags, in seconds: the committed audio waiting to be decoded, or
        how long the oldest committed utterance has waited, whichever is more."""
        waiting = sum(u.samples.size for u in self._finals) / SAMPLE_RATE
        if self._finals:
            waiting = max(waiting, time.monotonic() - self._finals[0].committed_at)
        return waiting

    # -- the worker ----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            while self._finals:
                await self._finish(self._finals[0])
                self._finals.popleft()
            if self._finishing:
                return
            if not await self._open_work():
                await self._wake.wait()
                self._wake.clear()

    async def _open_work(self) -> bool:
        """One step on the open utterance; False when there is nothing to do until woken."""
        item = self.open
        if item is None or item.transcriber.failed:
            return False
        progress = self._segmenter.progress
        if item.early is not None and not item.early.holds(progress.voice_end):
            item.drop_early()  # the speaker went on
        if self._early and progress.trailing_silence >= PAUSE:
            # The turn may be ending: rather than a live pass, which would only delay the
            # final one, start the final decode now on the audio so far. (Like live text it
            # gives way to work waiting for the model.)
            if item.early is None and not self._passes.waiting(item.transcriber.model_id):
                samples = self._segmenter.audio_since(item.start)
                if samples is not None:  # else the turn has just ended: its final pass runs
                    item.early = EarlyDecode.start(item.transcriber.final_decode(samples),
                                                   progress.voice_end)
            return False
        if self._interval is None:
            return False
        size = progress.end - item.start
        # A live pass waits for twice its predecessor's duration of new audio: on a slow or
        # busy machine live passes then take at most a third of the session's time, and a
        # final pass rarely has to wait behind one.
        needed = max(self._interval, int(2 * item.transcriber.last_pass_seconds * SAMPLE_RATE))
        if size - item.transcriber.decoded_samples < needed or size < FIRST_PASS:
            return False
        if not self._passes.optional_may_start(item.transcriber.model_id):
            # Live text is optional work: it gives way to final passes (this session's or
            # others') and to anything queued for the model. The next append tries again.
            return False
        await self._live_pass(item)
        return True

    async def _live_pass(self, item: LiveUtterance) -> None:
        samples = self._segmenter.audio_since(item.start)
        if samples is None:  # the turn has just ended
            return
        started = time.monotonic()
        try:
            pieces = await item.transcriber.live_pass(samples)
        except Exception:  # live text is optional: the final pass reports failures
            log.exception("live pass failed (session %s)", self._session_id)
            item.transcriber.failed = True
            return
        item.transcriber.last_pass_seconds = time.monotonic() - started
        log.debug("live pass: %s, %.1f s of audio in %.2f s, %d pieces stable",
                  item.id, samples.size / SAMPLE_RATE, item.transcriber.last_pass_seconds,
                  len(pieces))
        # Sent even when the utterance was committed during the pass: its words are in the
        # agreement now, and the transcript must be the deltas joined.
        if pieces and not item.discarded:
            self._sink.partial(item, pieces)

    async def _finish(self, item: LiveUtterance) -> None:
        # Who spoke is found beside the final pass (the diarizer needs only the audio).
        turns = self._speaker_turns(item) if item.speakers else None
        rest = None
        try:
            rest = await self._final_pass(item)
        finally:
            if rest is None and turns is not None:  # failed, or the session ended
                turns.cancel()
        if rest is None:
            return
        segments = None
        if turns is not None:
            with self._errors_as_events("diarization"):
                segments = self._segments(item, await turns)
        self._sink.final(item, rest, segments)

    async def _final_pass(self, item: LiveUtterance) -> list[Piece] | None:
        """The text the final pass adds; None when it failed (the sink is told)."""
        started = time.monotonic()
        try:
            rest = await self._final_decode(item)
        except ServiceError as error:
            self._sink.failed(item, error)
            return None
        except Exception:
            log.exception("live final pass failed (session %s)", self._session_id)
            self._sink.failed(item, server_error())
            return None
        log.debug("final pass: %s, %.1f s of audio in %.2f s", item.id,
                  item.samples.size / SAMPLE_RATE, time.monotonic() - started)
        return rest

    async def _final_decode(self, item: LiveUtterance) -> list[Piece]:
        assert item.ended is not None
        early, item.early = item.early, None
        if early is not None and early.holds(item.ended.voice_end):
            try:
                return item.transcriber.accept_final(await early.decode)
            except Exception:  # e.g. its deadline: decode the committed audio as usual
                log.debug("early final pass failed (session %s)", self._session_id,
                          exc_info=True)
        elif early is not None:
            early.cancel()
        return await item.transcriber.final_pass(item.samples)

    # -- speakers ------------------------------------------------------------------------

    def _speaker_turns(self, item: LiveUtterance) -> asyncio.Future[list[Turn]]:
        assert self._new_speakers is not None
        if self._speakers is None:
            self._speakers = self._new_speakers()
        return asyncio.ensure_future(self._speakers.turns(item.samples))

    def _segments(self, item: LiveUtterance, turns: list[Turn]) -> list[SpeakerSegment]:
        assert self._speakers is not None
        return self._speakers.segments(item.transcriber.text, item.transcriber.final_words,
                                       turns, item.samples.size)
