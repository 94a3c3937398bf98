"""The speech-to-text engine protocol: what the pipeline (stt/pipeline.py) needs of an engine,
and nothing more.

An engine decodes one stretch of audio at a time (a block of a long file, a speech chunk, a
live utterance) into domain `Segment`s whose times are relative to that stretch; the pipeline
does everything around it: blocks, language detection on the first block, absolute times and
ids, the speech gate, the file's end. What an engine can do is declared in its
`EngineCapabilities`, and the request checks read those, never an engine's type.

faster-whisper/CTranslate2 is one implementation (stt/whisper/); tests hold every engine to
the same contract (tests/test_engine_contract.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from voxserve.domain import Segment, Task


@dataclass(frozen=True)
class VadSettings:
    """Speech detection settings (OpenAI's `server_vad` fields)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200


@dataclass(frozen=True)
class DecodeOptions:
    task: Task = "transcribe"
    language: str | None = None  # None: the pipeline detects it on the first block
    # With `language` None: the languages the audio may be in (Whisper codes). Detection
    # picks the most probable of these (`restrict_language`); one alone is simply used.
    language_candidates: tuple[str, ...] = ()
    prompt: str | None = None  # text that precedes this stretch of audio
    temperature: float | None = None  # None: the engine's own policy (Whisper: fallback ladder)
    word_timestamps: bool = False
    logprobs: bool = False
    # `chunking_strategy`: the request's VAD settings for cutting speech chunks (or, with
    # sequential decoding, for the engine's own VAD filter).
    chunking: VadSettings | None = None
    # Whisper's strict sequential decoding of each block (VOXSERVE_DECODING=sequential or the
    # `decoding` extension) instead of speech chunks decoded side by side (stt/pipeline.py).
    sequential: bool = False
    # The consumer streams the segments (SSE): chunked decoding opens with a short chunk so
    # the first words come early; a whole response is better served by full chunks.
    streamed: bool = False
    # Whether the consumer reads each segment's times (verbose_json, srt, vtt, words). Without
    # them an engine may decode a stretch that fits its window as plain text, which costs
    # Whisper a third less (no timestamp tokens), in one segment spanning the stretch.
    segment_times: bool = True
    # The speech gate drops a segment over this (and unheard by VAD) as silence.
    no_speech_threshold: float = 0.6
    # The engine's own knobs (documented request extensions and server defaults), by name;
    # an engine ignores the ones it does not know.
    engine_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeInfo:
    """What is known before the first segment."""

    language: str
    language_probability: float
    language_probabilities: tuple[tuple[str, float], ...] = ()
    prompt_tokens: int = 0  # the request's prompt, counted by the engine's tokenizer


def restrict_language(info: DecodeInfo, candidates: tuple[str, ...]) -> DecodeInfo:
    """A detection narrowed to `candidates`: the most probable of them by the detector's
    probabilities (`info.language_probabilities`, its most likely languages). When none of
    them is among those, the detector heard none of them: the first candidate is used."""
    if not candidates or info.language in candidates:
        return info
    probabilities = dict(info.language_probabilities)
    heard = [(probabilities[c], -i, c) for i, c in enumerate(candidates) if c in probabilities]
    if not heard:
        return DecodeInfo(candidates[0], 0.0, info.language_probabilities, info.prompt_tokens)
    probability, _, language = max(heard)
    return DecodeInfo(language, probability, info.language_probabilities, info.prompt_tokens)


@dataclass(frozen=True)
class DecodeEnd:
    duration: float  # seconds of audio read
    output_tokens: int = 0  # the text yielded, counted by the engine's tokenizer


@dataclass(frozen=True)
class EngineCapabilities:
    # Languages it can transcribe (ISO-639-1); None: every language Whisper knows.
    languages: frozenset[str] | None = None
    translation: bool = True  # into English
    word_timestamps: bool = True
    logprobs: bool = True
    prompt: bool = True
    # Cheap enough to re-decode a growing buffer several times a second (live audio).
    incremental: bool = True
    # Audio the language detector reads at most; the first block of a file is this long.
    language_detection_seconds: float = 30.0
    # The longest stretch decoded in one piece (Whisper: its 30 s window); speech chunks are
    # packed up to this.
    window_seconds: float = 30.0
    # Speech chunks of one file decoded side by side (threads calling `transcribe` at once).
    parallel_chunks: int = 1
    # The engine's own knobs for decoding one speech chunk (DecodeOptions.engine_options
    # defaults that the request's extensions override): what suits a short independent
    # stretch of speech rather than a whole file.
    chunk_options: Mapping[str, Any] = field(default_factory=dict)

    def transcribes(self, language: str) -> bool:
        return self.languages is None or language in self.languages

    @property
    def english_only(self) -> bool:
        return self.languages == frozenset({"en"})


@runtime_checkable
class SpeechToTextEngine(Protocol):
    """One loaded speech-to-text model. Methods are called from worker threads; an engine
    that is not thread-safe serialises itself."""

    model_id: str
    capabilities: EngineCapabilities

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the engine's vocabulary (for token-style usage)."""

    def detect_language(self, samples: np.ndarray) -> DecodeInfo:
        """The spoken language of 16 kHz mono samples (the pipeline asks only when the
        request gave none and the engine knows more than one language)."""

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Iterator[Segment]:
        """Segments of 16 kHz mono samples, lazily, in order, with times in seconds from the
        first sample and `seek` in 10 ms frames from it; ids are the pipeline's business."""
