"""Decoding an utterance while it grows, and only ever sending text that has stopped changing.

A *pass* decodes the whole utterance so far with the session's model. Each pass is admitted by
the scheduler like a request (it holds a slot for its own run, not for the session), so live
sessions and file uploads share the engines fairly; on a cluster it runs on a replica of the
model (`stt/passes.py`).

Between passes, `Agreement` keeps what two consecutive passes agree on, up to a word
boundary and never including the newest word: that prefix is final and goes out as a delta,
so deltas never need retracting. At the turn's end a final pass (beam search, as the file
endpoint decodes) gives the rest: the item's transcript is always the deltas joined.

Text is handled as *pieces*: words (with their leading space), or Whisper's tokens when the
session asked for logprobs, so the logprob tokens spell the deltas exactly.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import numpy as np

from voxserve.audio.decode import MIN_SECONDS, SAMPLE_RATE
from voxserve.domain import Segment, Task, TokenLogprob, Word
from voxserve.errors import ServiceError
from voxserve.runtime.catalog import PublicModel
from voxserve.runtime.context import RequestContext
from voxserve.stt.engine import DecodeOptions
from voxserve.stt.passes import DecodePasses

HOLD_BACK = 2  # words at the end of a live pass that are never sent from it
# An utterance's first words are sent once this many consecutive passes agree on them: on a
# turn's first second two passes agreed on "How do you marry" for "Had he married" (tiny.en
# and base), and the deltas cannot take words back.
FIRST_AGREEMENT = 3
_WORDS = re.compile(r"\s*\S+")
_NON_WORD = re.compile(r"[^\w']+")
_SENTENCE_END = re.compile(r"[.!?。！？][\"')\]]*$")


@dataclass(frozen=True)
class Piece:
    text: str
    logprob: TokenLogprob | None = None

    def starts_word(self) -> bool:
        return self.text[:1].isspace()


def join(pieces: list[Piece]) -> str:
    return "".join(p.text for p in pieces)


def split_words(text: str) -> list[str]:
    """Words with their leading white space (text's trailing white space is left out)."""
    return _WORDS.findall(text)


def word_key(text: str) -> str:
    """A word as passes are compared: lower case, punctuation dropped."""
    return _norm(text)


def ends_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text.strip()))


def pieces_of(segments: list[Segment], tokens: bool) -> list[Piece]:
    """An utterance's text as pieces; the first loses Whisper's leading space."""
    if tokens:
        pieces = [Piece(p.token, p) for s in segments for p in s.logprobs]
    else:
        pieces = [Piece(w) for w in _WORDS.findall("".join(s.text for s in segments))]
    if pieces:
        pieces[0] = _lstrip(pieces[0])
        if not pieces[0].text:
            pieces = pieces[1:]
    return pieces


def _lstrip(piece: Piece) -> Piece:
    text = piece.text.lstrip()
    if piece.logprob is None:
        return Piece(text)
    return Piece(text, replace(piece.logprob, token=text, bytes=tuple(text.encode())))


def _with_space(piece: Piece) -> Piece:
    text = " " + piece.text
    if piece.logprob is None:
        return Piece(text)
    return Piece(text, replace(piece.logprob, token=text, bytes=tuple(text.encode())))


class Agreement:
    """The stable prefix of a growing utterance's successive decodes.

    Passes may rewrite text already sent (Whisper adds a leading "And" once it hears more,
    or changes punctuation), so each pass is first aligned with the committed text by
    comparing normalised words; only what follows the committed part is compared between
    the latest passes: two of them, or `FIRST_AGREEMENT` for an utterance's first words."""

    def __init__(self) -> None:
        self.committed: list[Piece] = []
        self._previous_tails: list[list[Piece]] = []  # the latest passes' uncommitted parts

    @property
    def text(self) -> str:
        return join(self.committed)

    def update(self, pieces: list[Piece]) -> list[Piece]:
        """The pieces that became stable with this pass (possibly none)."""
        start = _after(pieces, self.committed)
        tail = pieces[start:]
        needed = (FIRST_AGREEMENT if not self.committed else 2) - 1  # earlier passes
        previous = self._previous_tails[-needed:]
        self._previous_tails = [*self._previous_tails, tail][-(FIRST_AGREEMENT - 1):]
        if len(previous) < needed:
            return []
        agreed = 0
        while agreed < len(tail) and all(
            agreed < len(p) and _norm(p[agreed].text) == _norm(tail[agreed].text)
            for p in previous
        ):
            agreed += 1
        # The newest words may still be cut by the end of the audio or rewritten once the
        # next words are heard: the last HOLD_BACK words wait for a later pass.
        stable = min(agreed, _word_index(tail, max(0, _count_words(tail) - HOLD_BACK)))
        while stable > 0 and not _word_start(tail, stable, self.committed):
            stable -= 1
        new = self._joinable(tail[:stable])
        self.committed.extend(new)
        if stable:  # the passes that agreed go on after what they agreed on
            self._previous_tails = [t[stable:] for t in (*previous, tail)][-(FIRST_AGREEMENT - 1):]
        return new

    def finish(self, final: list[Piece]) -> list[Piece]:
        """What the final decode adds to the committed text: the sent words stand and the
        final text continues after the part that matches them."""
        rest = self._joinable(final[_after(final, self.committed):])
        self.committed.extend(rest)
        return rest

    def _joinable(self, pieces: list[Piece]) -> list[Piece]:
        """Pieces to append to the committed text, with a space where a word starts."""
        if pieces and self.committed and not pieces[0].starts_word():
            return [_with_space(pieces[0]), *pieces[1:]]
        if pieces and not self.committed:
            return [_lstrip(pieces[0]), *pieces[1:]]
        return pieces


