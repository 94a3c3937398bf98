"""Speech chunks, the engine-neutral part of chunked decoding (stt/pipeline.py): a block of
audio is cut into speech chunks (VAD regions spliced together up to the engine's window, cut
only at pauses), the chunks are decoded side by side by N workers, and the segments come back
in file order with absolute times, `seek` and ids.

Why splice instead of decoding the file as Whisper does (sequential 30 s windows): the windows
re-read audio after every seek, decode silence, and each one waits for the previous one's text.
Spliced speech chunks waste nothing and are independent, so they can be decoded at once.
Silence between regions is dropped (the VAD's padding keeps a short pause at every join), and
times inside a chunk are mapped back to the file through the chunk's pieces.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.audio.vad import speech_regions as vad_regions
from voxserve.domain import Segment, Word

FRAMES_PER_SECOND = 100  # Whisper's `seek` unit: 10 ms mel frames
WINDOW_SECONDS = 30.0  # Whisper's receptive field
ENERGY_FRAME = SAMPLE_RATE // 50  # 20 ms: a frame for finding the quietest cut point

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Piece:
    """A stretch of the block copied into a chunk: block samples [start, end) sit at `at`."""

    start: int
    end: int
    at: int


@dataclass(frozen=True)
class Chunk:
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        last = self.pieces[-1]
        return last.at + last.end - last.start

    @property
    def start(self) -> int:
        return self.pieces[0].start

    def samples(self, block: np.ndarray) -> np.ndarray:
        return np.concatenate([block[p.start : p.end] for p in self.pieces])

    def rest_after(self, t: float) -> Chunk | None:
        """The pieces that begin after `t` (s, chunk time), as a chunk whose samples are the
        tail of this chunk's from the first of them (`at` rebased to it); None if none."""
        sample = t * SAMPLE_RATE
        rest = [p for p in self.pieces if p.at > sample]
        if not rest:
            return None
        base = rest[0].at
        return Chunk(tuple(replace(p, at=p.at - base) for p in rest))

    def to_block_seconds(self, t: float, *, prefer_next: bool) -> float:
        """A time inside the chunk (s) as a time in the block (s). A time past a piece's end
        (Whisper's end times overshoot a little) stays at that piece's end, or, for a start
        (`prefer_next`), moves to the next piece's start."""
        sample = max(0, round(t * SAMPLE_RATE))
        find = bisect.bisect_right if prefer_next else bisect.bisect_left
        index = max(find([p.at for p in self.pieces], sample) - 1, 0)
        piece = self.pieces[index]
        local = sample - piece.at
        length = piece.end - piece.start
        if local >= length and prefer_next and index + 1 < len(self.pieces):
            return self.pieces[index + 1].start / SAMPLE_RATE
        return (piece.start + min(local, length)) / SAMPLE_RATE


def speech_regions(
    samples: np.ndarray,
    threshold: float = 0.5,
    silence_ms: int = 300,
    pad_ms: int = 200,
) -> list[tuple[int, int]]:
    """Speech regions (sample offsets, padded) of a block, as chunk material. The defaults
    (300 ms of silence ends a region, 200 ms of padding) keep a short pause at every join;
    `chunking_strategy` requests pass their own."""
    return vad_regions(samples, threshold=threshold, min_silence_ms=silence_ms, pad_ms=pad_ms)


