"""A window encoded to detect its language is not encoded again to decode it.

faster-whisper encodes a window to detect its language and then again to decode it (its
`transcribe` does not hand the first encoding on). For a short input (a live phrase, a clip of
one speech chunk) that second pass is a third of the work: with whisper-base on 2 cores, 1.1 s
of the 2.8 s a 9 s phrase took to translate. The memo sits in front of `WhisperModel.encode`:
encodings made while `keeping()` (the engine's language detection) are kept, and the next
encode of a window whose mel features are byte for byte the same gets the kept output and
forgets it.

Only that one use: an encoding is never replayed to a later request that happens to send the
same audio again (a benchmark's second pass over a clip would otherwise look faster than it
is). Keys are digests of the features (a 30 s window is 960 kB: about a millisecond to hash,
next to a 0.3-1 s encode); at most MEMO_WINDOWS are kept, the oldest forgotten first (a
detection whose decode never came: a live pass dropped in between). Outputs are read-only to
their users (CTranslate2 takes them as inputs), so handing one to another thread is safe.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

# Detections whose decode has not come yet, among the requests decoding at once: 8 outputs
# are 24 MB for whisper-base, 61 MB for large-v3.
MEMO_WINDOWS = 8


class EncoderMemo:
    """A drop-in for `WhisperModel.encode(features)`."""

    def __init__(self, encode: Callable[[np.ndarray], Any], capacity: int = MEMO_WINDOWS) -> None:
        self._encode = encode
        self._capacity = capacity
        self._kept: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()
        self.hits = 0

    @contextmanager
    def keeping(self) -> Iterator[None]:
        """Encodings made by this thread inside the block are kept for one later use."""
        self._local.keep = True
        try:
            yield
        finally:
            self._local.keep = False

    def __call__(self, features: np.ndarray) -> Any:
        keep = getattr(self._local, "keep", False)
        if not keep and not self._kept:
            return self._encode(features)
        key = _digest(features)
        with self._lock:
            output = self._kept.pop(key, None)
        if output is not None:
            self.hits += 1
            return output
        output = self._encode(features)
        if keep:
            with self._lock:
                self._kept[key] = output
                while len(self._kept) > self._capacity:
                    self._kept.popitem(last=False)
        return output


def _digest(features: np.ndarray) -> bytes:
    array = np.ascontiguousarray(features)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((array.shape, array.dtype.str)).encode())
    h.update(memoryview(array).cast("B"))
    return h.digest()
