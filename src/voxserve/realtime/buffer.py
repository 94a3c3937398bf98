"""The input audio buffer: 16 kHz samples addressed by their position since the session's
first sample, so turn events, items and `audio_*_ms` fields all count from one origin."""

from __future__ import annotations

import numpy as np


class SampleBuffer:
    def __init__(self) -> None:
        self._data = np.zeros(16_000, dtype=np.float32)
        self._size = 0
        self.start = 0  # absolute position of the first sample held

    @property
    def end(self) -> int:
        return self.start + self._size

    def __len__(self) -> int:
        return self._size

    def append(self, samples: np.ndarray) -> None:
        needed = self._size + samples.size
        if needed > self._data.size:  # grow geometrically: appends stay amortised O(1)
            grown = np.zeros(max(needed, 2 * self._data.size), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : needed] = samples
        self._size = needed

    def view(self, start: int, end: int | None = None) -> np.ndarray:
        """Samples from `start` to `end` (absolute); a view, copy before keeping it."""
        lo = max(start, self.start) - self.start
        hi = (self.end if end is None else min(end, self.end)) - self.start
        return self._data[lo:max(lo, hi)]

    def drop_before(self, position: int) -> None:
        cut = min(max(position - self.start, 0), self._size)
        if cut == 0:
            return
        rest = self._size - cut
        self._data[:rest] = self._data[cut : self._size]
        self._size = rest
        self.start += cut
