"""The speech gate: a second opinion on what the engine heard, from Silero VAD.

Whisper hallucinates on silence ("You", "Thank you.") and its times drift into the pauses
before speech. Both are judged against VAD's speech regions of the same stretch of audio,
computed only when a segment needs them:
- a segment the engine itself thinks is probably not speech (`no_speech_prob` over the
  threshold) is dropped when VAD hears nothing within 0.2 s of it;
- a word or segment that starts in silence really starts at the next speech onset, if that
  comes before its end.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.audio.vad import speech_regions
from voxserve.domain import Segment


class SpeechGate:
    """VAD's view of one stretch of audio; times are seconds from its first sample."""

    PADDING = 0.2  # seconds of slack around each speech region when judging a segment

    def __init__(self, samples: np.ndarray) -> None:
        self._samples = samples
        self._regions: list[tuple[float, float]] | None = None

    @property
    def regions(self) -> list[tuple[float, float]]:
        if self._regions is None:
            # Tight padding: the onsets are used to correct word start times.
            self._regions = [
                (start / SAMPLE_RATE, end / SAMPLE_RATE)
                for start, end in speech_regions(self._samples, min_silence_ms=300, pad_ms=100)
            ]
        return self._regions

    def heard(self, start: float, end: float) -> bool:
        pad = self.PADDING
        return any(s - pad < end and start < e + pad for s, e in self.regions)

    def passes(self, segment: Segment, no_speech_threshold: float) -> bool:
        """False for what both the engine and VAD call silence."""
        silent = segment.no_speech_prob > no_speech_threshold
        return not silent or self.heard(segment.start, segment.end)

    def snap_start(self, start: float, end: float) -> float:
        """Whisper's times drift into the silence before speech (DTW word times in long
        segments; segment starts pinned to a window's start): a word or segment that starts
        in silence really starts at the next speech onset, if that comes before its end."""
        for region_start, region_end in self.regions:
            if region_start <= start < region_end:
                return start
            if start < region_start:
                return region_start if region_start < end else start
        return start

    def snap_word_start(self, start: float, end: float) -> float:
        """A word belongs to the speech region it overlaps most, and starts no earlier than
        that region: DTW often stretches a clip's first word back over the pause before it
        to the previous word's end, which leaves its start just inside the previous region."""
        best, most = None, 0.0
        for region_start, region_end in self.regions:
            overlap = min(end, region_end) - max(start, region_start)
            if overlap > most:
                best, most = region_start, overlap
        return start if best is None else max(start, best)

    def snap(self, segment: Segment) -> Segment:
        """Word and segment starts moved out of leading silence."""
        words = tuple(replace(w, start=self.snap_word_start(w.start, w.end))
                      for w in segment.words)
        start = self.snap_start(segment.start, segment.end)
        if words:
            start = max(start, words[0].start)
        return replace(segment, words=words, start=start)
