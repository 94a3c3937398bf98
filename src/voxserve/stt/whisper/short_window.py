"""Short encoder windows: a live session's passes encode the audio they have, not a 30 s window.

faster-whisper pads every window's mel features to 3000 frames (30 s) before the encoder, so
a pass over the first 1.5 s of a turn costs as much as one over 30 s: with whisper-base on two
cores, 0.7-1.5 s of greedy decoding for a few words, most of it encoding padding. CTranslate2's
Whisper encoder takes fewer frames (its attention then spans only those), and the decoder
attends to what it produced. The padding is exact zeros (faster-whisper's `pad_or_trim`), so
the content's end is the last frame that is not all zeros.

Whisper then reads a window shorter than it was trained on, and how much padding it keeps
matters. Six fixture clips decoded as a session does (a live pass every 0.5 s of audio from
1 s on, agreement, then the final pass; beam 5): with 1 s of padding kept, whisper-base looped
on a sentence; with 3 s, whisper-tiny.en said a short command twice ("Go forward 10 meters."),
dropped a clip's leading "And" and its finals' WER went from 0.013 to 0.063; with 5 s kept, the
live transcripts' WER was the full window's (tiny.en 0.013, base 0.025), and with 10 s
whisper-base's agreement locked in a wrong word (0.076). On 14 clips decoded whole (beam 5)
base's WER was 0.043 with full windows, 0.047 with 5 s kept, in 42 % of the time. Hence
`PADDING_FRAMES`. Used only where asked for (`WhisperEngine.short_windows`, by a live
session's passes), in the calling thread only: the file endpoint keeps Whisper's full
windows. The flag stays set while a decode's generator is suspended, which is safe because
the worker pool drains each iterator in one thread before that thread takes other work.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

FULL_WINDOW_FRAMES = 3000
PADDING_FRAMES = 500  # 5 s of padding kept after the content (10 ms frames)
STEP_FRAMES = 100  # windows are whole seconds long: fewer distinct shapes to batch


def trimmed(features: np.ndarray) -> np.ndarray:
    """`features` (80 x frames, or 1 x 80 x frames) less its padding but `PADDING_FRAMES`."""
    frames = features.shape[-1]
    voiced = np.flatnonzero(np.any(features.reshape(-1, frames) != 0, axis=0))
    content = int(voiced[-1]) + 1 if voiced.size else 1
    keep = min(frames, math.ceil((content + PADDING_FRAMES) / STEP_FRAMES) * STEP_FRAMES)
    return features[..., :keep]


class ShortWindows:
    """A drop-in for `WhisperModel.encode(features)` that trims the padding while the calling
    thread is inside `trimming()`."""

    def __init__(self, encode: Callable[[np.ndarray], Any]) -> None:
        self._encode = encode
        self._local = threading.local()

    @contextmanager
    def trimming(self, on: bool = True) -> Iterator[None]:
        before = getattr(self._local, "on", False)
        self._local.on = on
        try:
            yield
        finally:
            self._local.on = before

    def __call__(self, features: np.ndarray) -> Any:
        if getattr(self._local, "on", False) and features.shape[-1] == FULL_WINDOW_FRAMES:
            features = trimmed(features)
        return self._encode(features)