def _norm(text: str) -> str:
    return _NON_WORD.sub("", text.lower())


def _word_start(pieces: list[Piece], index: int, committed: list[Piece]) -> bool:
    return pieces[index].starts_word() or (index == 0 and not committed)


def _after(pieces: list[Piece], committed: list[Piece]) -> int:
    """The index in `pieces` just past the part that says what `committed` says."""
    if not committed:
        return 0
    ours = [_norm(p.text) for p in pieces]
    sent = [_norm(p.text) for p in committed]
    if ours[: len(sent)] == sent:
        return len(sent)
    matcher = difflib.SequenceMatcher(a=sent, b=ours, autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    if blocks and blocks[-1].a + blocks[-1].size >= len(sent) - 1:
        # The committed text's end is found (allowing its last word to differ).
        last = blocks[-1]
        return min(len(pieces), last.b + last.size + (len(sent) - last.a - last.size))
    return min(len(pieces), _word_index(pieces, _count_words(committed)))


def _count_words(pieces: list[Piece]) -> int:
    return sum(1 for i, p in enumerate(pieces) if i == 0 or p.starts_word())


def _word_index(pieces: list[Piece], words: int) -> int:
    """The index of the piece that starts word number `words` (0-based), or the end."""
    seen = 0
    for i, p in enumerate(pieces):
        if i == 0 or p.starts_word():
            if seen == words:
                return i
            seen += 1
    return len(pieces)


@dataclass(frozen=True)
class PassOptions:
    """What a session asks of every decode pass."""

    language: str | None = None
    prompt: str | None = None
    logprobs: bool = False
    beam_size: int = 5  # of every pass, live ones included (greedy ones locked in errors)
    task: Task = "transcribe"  # "translate": Whisper's speech-to-English (live translation)
    word_timestamps: bool = False  # of the final pass: speaker segments need word times
    hotwords: str | None = None  # the session's `keywords`, as Whisper's hotwords (every pass)
    # The session's `languages` (Whisper codes): with `language` None, detection picks one
    # of these.
    language_candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class PassResult:
    pieces: list[Piece]
    language: str | None
    output_tokens: int
    prompt_tokens: int
    words: tuple[Word, ...] = ()  # with times, when the pass asked for them


@dataclass(frozen=True)
class EarlyDecode:
    """A required decode started while the speaker has paused, before the VAD has ended the
    turn (or phrase): if the turn then ends with its last voiced sample unchanged, its result
    is the turn's (the audio differs only in trailing silence), so the VAD's silence and the
    decode overlap. Live transcription and live translation both start one."""

    decode: asyncio.Future[PassResult]
    voice_end: int  # the turn's last voiced sample when it started

    @classmethod
    def start(cls, run: Awaitable[PassResult], voice_end: int) -> EarlyDecode:
        decode = asyncio.ensure_future(run)
        # Its failure is met by decoding the turn again, or not at all.
        decode.add_done_callback(lambda f: f.cancelled() or f.exception())
        return cls(decode, voice_end)

    def holds(self, voice_end: int | None) -> bool:
        """Whether this decode is of the turn whose last voiced sample is `voice_end`."""
        return self.voice_end == voice_end

    def cancel(self) -> None:
        self.decode.cancel()


class PassDecoder:
    """Runs one model's decode passes for a session (`stt/passes.py`: through this instance's
    scheduler, or on a model replica of the cluster)."""

    def __init__(
        self,
        passes: DecodePasses,
        model: PublicModel,
        session_id: str,
        session_gone: Callable[[], Awaitable[bool]],
    ) -> None:
        self._passes = passes
        self.model = model
        self._session_id = session_id
        self._session_gone = session_gone

    async def run(
        self, samples: np.ndarray, options: PassOptions, *, final: bool
    ) -> PassResult:
        if samples.size < MIN_SECONDS * SAMPLE_RATE:
            return PassResult([], options.language, 0, 0)
        decode = DecodeOptions(
            task=options.task,
            language=options.language,
            language_candidates=options.language_candidates,
            prompt=options.prompt,
            logprobs=options.logprobs,
            word_timestamps=options.word_timestamps and final,
            # A session sends text only: an engine may skip segment times (Whisper: a third
            # cheaper) unless speaker segments need the words' times.
            segment_times=options.word_timestamps and final,
            # Every pass searches as the file endpoint does: words two live passes agree on
            # are sent and cannot be taken back, and greedy passes on a turn's first second
            # agreed on wrong words ("How do you marry" for "Had he married": whisper-base's
            # live WER 0.076 against 0.025 for the final passes alone, on six fixture clips;
            # with beam 5 both 0.025). Short windows make that affordable. One utterance:
            # nothing to condition on across windows of a long final pass. A turn is retried
            # hotter only when its text repeats itself: a retry for a low log-probability
            # would double a pass's latency, on every mumbled turn.
            engine_options={"beam_size": options.beam_size,
                            "condition_on_previous_text": False,
                            "log_prob_threshold": None,
                            # One utterance: its audio is encoded alone, not padded to a
                            # 30 s window (stt/whisper/short_window.py).
                            "short_window": True,
                            **({"hotwords": options.hotwords} if options.hotwords else {})},
        )
        # Each pass is a request of its own: its deadline counts from now, not from when the
        # session opened, and it is dropped before the engine if the session has ended.
        ctx = RequestContext(f"{self._session_id}-pass-{time.monotonic_ns()}",
                             is_disconnected=self._session_gone)
        # A live pass is optional: it gives way to final passes (stt/passes.py).
        result = await self._passes.decode(self.model, samples, decode, ctx,
                                           optional=not final)
        pieces = pieces_of(result.segments, options.logprobs)
        words = tuple(w for s in result.segments for w in s.words)
        return PassResult(pieces, result.language, result.text_tokens, result.prompt_tokens,
                          words)


Emit = Callable[[list[Piece]], None]


class UtteranceTranscriber:
    """One item's text: live passes while it grows, a final pass when it ends."""

    def __init__(self, decoder: PassDecoder, options: PassOptions) -> None:
        self._decoder = decoder
        self.options = options
        self.agreement = Agreement()
        self.decoded_samples = 0  # how much audio the last live pass saw
        self.failed = False
        self.output_tokens = 0
        self.prompt_tokens = 0
        self.latest_text = ""  # the newest live pass's whole text, stable or not
        self.last_pass_seconds = 0.0  # wall time of the newest live pass (set by its runner)
        self.final_words: tuple[Word, ...] = ()  # the final pass's, when it asked for times

    @property
    def text(self) -> str:
        return self.agreement.text

    @property
    def model_id(self) -> str:
        """The native model (the scheduler's lane) this item is decoded by."""
        return self._decoder.model.spec.id

    async def live_pass(self, samples: np.ndarray) -> list[Piece]:
        self.decoded_samples = samples.size
        try:
            result = await self._decoder.run(samples, self.options, final=False)
        except ServiceError:
            # A failed live pass only delays text: the final pass reports the error.
            self.failed = True
            return []
        self.latest_text = join(result.pieces)
        if self.options.language is None and result.language:
            # Detected once per item: later passes skip language detection.
            self.options = replace(self.options, language=result.language)
        return self.agreement.update(result.pieces)

    async def final_pass(self, samples: np.ndarray) -> list[Piece]:
        return self.accept_final(await self.final_decode(samples))

    async def final_decode(self, samples: np.ndarray) -> PassResult:
        """The final pass's decode alone, changing nothing: it may be started early and
        thrown away (session.py: the turn may be ending)."""
        return await self._decoder.run(samples, self.options, final=True)

    def accept_final(self, result: PassResult) -> list[Piece]:
        """The item's text completed by a final decode: what it adds to the deltas sent."""
        rest = self.agreement.finish(result.pieces)
        self.output_tokens = self._decoder_tokens(result)
        self.prompt_tokens = result.prompt_tokens
        self.final_words = result.words
        return rest

    def _decoder_tokens(self, result: PassResult) -> int:
        # The transcript is the committed text, which may differ from the final pass's.
        if result.output_tokens and join(result.pieces) == self.text:
            return result.output_tokens
        return max(result.output_tokens, len(self.text.split()))
