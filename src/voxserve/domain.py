"""Plain records shared by every layer. Engines produce these; no engine type leaks above
`stt/` or `tts/`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class Word:
    word: str  # as the engine produced it: leading space and punctuation kept
    start: float
    end: float
    probability: float = 1.0
    speaker: str | None = None  # set by diarization


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int  # 10 ms frames, as Whisper counts them
    start: float
    end: float
    text: str  # with Whisper's leading space
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[Word, ...] = ()
    speaker: str | None = None  # set by diarization
    logprobs: tuple[TokenLogprob, ...] = ()  # filled only when asked for


@dataclass(frozen=True)
class Transcript:
    task: Task
    language: str  # ISO-639-1 code
    duration: float  # seconds of input audio
    segments: tuple[Segment, ...]
    language_probability: float = 1.0
    # The detector's top languages (code, probability), when the language was detected.
    language_probabilities: tuple[tuple[str, float], ...] = ()
    text_tokens_in: int = 0  # prompt tokens, for token-style usage
    output_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(w for s in self.segments for w in s.words)

    @property
    def logprobs(self) -> tuple[TokenLogprob, ...]:
        return tuple(p for s in self.segments for p in s.logprobs)

