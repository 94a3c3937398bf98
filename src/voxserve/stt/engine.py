"""The Whisper engine: faster-whisper/CTranslate2 behind a small interface that speaks in
domain records. Nothing from faster-whisper is visible above this module.

Audio arrives as bounded blocks (see audio/blocks.py); each block is decoded as faster-whisper
decodes a file (sequential 30 s windows, Whisper's heuristics), with a chunking strategy first
cut into speech chunks by Silero VAD. Segment and word times are shifted by the block's start, so
they are absolute in the original file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import numpy as np

from voxserve.audio.blocks import AudioBlock
from voxserve.audio.decode import MIN_SECONDS, SAMPLE_RATE
from voxserve.config import Settings
from voxserve.domain import Segment, Task, TokenLogprob, Word
from voxserve.errors import audio_too_short
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.layout import engine_layout, resolve_device
from voxserve.runtime.memory import trim_heap
from voxserve.runtime.metrics import Metrics
from voxserve.runtime.store import resolve_whisper_source
from voxserve.stt.batching import BatchingWhisper
from voxserve.stt.tokens import token_bytes

log = logging.getLogger("voxserve.stt")

# Whisper's temperature fallback: start greedy, retry hotter when a window looks wrong.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
FRAMES_PER_SECOND = 100  # Whisper's `seek` unit: 10 ms mel frames
# Up to this many 30 s windows are tried when the first ones are silent or ambiguous.
LANGUAGE_DETECTION_WINDOWS = 4


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200


@dataclass(frozen=True)
class DecodeOptions:
    task: Task = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperatures: tuple[float, ...] = FALLBACK_TEMPERATURES
    word_timestamps: bool = False
    logprobs: bool = False
    beam_size: int = 5
    # `chunking_strategy`: cut at speech pauses by VAD before decoding.
    chunking: VadSettings | None = None
    # Documented extensions (faster-whisper's own knobs).
    vad_filter: bool = False
    condition_on_previous_text: bool = True
    no_speech_threshold: float = 0.6
    hallucination_silence_threshold: float | None = None
    hotwords: str | None = None


@dataclass(frozen=True)
class DecodeInfo:
    """What is known before the first segment."""

    language: str
    language_probability: float
    language_probabilities: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class DecodeEnd:
    duration: float


@dataclass
class _BlockState:
    language: str | None
    prompt: str | None
    next_id: int = 0
    info: DecodeInfo | None = None


class WhisperEngine:
    """One loaded Whisper model."""

    def __init__(self, model_id: str, model: object) -> None:
        self.model_id = model_id
        self._model = model

    @property
    def multilingual(self) -> bool:
        return bool(self._model.model.is_multilingual)

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self._model.hf_tokenizer.encode(text, add_special_tokens=False).ids)

    def transcribe(
        self, blocks: Iterable[AudioBlock], options: DecodeOptions
    ) -> Iterator[DecodeInfo | Segment | DecodeEnd]:
        """A DecodeInfo once the language is known, the segments as they are decoded, then
        a DecodeEnd with the file's duration. Lazy: decoding happens while it is consumed."""
        with self._batching():
            yield from self._transcribe_blocks(blocks, options)

    def _batching(self) -> AbstractContextManager:
        model = self._model.model
        return model.decoding() if isinstance(model, BatchingWhisper) else nullcontext()

    def _transcribe_blocks(
        self, blocks: Iterable[AudioBlock], options: DecodeOptions
    ) -> Iterator[DecodeInfo | Segment | DecodeEnd]:
        state = _BlockState(language=options.language if self.multilingual else "en",
                            prompt=options.prompt)
        end = 0
        for block in blocks:
            end = block.start + block.samples.size
            if state.info is None:
                if block.last and block.samples.size < MIN_SECONDS * SAMPLE_RATE:
                    raise audio_too_short()
                state.info = self._identify_language(block.samples, state.language)
                state.language = state.info.language
                yield state.info
            if block.samples.size < MIN_SECONDS * SAMPLE_RATE:
                continue
            yield from self._transcribe_block(block, options, state)
            del block  # the next block's arrays should be able to reuse these pages
            trim_heap()
        yield DecodeEnd(end / SAMPLE_RATE)

    def _identify_language(self, samples: np.ndarray, given: str | None) -> DecodeInfo:
        if given is not None:
            return DecodeInfo(given, 1.0)
        from faster_whisper.vad import get_speech_timestamps

        # Skip silence so a quiet intro does not decide the language; fall back to the raw
        # audio when the VAD hears nothing at all.
        head = samples[: LANGUAGE_DETECTION_WINDOWS * 30 * SAMPLE_RATE]
        speech = get_speech_timestamps(head)
        if speech:
            head = np.concatenate([head[s["start"] : s["end"]] for s in speech])
        language, probability, all_probs = self._model.detect_language(
            audio=head, language_detection_segments=LANGUAGE_DETECTION_WINDOWS,
            language_detection_threshold=0.5,
        )
        top = tuple((code, float(p)) for code, p in all_probs[:10])
        return DecodeInfo(language, float(probability), top)

    def _transcribe_block(
        self, block: AudioBlock, options: DecodeOptions, state: _BlockState
    ) -> Iterator[Segment]:
        common = dict(
            language=state.language,
            task=options.task,
            beam_size=options.beam_size,
            temperature=list(options.temperatures),
            word_timestamps=options.word_timestamps,
            initial_prompt=state.prompt or None,
            no_speech_threshold=options.no_speech_threshold,
            hotwords=options.hotwords,
        )
        # With a chunking strategy the block is cut at speech pauses by Silero VAD (the
        # request's threshold, padding and silence) and the chunks decoded in order with
        # Whisper's context carried between them. faster-whisper's batched pipeline was
        # tried here and dropped whole utterances on short clips (its known quality issue).
        vad = options.chunking
        segments, _ = self._model.transcribe(
            block.samples, **common,
            vad_filter=vad is not None or options.vad_filter,
            vad_parameters=_vad_parameters(vad) if vad is not None else None,
            condition_on_previous_text=options.condition_on_previous_text,
            hallucination_silence_threshold=options.hallucination_silence_threshold,
        )
        gate = _SpeechGate(block.samples)
        offset = block.start / SAMPLE_RATE
        for raw in segments:
            silent = raw.no_speech_prob > options.no_speech_threshold
            if silent and not gate.heard(raw.start, raw.end):
                continue  # Whisper's "You" on silence: no speech by both measures
            segment = _snap_to_speech(_to_domain(state.next_id, raw, offset), gate, offset)
            if options.logprobs:
                segment = replace(segment, logprobs=self._token_logprobs(block, raw, state))
            state.next_id += 1
            yield segment
        # The next block starts fresh. Handing it this block's text as an initial prompt (as
        # Whisper conditions a window on the previous one) made the model drop its timestamp
        # tokens: whisper-tiny.en then gave one truncated segment per 30 s window and lost a
        # third of the words of the following four minutes. The request's own prompt belongs
        # to the start of the file, as with OpenAI.
        state.prompt = None

    def _token_logprobs(self, block: AudioBlock, raw: object, state: _BlockState) -> tuple:
        """The decoder's probability of each text token of a segment, by forced alignment
        of the segment's tokens on its 30 s window (CTranslate2's `align`)."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe",
                              language=state.language or "en")
        text_tokens = [t for t in raw.tokens if t < tokenizer.eot]
        if not text_tokens:
            return ()
        window_start = int(raw.seek) * (SAMPLE_RATE // FRAMES_PER_SECOND)
        window = block.samples[window_start : window_start + 30 * SAMPLE_RATE]
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


class _SpeechGate:
    """Silero VAD's view of a block, computed only when a segment or word needs it."""

    PADDING = 0.2  # seconds of slack around each speech region when judging a segment

    def __init__(self, samples: np.ndarray) -> None:
        self._samples = samples
        self._regions: list[tuple[float, float]] | None = None

    @property
    def regions(self) -> list[tuple[float, float]]:
        if self._regions is None:
            from faster_whisper.vad import VadOptions, get_speech_timestamps

            # Tight padding: the onsets are used to correct word start times.
            options = VadOptions(min_silence_duration_ms=300, speech_pad_ms=100)
            self._regions = [
                (r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE)
                for r in get_speech_timestamps(self._samples, options)
            ]
        return self._regions

    def heard(self, start: float, end: float) -> bool:
        pad = self.PADDING
        return any(s - pad < end and start < e + pad for s, e in self.regions)

    def snap_start(self, start: float, end: float) -> float:
        """Whisper's times drift into the silence before speech (DTW word times in long
        segments; segment starts pinned to a window's start): a word or segment that starts
        in silence really starts at the next speech onset, if that comes before its end."""
        for region_start, region_end in self.regions:
            if region_start <= start < region_end:
                return start
            if start < region_start:
                return region_start if region_start < end else start
        return start

    def snap_word_start(self, start: float, end: float) -> float:
        """A word belongs to the speech region it overlaps most, and starts no earlier than
        that region: DTW often stretches a clip's first word back over the pause before it
        to the previous word's end, which leaves its start just inside the previous region."""
        best, most = None, 0.0
        for region_start, region_end in self.regions:
            overlap = min(end, region_end) - max(start, region_start)
            if overlap > most:
                best, most = region_start, overlap
        return start if best is None else max(start, best)


