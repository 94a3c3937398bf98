"""The decoding pipeline around any `SpeechToTextEngine`: blocks of a file in, a DecodeInfo,
segments and a DecodeEnd out. Runs in a worker thread, lazily, so a consumer can stream.

- **Language**: the request's, `en` for an English-only engine, or detected once on the first
  block with the silence cut out by VAD (the raw audio if VAD hears nothing), so a quiet
  intro does not decide it.
- **Chunked decoding** (the default): each block is cut into speech chunks by VAD (the
  request's `chunking_strategy` settings when given), packed up to the engine's window and cut
  only at pauses (stt/chunking.py); silence is never decoded. The chunks are independent, so
  `parallel_chunks` threads decode them side by side through `engine.transcribe`, with the
  engine's `chunk_options` under the request's own knobs; segments come back in file order as
  soon as a chunk and all before it are done; a streamed request's first chunk is short so
  its first words come early. A block's last chunk is packed with the next block's speech, so
  block boundaries cost no half-empty chunk. Closing the stream cancels the chunks not
  started.
- **Sequential decoding** (`DecodeOptions.sequential`): each block is decoded whole by the
  engine (Whisper's strict 30 s windows with its context carried between them).
- **Prompt**: the request's prompt belongs to the start of the file only: the first chunk or
  block (handing a block the previous block's text as a prompt made Whisper drop its
  timestamp tokens and lose a third of the following words).
- **Speech gate** (stt/speech_gate.py) on every segment, judged on the audio the engine was
  given (the chunk or block), then times and `seek` made absolute in the file and ids
  numbered across the file.
- A file under 0.1 s is `audio_too_short`; a later block under 0.1 s is skipped. Freed heap
  pages go back to the OS after each block (runtime/memory.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import chain

import numpy as np

from voxserve.audio.blocks import AudioBlock
from voxserve.audio.decode import MIN_SECONDS, SAMPLE_RATE
from voxserve.audio.vad import speech_regions
from voxserve.domain import Segment
from voxserve.errors import audio_too_short
from voxserve.runtime.memory import trim_heap
from voxserve.stt.chunking import Chunk, map_in_order, pack_chunks, to_file_times
from voxserve.stt.chunking import speech_regions as chunk_regions
from voxserve.stt.engine import (
    DecodeEnd,
    DecodeInfo,
    DecodeOptions,
    SpeechToTextEngine,
    restrict_language,
)
from voxserve.stt.speech_gate import SpeechGate

FRAMES_PER_SECOND = 100  # `seek` unit: 10 ms frames, as Whisper counts them
# The first speech chunk of a file closes after this much speech: a stream's first words wait
# for a short decode, not a full window.
FIRST_CHUNK_SECONDS = 8.0
# A block's unfinished last chunk is decoded with the next block if its audio is this short.
CARRY_MAX_SECONDS = 60.0
# A chunk's speech that the engine's text did not reach is decoded again at most this often.
MAX_RESUMES = 3
RESUME_MIN_SECONDS = 3.0  # and a third of the chunk: less is an end time that ran short

DecodeItem = DecodeInfo | Segment | DecodeEnd


def decode_blocks(
    engine: SpeechToTextEngine, blocks: Iterable[AudioBlock], options: DecodeOptions
) -> Iterator[DecodeItem]:
    """A DecodeInfo once the language is known, the segments as they are decoded, then a
    DecodeEnd with the file's duration and the tokens of the text."""
    language = "en" if engine.capabilities.english_only else options.language
    read = _Read(iter(blocks))
    first = next(read, None)
    if first is None or first.last and first.samples.size < MIN_SECONDS * SAMPLE_RATE:
        raise audio_too_short()
    info = identify_language(engine, first, options, language)
    yield replace(info, prompt_tokens=engine.count_tokens(options.prompt or ""))
    options = replace(options, language=info.language)
    decode = decode_sequential if options.sequential else decode_chunked
    texts: list[str] = []
    for index, segment in enumerate(decode(engine, chain([first], read), options)):
        texts.append(segment.text)
        yield replace(segment, id=index)
    yield DecodeEnd(read.end / SAMPLE_RATE, engine.count_tokens("".join(texts).strip()))


