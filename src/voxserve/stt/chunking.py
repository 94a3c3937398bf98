"""Chunk-parallel decoding, the engine-neutral part: a block of audio is cut into speech chunks
(Silero VAD regions spliced together up to the model's window, cut only at pauses), the chunks
are decoded side by side by N workers, and the segments come back in file order with absolute
times, `seek` and ids.

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

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.domain import Segment, Word

FRAMES_PER_SECOND = 100  # Whisper's `seek` unit: 10 ms mel frames
WINDOW_SECONDS = 30.0  # Whisper's receptive field
ENERGY_FRAME = SAMPLE_RATE // 50  # 20 ms: a frame for finding the quietest cut point


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


def speech_regions(samples: np.ndarray, vad_options: object | None = None) -> list[tuple[int, int]]:
    """Silero VAD's speech regions (sample offsets, padded) of a block."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = vad_options or VadOptions(min_silence_duration_ms=300, speech_pad_ms=200)
    return [(r["start"], r["end"]) for r in get_speech_timestamps(samples, options)]


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
                max_seconds: float = WINDOW_SECONDS) -> list[Chunk]:
    """Consecutive speech regions spliced into chunks of at most `max_seconds`; a chunk ends
    only between regions (at a pause), except inside a region longer than the window."""
    limit = int(max_seconds * SAMPLE_RATE)
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and merged[-1][1] >= start:  # padded regions may touch: one region
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    chunks: list[Chunk] = []
    pieces: list[Piece] = []
    filled = 0
    for region_start, region_end in merged:
        for start, end in split_long(samples, region_start, region_end, limit):
            if pieces and filled + end - start > limit:
                chunks.append(Chunk(tuple(pieces)))
                pieces, filled = [], 0
            pieces.append(Piece(start, end, filled))
            filled += end - start
    if pieces:
        chunks.append(Chunk(tuple(pieces)))
    return chunks


def to_block_times(segment: Segment, chunk: Chunk, offset: float, index: int) -> Segment:
    """A segment decoded on a chunk, with times, `seek` and id as in the whole file (`offset`:
    the block's start in the file, s)."""

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
        segment, id=index, start=start, end=max(start, end_of(segment.end)),
        seek=round((chunk.start / SAMPLE_RATE + offset) * FRAMES_PER_SECOND),
        words=tuple[Word, ...](words),
    )


def decode_chunks(
    block: np.ndarray,
    chunks: list[Chunk],
    decode_chunk: Callable[[np.ndarray], list[Segment]],
    workers: int,
    *,
    offset: float = 0.0,
    first_id: int = 0,
) -> Iterator[Segment]:
    """The chunks decoded by `workers` threads calling `decode_chunk(samples)` (segments in
    chunk time), yielded in file order with absolute times and ids from `first_id`.

    At most 2 × workers chunks are in flight, so a long block's chunk audio is not all copied
    at once and the first segments come as soon as the first chunk is done. Closing the
    iterator cancels what has not started."""
    pending: deque[tuple[Chunk, Future[list[Segment]]]] = deque()
    todo = iter(chunks)
    next_id = first_id
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="chunk") as pool:
        try:
            while True:
                while len(pending) < 2 * max(1, workers):
                    chunk = next(todo, None)
                    if chunk is None:
                        break
                    pending.append((chunk, pool.submit(decode_chunk, chunk.samples(block))))
                if not pending:
                    return
                chunk, future = pending.popleft()
                for segment in future.result():
                    yield to_block_times(segment, chunk, offset, next_id)
                    next_id += 1
        finally:
            for _, future in pending:
                future.cancel()
