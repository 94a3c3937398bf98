"""The decoding pipeline around any `SpeechToTextEngine`: blocks of a file in, a DecodeInfo,
segments and a DecodeEnd out. Runs in a worker thread, lazily, so a consumer can stream.

- **Language**: the request's, `en` for an English-only engine, or detected once on the first
  block with the silence cut out by VAD (the raw audio if VAD hears nothing), so a quiet
  intro does not decide it.
- **Blocks**: each block is decoded by the engine on its own; the request's prompt belongs to
  the start of the file only (handing a block the previous block's text as a prompt made
  Whisper drop its timestamp tokens and lose a third of the following words).
- **Speech gate** (stt/speech_gate.py) on every segment, then times and `seek` made absolute
  in the file and ids numbered across blocks.
- A file under 0.1 s is `audio_too_short`; a later block under 0.1 s is skipped. Freed heap
  pages go back to the OS after each block (runtime/memory.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np

from voxserve.audio.blocks import AudioBlock
from voxserve.audio.decode import MIN_SECONDS, SAMPLE_RATE
from voxserve.audio.vad import speech_regions
from voxserve.domain import Segment
from voxserve.errors import audio_too_short
from voxserve.runtime.memory import trim_heap
from voxserve.stt.engine import DecodeEnd, DecodeInfo, DecodeOptions, SpeechToTextEngine
from voxserve.stt.speech_gate import SpeechGate

FRAMES_PER_SECOND = 100  # `seek` unit: 10 ms frames, as Whisper counts them

DecodeItem = DecodeInfo | Segment | DecodeEnd


def decode_blocks(
    engine: SpeechToTextEngine, blocks: Iterable[AudioBlock], options: DecodeOptions
) -> Iterator[DecodeItem]:
    """A DecodeInfo once the language is known, the segments as they are decoded, then a
    DecodeEnd with the file's duration and the tokens of the text."""
    language = "en" if engine.capabilities.english_only else options.language
    info: DecodeInfo | None = None
    prompt = options.prompt
    next_id = 0
    texts: list[str] = []
    end = 0
    for block in blocks:
        end = block.start + block.samples.size
        if info is None:
            if block.last and block.samples.size < MIN_SECONDS * SAMPLE_RATE:
                raise audio_too_short()
            info = identify_language(engine, block.samples, language)
            info = replace(info, prompt_tokens=engine.count_tokens(options.prompt or ""))
            yield info
        if block.samples.size < MIN_SECONDS * SAMPLE_RATE:
            continue
        block_options = replace(options, language=info.language, prompt=prompt)
        for segment in decode_stretch(engine, block.samples, block_options, block.start):
            segment = replace(segment, id=next_id)
            next_id += 1
            texts.append(segment.text)
            yield segment
        prompt = None  # the request's prompt belongs to the start of the file
        del block  # the next block's arrays should be able to reuse these pages
        trim_heap()
    yield DecodeEnd(end / SAMPLE_RATE, engine.count_tokens("".join(texts).strip()))


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
    engine: SpeechToTextEngine, samples: np.ndarray, given: str | None
) -> DecodeInfo:
    if given is not None:
        return DecodeInfo(given, 1.0)
    head = samples[: int(engine.capabilities.language_detection_seconds * SAMPLE_RATE)]
    # Skip silence so a quiet intro does not decide the language; fall back to the raw
    # audio when VAD hears nothing at all.
    regions = speech_regions(head)
    if regions:
        head = np.concatenate([head[s:e] for s, e in regions])
    return engine.detect_language(head)