class _Read:
    """The blocks, remembering where the last one read ends (the file's duration)."""

    def __init__(self, blocks: Iterator[AudioBlock]) -> None:
        self._blocks = blocks
        self.end = 0

    def __iter__(self) -> Iterator[AudioBlock]:
        return self

    def __next__(self) -> AudioBlock:
        block = next(self._blocks)
        self.end = block.start + block.samples.size
        return block


def speech_blocks(blocks: Iterable[AudioBlock]) -> Iterator[AudioBlock]:
    """The blocks long enough to decode, with freed heap pages returned after each one."""
    for block in blocks:
        if block.samples.size >= MIN_SECONDS * SAMPLE_RATE:
            yield block
        del block  # the next block's arrays should be able to reuse these pages
        trim_heap()


def decode_sequential(
    engine: SpeechToTextEngine, blocks: Iterable[AudioBlock], options: DecodeOptions
) -> Iterator[Segment]:
    """Each block decoded whole by the engine (Whisper: its own sequential 30 s windows)."""
    for block in speech_blocks(blocks):
        yield from decode_stretch(engine, block.samples, options, block.start)
        options = replace(options, prompt=None)  # the prompt belongs to the file's start


@dataclass(frozen=True)
class _ChunkJob:
    chunk: Chunk
    samples: np.ndarray
    offset: float  # the block's start in the file, s
    options: DecodeOptions


def decode_chunked(
    engine: SpeechToTextEngine, blocks: Iterable[AudioBlock], options: DecodeOptions
) -> Iterator[Segment]:
    """Each block cut into speech chunks (silence is never decoded), the chunks decoded side
    by side by `parallel_chunks` threads, their segments in file order as soon as a chunk and
    all before it are done. A streamed request's first chunk is short, so its first words
    come early."""
    capabilities = engine.capabilities
    cut = _cut(options)
    # The engine's chunk defaults under the request's own knobs; the request's VAD settings
    # were spent on the cut.
    chunk_options = replace(
        options, chunking=None, prompt=None,
        engine_options={**capabilities.chunk_options, **options.engine_options},
    )

    def jobs() -> Iterator[_ChunkJob]:
        opening = True
        for block, chunks in _chunked_blocks(speech_blocks(blocks), cut,
                                             capabilities.window_seconds,
                                             _first_chunk_seconds(options)):
            for chunk in chunks:
                # The request's prompt precedes the first chunk only.
                job_options = replace(chunk_options, prompt=options.prompt) if opening else \
                    chunk_options
                opening = False
                yield _ChunkJob(chunk, chunk.samples(block.samples), block.start / SAMPLE_RATE,
                                job_options)

    def decode(job: _ChunkJob) -> list[Segment]:
        chunk, samples, options = job.chunk, job.samples, job.options
        out: list[Segment] = []
        for _ in range(MAX_RESUMES + 1):
            segments = list(decode_stretch(engine, samples, options, 0))
            out += [to_file_times(segment, chunk, job.offset) for segment in segments]
            # Whisper sometimes ends its window after the first sentence (a final timestamp
            # at the window's end: 20 s of Dickens lost in one chunk); the pieces its text
            # never reached are decoded again on their own, so no speech is lost.
            rest = chunk.rest_after(segments[-1].end if segments else 0.0)
            # Only a large miss: Whisper's end times run a little short (more so when
            # translating, whose text is shorter), and a piece decoded twice doubles its text.
            if rest is None or rest.size < max(RESUME_MIN_SECONDS * SAMPLE_RATE, chunk.size / 3):
                break
            samples = samples[samples.size - rest.size :]
            chunk, options = rest, replace(options, prompt=None)
        return out

    todo = jobs()
    if options.streamed:
        # A stream's first (short) chunk is decoded alone, with the whole machine, before the
        # others start beside it: its words are what the client waits for.
        first_job = next(todo, None)
        if first_job is not None:
            yield from decode(first_job)
    for _, segments in map_in_order(decode, todo, capabilities.parallel_chunks):
        yield from segments


def _cut(options: DecodeOptions) -> dict:
    """How speech is cut into chunks: the request's VAD settings when it gave them."""
    vad = options.chunking
    if vad is None:
        return {}
    return {"threshold": vad.threshold, "pad_ms": vad.prefix_padding_ms,
            "silence_ms": vad.silence_duration_ms}


def _first_chunk_seconds(options: DecodeOptions) -> float | None:
    return FIRST_CHUNK_SECONDS if options.streamed else None


