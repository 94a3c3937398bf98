"""faster-whisper/CTranslate2 behind the `SpeechToTextEngine` protocol (stt/engine.py).
Nothing from faster-whisper is visible outside this folder: the engine speaks in domain
records.

A stretch of audio (a speech chunk, a block of a long file, a live utterance) is decoded as
faster-whisper decodes a file: sequential 30 s windows, Whisper's heuristics, the temperature
fallback. A speech chunk (stt/pipeline.py) is decoded with CHUNK_OPTIONS. With sequential
decoding and a chunking strategy, faster-whisper's own VAD filter cuts the block first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.domain import Segment, TokenLogprob, Word
from voxserve.stt.engine import DecodeInfo, DecodeOptions, EngineCapabilities, VadSettings
from voxserve.stt.whisper.batching import BatchingWhisper
from voxserve.stt.whisper.encoder_memo import EncoderMemo
from voxserve.stt.whisper.tokens import token_bytes

log = logging.getLogger("voxserve.stt")

# Whisper's temperature fallback: start greedy, retry hotter when a window looks wrong.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# A speech chunk's bounded fallback: Whisper's two tests (the text repeats itself, or its
# average log-probability is under -1) and its choice when every try fails (a try without
# repeated text, then the best average log-probability), with three tries instead of six,
# and hot ones: what fixes a hard line is a sample far from the greedy text; the 0.2 steps
# mostly find the greedy text again.
# 40 acted Czech lines translated one at a time, whisper-base, chrF over repeated runs (sampling
# moves one run by up to 1.4): Whisper's six temperatures 18.87 (2 runs) at 1.1x real time;
# these three 18.64 (5 runs) at 1.9x; (0.0, 0.2, 0.4) 17.84 (3 runs) at 1.8x; (0.0, 0.4, 0.8)
# retried for repeated text only 18.15 (5 runs) at 3.1x.
CHUNK_FALLBACK_TEMPERATURES = (0.0, 0.6, 1.0)
# How Whisper decodes one speech chunk (stt/pipeline.py): the chunk is independent speech of at
# most one window, so no text is carried between its windows (the chunks of a file cannot see
# each other's text either, and carried text is how a hallucination repeats), and the fallback
# is bounded. (Live passes turn the log-probability retry off: realtime/transcriber.py.)
CHUNK_OPTIONS = {
    "condition_on_previous_text": False,
    "fallback_temperatures": CHUNK_FALLBACK_TEMPERATURES,
}
FRAMES_PER_SECOND = 100  # Whisper's `seek` unit: 10 ms mel frames
# A plain-text decode (no timestamp tokens) that yields fewer tokens per second of audio than
# this, beyond its first few seconds, stopped early or skipped speech: without timestamps
# nothing shows where, so the stretch is decoded again with them (the pipeline then resumes
# what the text did not reach). Measured beyond the grace: speech chunks (VAD cut the silence
# out) of the 16 English clips of the shared set and the test fixtures, 4.1-6.5 tokens/s with
# tiny.en; a whole clip with its pauses (beckett.wav, 10 s), 2.58 with tiny.en and base.
# Decodes that lost speech: one that stopped after the first sentence of 25 s, 0.24; tiny.en
# skipping the last 10 s (short bursts of a quoted line) of a 26.7 s chunk, 2.11. A false
# alarm costs a second decode, a miss loses words. The grace keeps a short answer ("Okay.":
# two tokens in a 1.5 s live turn) from paying for a second decode.
MIN_PLAIN_TOKENS_PER_SECOND = 2.3
PLAIN_GRACE_SECONDS = 3.0
# Up to this many 30 s windows are tried when the first ones are silent or ambiguous.
LANGUAGE_DETECTION_WINDOWS = 4


@dataclass(frozen=True)
class WhisperOptions:
    """faster-whisper's own knobs: the server's defaults, overridden per request by the
    documented extensions (DecodeOptions.engine_options)."""

    beam_size: int = 5
    vad_filter: bool = False
    condition_on_previous_text: bool = True
    hallucination_silence_threshold: float | None = None
    hotwords: str | None = None
    fallback_temperatures: tuple[float, ...] = FALLBACK_TEMPERATURES
    without_timestamps: bool = False
    log_prob_threshold: float | None = -1.0  # Whisper's; None: no retry for it alone
    # Encode the audio and a few seconds of padding, not a 30 s window (short_window.py): in
    # whichever thread decodes the chunk (the pipeline decodes chunks side by side).
    short_window: bool = False

    @classmethod
    def from_options(cls, options: DecodeOptions) -> WhisperOptions:
        known = {k: v for k, v in options.engine_options.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class WhisperEngine:
    """One loaded Whisper model."""

    def __init__(self, model_id: str, model: Any, parallel_chunks: int = 1) -> None:
        """`parallel_chunks`: how many speech chunks of a file the loader's layout decodes
        side by side (each chunk call is routed by stt/whisper/batching.py)."""
        self.model_id = model_id
        self._model = model
        multilingual = bool(model.model.is_multilingual)
        self.capabilities = EngineCapabilities(
            languages=None if multilingual else frozenset({"en"}),
            translation=multilingual,
            language_detection_seconds=LANGUAGE_DETECTION_WINDOWS * 30,
            parallel_chunks=parallel_chunks,
            chunk_options=CHUNK_OPTIONS,
        )

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self._model.hf_tokenizer.encode(text, add_special_tokens=False).ids)

    def detect_language(self, samples: np.ndarray) -> DecodeInfo:
        if self.capabilities.english_only:  # CTranslate2 refuses to ask an English model
            return DecodeInfo("en", 1.0)
        # Inside a decode's brackets like transcribe: a lone detection then runs on the solo
        # engine with every core, not on a one-thread shared replica (1.3 s per encode
        # instead of 0.7 with whisper-base on 2 cores).
        head = samples[: int(self.capabilities.language_detection_seconds * SAMPLE_RATE)]
        # The first window as `transcribe` cuts it from the same audio (its features less the
        # last frame): the decode that follows finds that window's encoding in the memo.
        features = self._model.feature_extractor(head)[..., :-1]
        with self._batching(), self._keeping_encodings():
            language, probability, all_probs = self._model.detect_language(
                features=features, language_detection_segments=LANGUAGE_DETECTION_WINDOWS,
                language_detection_threshold=0.5,
            )
        top = tuple((code, float(p)) for code, p in all_probs[:10])
        return DecodeInfo(language, float(probability), top)

    def short_windows(self) -> AbstractContextManager:
        """Inside, this thread's encodes (language detection's too) take the audio and a few
        seconds of padding, not a 30 s window (short_window.py): for one utterance decoded
        on its own, a live session's pass."""
        windows = getattr(self._model, "short_windows", None)
        return windows.trimming() if windows is not None else nullcontext()

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Iterator[Segment]:
        with self._batching():
            yield from self._transcribe(samples, options)

    def _keeping_encodings(self) -> AbstractContextManager:
        memo = self._model.encode
        return memo.keeping() if isinstance(memo, EncoderMemo) else nullcontext()

    def _batching(self) -> AbstractContextManager:
        model = self._model.model
        return model.decoding() if isinstance(model, BatchingWhisper) else nullcontext()

    def _transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Iterator[Segment]:
        knobs = WhisperOptions.from_options(options)
        seconds = samples.size / SAMPLE_RATE
        # Plain text when nobody reads segment times: timestamp tokens and their rules make
        # beam search cost half as much again (13.4 against 8.3 s of generate for the same
        # five chunks). Only for transcription within one window: a longer stretch would be cut
        # into blind 30 s windows, and plain translations of short acted lines scored 2.9
        # chrF lower.
        if (not options.segment_times and options.task == "transcribe"
                and not options.word_timestamps
                and seconds <= self.capabilities.window_seconds):
            plain = list(self._decode(samples, options, replace(knobs, without_timestamps=True)))
            expected = MIN_PLAIN_TOKENS_PER_SECOND * (seconds - PLAIN_GRACE_SECONDS)
            if sum(len(s.tokens) for s in plain) >= expected:
                yield from plain
                return
            log.info("Plain decode of %.1f s stopped early; decoding it with timestamps", seconds)
        yield from self._decode(samples, options, knobs)

    def _decode(
        self, samples: np.ndarray, options: DecodeOptions, knobs: WhisperOptions
    ) -> Iterator[Segment]:
        temperatures = (
            [options.temperature] if options.temperature else list(knobs.fallback_temperatures)
        )
        # faster-whisper measures silences from word times.
        word_timestamps = options.word_timestamps or (
            knobs.hallucination_silence_threshold is not None
        )
        # Sequential decoding with a chunking strategy: the stretch is cut at speech pauses by
        # Silero VAD (the request's threshold, padding and silence) and the pieces decoded in
        # order with Whisper's context carried between them. (Chunked decoding cuts in the
        # pipeline and never sets `chunking` here.)
        vad = options.chunking
        segments, _ = self._model.transcribe(
            samples,
            language=options.language,
            task=options.task,
            beam_size=knobs.beam_size,
            temperature=temperatures,
            word_timestamps=word_timestamps,
            initial_prompt=options.prompt or None,
            no_speech_threshold=options.no_speech_threshold,
            hotwords=knobs.hotwords,
            vad_filter=vad is not None or knobs.vad_filter,
            vad_parameters=_vad_parameters(vad) if vad is not None else None,
            condition_on_previous_text=knobs.condition_on_previous_text,
            hallucination_silence_threshold=knobs.hallucination_silence_threshold,
            without_timestamps=knobs.without_timestamps,
            log_prob_threshold=knobs.log_prob_threshold,
        )
        # faster-whisper encodes lazily, as the segments are read, in this thread.
        with self.short_windows() if knobs.short_window else nullcontext():
            for index, raw in enumerate(segments):
                segment = _to_domain(index, raw)
                if options.logprobs:
                    segment = replace(
                        segment, logprobs=self._token_logprobs(samples, raw, options.language)
                    )
                yield segment

    def _token_logprobs(self, samples: np.ndarray, raw: Any, language: str | None) -> tuple:
        """The decoder's probability of each text token of a segment, by forced alignment
        of the segment's tokens on its 30 s window (CTranslate2's `align`)."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        multilingual = self.capabilities.languages is None
        tokenizer = Tokenizer(self._model.hf_tokenizer, multilingual, task="transcribe",
                              language=language or "en")
        text_tokens = [t for t in raw.tokens if t < tokenizer.eot]
        if not text_tokens:
            return ()
        window_start = int(raw.seek) * (SAMPLE_RATE // FRAMES_PER_SECOND)
        window = samples[window_start : window_start + 30 * SAMPLE_RATE]
        features = self._model.feature_extractor(window)
        encoder_output = self._model.encode(pad_or_trim(features))
        result = self._model.model.align(
            encoder_output, tokenizer.sot_sequence, [text_tokens], features.shape[-1]
        )[0]
        out = []
        for token, probability in zip(text_tokens, result.text_token_probs, strict=False):
            raw_bytes = token_bytes(self._model.hf_tokenizer, token)
            out.append(TokenLogprob(raw_bytes.decode("utf-8", errors="replace"),
                                    math.log(max(float(probability), 1e-12)), tuple(raw_bytes)))
        return tuple(out)


def _vad_parameters(vad: VadSettings) -> dict:
    return {
        "threshold": vad.threshold,
        "speech_pad_ms": vad.prefix_padding_ms,
        "min_silence_duration_ms": vad.silence_duration_ms,
    }


def _to_domain(index: int, seg: Any) -> Segment:
    words = tuple(
        Word(w.word, float(w.start), float(w.end), float(w.probability))
        for w in seg.words or ()
    )
    return Segment(
        id=index,
        seek=int(seg.seek),
        start=float(seg.start),
        end=float(seg.end),
        text=seg.text,
        tokens=tuple(int(t) for t in seg.tokens),
        temperature=float(seg.temperature or 0.0),
        avg_logprob=float(seg.avg_logprob),
        compression_ratio=float(seg.compression_ratio),
        no_speech_prob=float(seg.no_speech_prob),
        words=words,
    )
