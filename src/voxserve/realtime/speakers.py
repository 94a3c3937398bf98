"""Who spoke in a live session: each completed turn diarized, its transcript cut where the
speaker changes, with the same labels for the same voices across the session's turns.

The ONNX diarizer (`voxserve.diarize`) runs on a turn's audio alone, as the file endpoint runs
it on a file, through the session's passes (`DecodePasses.diarize`: the scheduler's lane for
the diarizer, in a worker thread); the voices it heard in earlier turns go in as *known
speakers*, so a cluster whose voice matches one (cosine similarity over the diarizer's
`match_threshold`) keeps that speaker's label, and a new voice gets the next free letter. A
speaker's voice is the running duration-weighted mean of their embeddings over every turn
they spoke in.

Words get the speaker whose diarized turn overlaps them most (`diarize.assign.label_words`),
using the final pass's word times; the segments then cut the item's *transcript* (the deltas
joined, which can differ a little from the final pass's words) at speaker changes, matched to
those words by their normalised spelling, so the segments' texts joined are the transcript.
A turn with too little speech to embed (under the diarizer's `min_run`) is the speaker
heard last, or `A` in a session's first turn.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.diarize.assign import label_words
from voxserve.diarize.pipeline import KnownSpeaker, Turn, Voice
from voxserve.domain import Word
from voxserve.realtime.transcriber import split_words, word_key
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.context import RequestContext
from voxserve.stt.passes import DecodePasses

FIRST_SPEAKER = "A"


@dataclass(frozen=True)
class SpeakerSegment:
    text: str  # a part of the transcript, with its leading space after the first
    start: float  # seconds from the start of the item's audio
    end: float
    speaker: str


@dataclass
class _Heard:
    weighted: np.ndarray  # the sum of the voice's embeddings, each times its seconds
    seconds: float

    def embedding(self) -> np.ndarray:
        return self.weighted / max(float(np.linalg.norm(self.weighted)), 1e-9)


class SessionSpeakers:
    """One session's voices; `turns` must be called in the items' order (one at a time)."""

    def __init__(self, passes: DecodePasses, diarizer: ModelSpec,
                 session_gone: Callable[[], Awaitable[bool]]) -> None:
        self._passes = passes
        self._diarizer = diarizer
        self._session_gone = session_gone
        self._heard: dict[str, _Heard] = {}
        self.last: str | None = None  # the speaker of the newest labelled word

    async def turns(self, samples: np.ndarray) -> list[Turn]:
        """Who spoke when in one item's audio, in this session's labels."""
        known = [KnownSpeaker(name, heard.embedding()) for name, heard in self._heard.items()]
        ctx = RequestContext(f"diarize-{time.monotonic_ns()}", is_disconnected=self._session_gone)
        result = await self._passes.diarize(self._diarizer, samples, known, ctx)
        for voice in result.voices:
            self._learn(voice)
        return result.turns

    def segments(self, transcript: str, words: tuple[Word, ...], turns: list[Turn],
                 samples: int) -> list[SpeakerSegment]:
        """The transcript cut at speaker changes (`samples`: the item's length)."""
        pieces = split_words(transcript)
        if not pieces:
            return []
        pieces[-1] += transcript[len("".join(pieces)):]  # trailing white space, if any
        labelled = self._label(words, turns)
        found = _match(pieces, labelled)
        duration = samples / SAMPLE_RATE
        groups: list[tuple[str, list[str], list[Word]]] = []
        for piece, word in zip(pieces, found, strict=True):
            speaker = word.speaker if word is not None else None
            speaker = speaker or (groups[-1][0] if groups else self.last or FIRST_SPEAKER)
            if groups and groups[-1][0] == speaker:
                groups[-1][1].append(piece)
            else:
                groups.append((speaker, [piece], []))
            if word is not None:
                groups[-1][2].append(word)
        out = []
        for i, (speaker, texts, timed) in enumerate(groups):
            start = timed[0].start if timed else (out[-1].end if out else 0.0)
            end = timed[-1].end if timed else (
                duration if i == len(groups) - 1 else start)
            out.append(SpeakerSegment("".join(texts), round(start, 3),
                                      round(max(start, end), 3), speaker))
        self.last = out[-1].speaker
        return out

    def _label(self, words: tuple[Word, ...], turns: list[Turn]) -> list[Word]:
        if turns:
            return label_words(words, turns, None)
        speaker = self.last or FIRST_SPEAKER
        return [Word(w.word, w.start, w.end, w.probability, speaker) for w in words]

    def _learn(self, voice: Voice) -> None:
        weighted = voice.embedding * voice.seconds
        heard = self._heard.get(voice.name)
        if heard is None:
            self._heard[voice.name] = _Heard(weighted, voice.seconds)
        else:
            heard.weighted = heard.weighted + weighted
            heard.seconds += voice.seconds


def _match(pieces: list[str], words: list[Word]) -> list[Word | None]:
    """For each transcript word, the final pass's word that says the same (None: unmatched
    words take their neighbours' speaker)."""
    ours = [word_key(p) for p in pieces]
    theirs = [word_key(w.word) for w in words]
    found: list[Word | None] = [None] * len(pieces)
    matcher = difflib.SequenceMatcher(a=ours, b=theirs, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and a1 - a0 == b1 - b0):
            # A replaced run of the same length is the same words spelt differently
            # (punctuation, case, a live pass's guess): same times.
            for k in range(a1 - a0):
                found[a0 + k] = words[b0 + k]
    return found