def _chunked_blocks(
    blocks: Iterable[AudioBlock], cut: dict, window_seconds: float,
    first_seconds: float | None,
) -> Iterator[tuple[AudioBlock, list[Chunk]]]:
    """Each block with its speech chunks. A block's last chunk is carried into the next block
    (its audio from the chunk's start on goes in front of it) and packed with what follows:
    a block boundary then costs no extra, half-empty chunk, whose window Whisper's encoder
    pays for in full. Only tails up to CARRY_MAX_SECONDS are carried, so a block never grows
    by more."""
    carry: AudioBlock | None = None
    for block in chain(blocks, [None]):
        if block is None:  # the end: what was carried is the last block
            if carry is None:
                return
            block, carry = replace(carry, last=True), None
        elif carry is not None:
            block = AudioBlock(carry.start, np.concatenate([carry.samples, block.samples]),
                               block.last)
            carry = None
        regions = chunk_regions(block.samples, **cut)
        chunks = pack_chunks(block.samples, regions, window_seconds,
                             first_seconds=first_seconds)
        if chunks and not block.last:
            tail = chunks[-1].start
            if block.samples.size - tail <= CARRY_MAX_SECONDS * SAMPLE_RATE:
                carry = AudioBlock(block.start + tail, block.samples[tail:].copy(), False)
                chunks = chunks[:-1]
        if chunks:
            first_seconds = None  # only the file's first chunk is short
        yield block, chunks


def decode_stretch(
    engine: SpeechToTextEngine, samples: np.ndarray, options: DecodeOptions, start: int
) -> Iterator[Segment]:
    """The engine's segments of one stretch of audio that begins at sample `start` of the
    file, through the speech gate, with absolute times."""
    gate = SpeechGate(samples)
    offset = start / SAMPLE_RATE
    for segment in engine.transcribe(samples, options):
        if gate.passes(segment, options.no_speech_threshold):
            yield shift(gate.snap(segment), offset)


def shift(segment: Segment, seconds: float) -> Segment:
    """`segment` moved `seconds` later: its times, its words' and its `seek`."""
    if seconds == 0:
        return segment
    words = tuple(replace(w, start=w.start + seconds, end=w.end + seconds)
                  for w in segment.words)
    return replace(
        segment,
        start=segment.start + seconds,
        end=segment.end + seconds,
        seek=segment.seek + round(seconds * FRAMES_PER_SECOND),
        words=words,
    )


def identify_language(
    engine: SpeechToTextEngine, first: AudioBlock, options: DecodeOptions, given: str | None
) -> DecodeInfo:
    """The request's language, or the one the engine hears in the file's first block (of
    `options.language_candidates` when there are some)."""
    if given is not None:
        return DecodeInfo(given, 1.0)
    candidates = options.language_candidates
    if len(candidates) == 1:
        return DecodeInfo(candidates[0], 1.0)
    return restrict_language(_detect_language(engine, first, options), candidates)


def _detect_language(
    engine: SpeechToTextEngine, first: AudioBlock, options: DecodeOptions
) -> DecodeInfo:
    whole = _only_chunk(engine, first, options)
    if whole is not None:
        # Exactly the audio the chunk's decode will encode: the engine can reuse that
        # encoding (Whisper: stt/whisper/encoder_memo.py), one encoder pass instead of two.
        return engine.detect_language(whole)
    head = first.samples[: int(engine.capabilities.language_detection_seconds * SAMPLE_RATE)]
    # Skip silence so a quiet intro does not decide the language; fall back to the raw
    # audio when VAD hears nothing at all.
    regions = speech_regions(head)
    if regions:
        head = np.concatenate([head[s:e] for s, e in regions])
    return engine.detect_language(head)


def _only_chunk(
    engine: SpeechToTextEngine, block: AudioBlock, options: DecodeOptions
) -> np.ndarray | None:
    """The samples of the input's one speech chunk, when chunked decoding will decode the
    whole input as one chunk (a short clip, a live phrase); else None."""
    window = engine.capabilities.window_seconds
    if options.sequential or not block.last or block.samples.size > window * SAMPLE_RATE:
        return None
    chunks = list(_chunked_blocks([block], _cut(options), window, _first_chunk_seconds(options)))
    if len(chunks) != 1 or len(chunks[0][1]) != 1:
        return None
    return chunks[0][1][0].samples(block.samples)