def _snap_to_speech(segment: Segment, gate: _SpeechGate, offset: float) -> Segment:
    """Word and segment starts moved out of leading silence (VAD is block-relative)."""
    def snapped(snap, start: float, end: float) -> float:
        return snap(start - offset, end - offset) + offset

    words = tuple(replace(w, start=snapped(gate.snap_word_start, w.start, w.end))
                  for w in segment.words)
    start = snapped(gate.snap_start, segment.start, segment.end)
    if words:
        start = max(start, words[0].start)
    return replace(segment, words=words, start=start)


def _vad_parameters(vad: VadSettings) -> dict:
    return {
        "threshold": vad.threshold,
        "speech_pad_ms": vad.prefix_padding_ms,
        "min_silence_duration_ms": vad.silence_duration_ms,
    }


def _to_domain(index: int, seg: object, offset: float) -> Segment:
    words = tuple(
        Word(w.word, float(w.start) + offset, float(w.end) + offset, float(w.probability))
        for w in seg.words or ()
    )
    return Segment(
        id=index,
        seek=int(seg.seek) + round(offset * FRAMES_PER_SECOND),
        start=float(seg.start) + offset,
        end=float(seg.end) + offset,
        text=seg.text,
        tokens=tuple(int(t) for t in seg.tokens),
        temperature=float(seg.temperature or 0.0),
        avg_logprob=float(seg.avg_logprob),
        compression_ratio=float(seg.compression_ratio),
        no_speech_prob=float(seg.no_speech_prob),
        words=words,
    )


