"""Turn detection: where an utterance starts and ends in a live stream of 16 kHz samples.

`audio.vad.StreamingVad` runs Silero VAD frame by frame, carrying the model's state between
appends, so each sample is looked at once however the audio is chunked. `TurnDetector` turns
the frame probabilities into turn events, in absolute sample positions since the session's
first sample:

* server_vad: speech starts at the first frame over `threshold` (the item includes
  `prefix_padding_ms` before it) and stops after `silence_duration_ms` under it (the item
  includes that silence, as OpenAI's `audio_end_ms` does);
* semantic_vad: the silence needed depends on `eagerness` (at most 8/4/2 s for
  low/medium/high, auto = medium) and is much shorter once the text so far ends a sentence;
* a turn longer than `max_turn_samples` (the model's 30 s window, less a margin) is cut at
  the quietest frame of its last seconds and goes on as a new turn from there;
* `idle_timeout_ms`: that much audio with no speech raises an idle event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.audio.vad import FRAME

# Below threshold minus this, a frame counts as silence (Silero's own hysteresis).
HYSTERESIS = 0.15

SEMANTIC_MAX_WAIT = {"low": 8.0, "medium": 4.0, "high": 2.0, "auto": 4.0}
# Once the text so far ends a sentence, the turn ends after this much silence instead.
SEMANTIC_SENTENCE_WAIT = {"low": 1.0, "medium": 0.6, "high": 0.3, "auto": 0.6}


@dataclass(frozen=True)
class TurnConfig:
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"

    def wire(self) -> dict:
        if self.type == "semantic_vad":
            return {"type": "semantic_vad", "eagerness": self.eagerness}
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
        }


@dataclass(frozen=True)
class TurnStarted:
    start: int  # first sample of the item (speech onset less the prefix padding)


@dataclass(frozen=True)
class TurnStopped:
    end: int  # last sample of the item (after the silence that ended it)
    # The end of its last voiced frame. (The detector's `voice_end` moves on when a new turn
    # starts in the same push.)
    voice_end: int


@dataclass(frozen=True)
class TurnCut:
    at: int  # the item ends here and the next one starts here (a long turn)


@dataclass(frozen=True)
class IdleTimeout:
    start: int
    end: int


TurnEvent = TurnStarted | TurnStopped | TurnCut | IdleTimeout


class TurnDetector:
    """Feeds on frame probabilities; `sentence_ended` tells semantic_vad whether the text so
    far reads as a finished sentence."""

    def __init__(
        self,
        config: TurnConfig,
        max_turn_samples: int,
        sentence_ended: Callable[[], bool] = lambda: False,
        position: int = 0,
    ) -> None:
        self.config = config
        self._max_turn = max_turn_samples
        self._sentence_ended = sentence_ended
        self.position = position  # the next frame's first sample
        self.speaking = False
        self._start = 0
        self._voice_end = 0
        self._idle_since = position
        self._turn_probs: list[float] = []
        self._probs_start = 0  # the sample where _turn_probs' first frame starts

    @property
    def trailing_silence(self) -> int:
        """Samples of silence since the last voiced frame of the turn in progress (0 when no
        turn is in progress)."""
        return self.position - self._voice_end if self.speaking else 0

    @property
    def voice_end(self) -> int:
        """The end of the last voiced frame of the current (or last) turn."""
        return self._voice_end

    def reset(self, position: int) -> None:
        """Forget any turn in progress (after a commit or clear); frames continue from
        `position`."""
        self.speaking = False
        self._turn_probs = []
        self._idle_since = position

    def push(self, probs: np.ndarray) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for p in probs.tolist():
            start, end = self.position, self.position + FRAME
            self.position = end
            if not self.speaking:
                if p >= self.config.threshold:
                    padding = self.config.prefix_padding_ms * SAMPLE_RATE // 1000
                    self.speaking = True
                    self._start = max(self._idle_since, start - padding, 0)
                    self._voice_end = end
                    self._turn_probs = [p]
                    self._probs_start = start
                    events.append(TurnStarted(self._start))
                elif self._idle_due(end):
                    events.append(IdleTimeout(self._idle_since, end))
                    self._idle_since = end
                continue
            self._turn_probs.append(p)
            if p >= self.config.threshold - HYSTERESIS:
                self._voice_end = end
            elif end - self._voice_end >= self._silence_needed():
                self.speaking = False
                self._idle_since = end
                events.append(TurnStopped(end, self._voice_end))
                continue
            if end - self._start >= self._max_turn:
                cut = self._quietest(end)
                events.append(TurnCut(cut))
                self._turn_probs = self._turn_probs[(cut - self._probs_start) // FRAME:]
                self._start = self._probs_start = cut
        return events

    def _silence_needed(self) -> int:
        config = self.config
        if config.type == "semantic_vad":
            table = SEMANTIC_SENTENCE_WAIT if self._sentence_ended() else SEMANTIC_MAX_WAIT
            return int(table[config.eagerness] * SAMPLE_RATE)
        return config.silence_duration_ms * SAMPLE_RATE // 1000

    def _idle_due(self, end: int) -> bool:
        timeout = self.config.idle_timeout_ms
        return bool(timeout) and end - self._idle_since >= timeout * SAMPLE_RATE // 1000

    def _quietest(self, end: int) -> int:
        """The start of the least speech-like frame in the turn's last 10 s (less its final
        second, so the cut leaves the next item some audio): a pause between words."""
        frames = np.asarray(self._turn_probs)
        first = max(0, frames.size - 10 * SAMPLE_RATE // FRAME)
        last = max(first + 1, frames.size - SAMPLE_RATE // FRAME)
        index = first + int(np.argmin(frames[first:last]))
        return self._probs_start + index * FRAME