def split_long(samples: np.ndarray, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """A region longer than `limit` samples, cut at its quietest 20 ms frame in the second half
    of each window (a cut there is a breath or a gap between words, and chunks stay long)."""
    out = []
    while end - start > limit:
        lo, hi = start + limit // 2, start + limit - ENERGY_FRAME
        frames = samples[lo:hi][: (hi - lo) // ENERGY_FRAME * ENERGY_FRAME]
        energy = np.square(frames.reshape(-1, ENERGY_FRAME)).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * ENERGY_FRAME + ENERGY_FRAME // 2
        out.append((start, cut))
        start = cut
    out.append((start, end))
    return out


def pack_chunks(samples: np.ndarray, regions: Iterable[tuple[int, int]],
                max_seconds: float = WINDOW_SECONDS,
                first_seconds: float | None = None) -> list[Chunk]:
    """Consecutive speech regions spliced into chunks of at most `max_seconds`; a chunk ends
    only between regions (at a pause), except inside a region longer than the window.

    Chunks are as few as the window allows (each costs a whole encoder window) and, with that
    count, as even as the pauses allow: the longest chunk is as short as it can be, so
    side-by-side workers do not wait on one long chunk, and no half-empty chunk is left over
    for a worker to decode alone. The first chunk closes after `first_seconds` when given,
    so a stream's first words come from a short decode."""
    limit = int(max_seconds * SAMPLE_RATE)
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and merged[-1][1] >= start:  # padded regions may touch: one region
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    spans = [span for start, end in merged for span in split_long(samples, start, end, limit)]
    first_size = first_seconds * SAMPLE_RATE if first_seconds else 0
    taken = filled = 0  # the short first chunk's spans, when asked for
    for start, end in spans:
        if filled >= first_size or filled + end - start > limit:
            break
        filled += end - start
        taken += 1
    groups = ([spans[:taken]] if taken else []) + _even_groups(spans[taken:], limit)
    chunks = []
    for group in groups:
        pieces, filled = [], 0
        for start, end in group:
            pieces.append(Piece(start, end, filled))
            filled += end - start
        chunks.append(Chunk(tuple(pieces)))
    return chunks


def _even_groups(spans: list[tuple[int, int]], limit: int) -> list[list[tuple[int, int]]]:
    """`spans` (each at most `limit` long) in consecutive groups of at most `limit` samples:
    the fewest groups, and with that count the smallest possible longest group (found by
    bisecting the bound that greedy filling needs to stay at the fewest groups)."""

    def fill(bound: int) -> list[list[tuple[int, int]]]:
        groups: list[list[tuple[int, int]]] = []
        filled = bound + 1  # as if a full group came before: the first span opens one
        for start, end in spans:
            if filled + end - start > bound:
                groups.append([])
                filled = 0
            groups[-1].append((start, end))
            filled += end - start
        return groups

    if not spans:
        return []
    fewest = len(fill(limit))
    low, high = max(end - start for start, end in spans), limit
    while low < high:  # the smallest bound that still needs only `fewest` groups
        middle = (low + high) // 2
        if len(fill(middle)) <= fewest:
            high = middle
        else:
            low = middle + 1
    return fill(low)


def to_file_times(segment: Segment, chunk: Chunk, offset: float) -> Segment:
    """A segment decoded on a chunk, with times and `seek` as in the whole file (`offset`: the
    block's start in the file, s); `seek` is the chunk's first sample."""

    def start_of(t: float) -> float:
        return chunk.to_block_seconds(t, prefer_next=True) + offset

    def end_of(t: float) -> float:
        return chunk.to_block_seconds(t, prefer_next=False) + offset

    words = []
    for w in segment.words:
        start = start_of(w.start)
        words.append(replace(w, start=start, end=max(start, end_of(w.end))))
    start = start_of(segment.start)
    return replace(
        segment, start=start, end=max(start, end_of(segment.end)),
        seek=round((chunk.start / SAMPLE_RATE + offset) * FRAMES_PER_SECOND),
        words=tuple[Word, ...](words),
    )


def map_in_order(
    function: Callable[[T], R], items: Iterable[T], workers: int
) -> Iterator[tuple[T, R]]:
    """(item, function(item)) for each item, computed by `workers` threads and yielded in the
    items' order, each as soon as it and all before it are done.

    Items are drawn lazily and at most 2 × workers are in flight, so a long file's chunk audio
    is not all copied at once; a result that is ready is handed back before more items are
    drawn. Closing the iterator cancels what has not started (what is
    running finishes first: an engine call cannot be interrupted)."""
    workers = max(1, workers)
    pending: deque[tuple[T, Future[R]]] = deque()
    todo = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="chunk") as pool:
        try:
            while True:
                # Fill the pipeline, but hand back a finished head first: drawing an item may
                # mean reading and cutting the next block, which a stream's first words should
                # not wait for.
                while len(pending) < 2 * workers and not (pending and pending[0][1].done()):
                    item = next(todo, _DONE)
                    if item is _DONE:
                        break
                    pending.append((item, pool.submit(function, item)))
                if not pending:
                    return
                item, future = pending.popleft()
                yield item, future.result()
        finally:
            for _, future in pending:
                future.cancel()


_DONE: object = object()