def load_whisper(
    spec: ModelSpec, settings: Settings, metrics: Metrics | None = None
) -> WhisperEngine:
    """Load a Whisper model from its source; never reaches a hub unless given a repo id."""
    import ctranslate2
    from faster_whisper import WhisperModel  # heavy imports, only when a model is loaded
    from faster_whisper.utils import download_model

    target, is_repo_id = resolve_whisper_source(spec.source, settings.cache_dir)
    if is_repo_id:  # a local directory from here on: the shared engine below loads it too
        target = download_model(
            target,
            local_files_only=settings.hf_offline,
            cache_dir=str(settings.hf_cache_dir) if settings.hf_cache_dir else None,
        )
    device = resolve_device(settings)
    compute_type = settings.resolved_compute_type(device)
    layout = engine_layout(settings, device)
    solo = layout.solo_threads > 0
    # faster-whisper's own model is the solo engine when there is one, else the only one.
    replicas = 1 if solo else layout.workers
    model = WhisperModel(
        target,
        device=device,
        compute_type=compute_type,
        cpu_threads=layout.solo_threads if solo else layout.threads,
        num_workers=replicas,
    )
    if layout.routed:
        shared = None
        if solo:
            shared = ctranslate2.models.Whisper(
                target, device=device, compute_type=compute_type,
                intra_threads=layout.threads, inter_threads=layout.workers,
            )
        model.model = BatchingWhisper(
            model.model,
            window=settings.batch_window_ms / 1000,
            max_batch=layout.max_batch,
            sot_token=model.hf_tokenizer.token_to_id("<|startoftranscript|>"),
            replicas=replicas,
            shared=shared,
            shared_replicas=layout.workers,
            on_batch=metrics.batch_size.labels(spec.id).observe if metrics else None,
        )
    return WhisperEngine(spec.id, model)
