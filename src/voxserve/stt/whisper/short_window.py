"""Short encoder windows: a live session's passes encode the audio they have, not a 30 s window.

faster-whisper pads every window's mel features to 3000 frames (30 s) before the encoder, so
a pass over the first 1.5 s of a turn costs as much as one over 30 s: with whisper-base on two
cores, 0.7-1.5 s of greedy decoding for a few words, most of it encoding padding. CTranslate2's
Whisper encoder takes fewer frames (its attention then spans only those), and the decoder
attends to what it produced. The padding is exact zeros (faster-whisper's `pad_or_trim`), so
the content's end is the last frame that is not all zeros.

Whisper then reads a window shorter than it was trained on: with only 1 s of padding kept,
whisper-base looped on a sentence (the same words twice, and 7 s of decoding); with 3 s kept,
the text of 24 prefixes of six fixture clips (1.5 s, 3 s, 6 s and whole) matched the full
window's word for word but for case and final punctuation, 4-7x faster. Hence
`PADDING_FRAMES`. (whisper-tiny.en drops a clip's leading "And" in the short window, which
Whisper also does on a turn's first second in a full one.) Used only where asked for
(`WhisperOptions.short_window`), in the calling thread only: the file endpoint keeps
Whisper's full windows.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

FULL_WINDOW_FRAMES = 3000
PADDING_FRAMES = 300  # 3 s of padding kept after the content (10 ms frames)
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
