"""The encoder outputs of the last few windows, so a window encoded twice is encoded once.

faster-whisper encodes a window to detect its language and then again to decode it (its
`transcribe` does not hand the first encoding on), and again to align tokens for logprobs.
For a short input (a live phrase, a clip of one speech chunk) that second pass is half the
work: with whisper-base on 2 cores, 1.1 s of the 2.7 s a 9 s phrase took to translate. The
memo sits in front of `WhisperModel.encode`: a window whose mel features are byte for byte
those of a recent one gets the recent output back.

Keys are digests of the features (a 30 s window is 960 kB: under a millisecond to hash, next
to a 0.3-1 s encode). Entries are kept, not consumed, in least-recently-used order, so a
request's later uses still find its window while other requests encode theirs; outputs are
read-only to their users (CTranslate2 takes them as inputs), so sharing one is safe.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

# Two uses per request (detection, decode) among the windows of the requests decoding at
# once: 8 outputs are 24 MB for whisper-base, 61 MB for large-v3.
MEMO_WINDOWS = 8


class EncoderMemo:
    """A drop-in for `WhisperModel.encode(features)`."""

    def __init__(self, encode: Callable[[np.ndarray], Any], capacity: int = MEMO_WINDOWS) -> None:
        self._encode = encode
        self._capacity = capacity
        self._entries: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def __call__(self, features: np.ndarray) -> Any:
        key = _digest(features)
        with self._lock:
            output = self._entries.get(key)
            if output is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return output
        output = self._encode(features)
        with self._lock:
            self._entries[key] = output
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return output


def _digest(features: np.ndarray) -> bytes:
    array = np.ascontiguousarray(features)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((array.shape, array.dtype.str)).encode())
    h.update(memoryview(array).cast("B"))
    return h.digest()
