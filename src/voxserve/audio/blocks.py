"""Cutting a stream of samples into bounded blocks at quiet points.

Long files are transcribed block by block so memory stays bounded whatever their length. A
block is cut at the quietest 100 ms within the last few seconds before the limit, so a word
is never split between two blocks (the cut lands in a pause), and every block knows where it
starts in the file, so timestamps stay absolute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

FRAME = 1_600  # 100 ms at 16 kHz


@dataclass(frozen=True)
class AudioBlock:
    start: int  # first sample's index in the whole file
    samples: np.ndarray
    last: bool


def quietest_cut(samples: np.ndarray, search_from: int) -> int:
    """Index of the middle of the quietest 100 ms frame at or after `search_from`."""
    region = samples[search_from:]
    frames = region.size // FRAME
    if frames == 0:
        return samples.size
    energy = np.square(region[: frames * FRAME].reshape(frames, FRAME)).mean(axis=1)
    # The latest of equally quiet frames keeps blocks as long as allowed.
    best = frames - 1 - int(np.argmin(energy[::-1]))
    return search_from + best * FRAME + FRAME // 2


def cut_blocks(
    chunks: Iterable[np.ndarray],
    block_samples: int,
    search_samples: int,
    first_block_samples: int | None = None,
) -> Iterator[AudioBlock]:
    """Blocks of at most `block_samples` (the first at most `first_block_samples`, so that
    decoding, and a stream's first words, start before a whole block is read), each cut in
    the quietest spot of its last `search_samples`; holds at most one block and one decoder
    chunk at a time."""
    pending: list[np.ndarray] = []
    pending_size = 0
    start = 0
    limit = min(first_block_samples or block_samples, block_samples)
    for chunk in chunks:
        pending.append(chunk)
        pending_size += chunk.size
        while pending_size > limit:
            buffer = np.concatenate(pending)
            # Searched in the block's second half at most: a short first block stays long
            # enough to start decoding on.
            cut = quietest_cut(buffer[:limit], limit - min(search_samples, limit // 2))
            yield AudioBlock(start, buffer[:cut], last=False)
            limit = block_samples
            start += cut
            rest = buffer[cut:]
            pending, pending_size = [rest], rest.size
    buffer = np.concatenate(pending) if pending else np.zeros(0, dtype=np.float32)
    yield AudioBlock(start, buffer, last=True)
