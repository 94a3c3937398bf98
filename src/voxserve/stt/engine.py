"""The Whisper engine: faster-whisper/CTranslate2 behind a small interface that speaks in
domain records. Nothing from faster-whisper is visible above this module."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from voxserve.config import Settings
from voxserve.domain import Segment, Task, Word
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.scheduler import slots_for
from voxserve.runtime.store import resolve_whisper_source

log = logging.getLogger("voxserve.stt")

# Whisper's temperature fallback: start greedy, retry hotter when a window looks wrong.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


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
    beam_size: int = 5
    vad: VadSettings | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeInfo:
    language: str
    language_probability: float
    duration: float


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
        self, audio: np.ndarray, options: DecodeOptions
    ) -> tuple[Iterator[Segment], DecodeInfo]:
        """Segments as a lazy iterator (decoding happens while it is consumed) and file info."""
        vad_parameters = None
        if options.vad is not None:
            vad_parameters = {
                "threshold": options.vad.threshold,
                "speech_pad_ms": options.vad.prefix_padding_ms,
                "min_silence_duration_ms": options.vad.silence_duration_ms,
            }
        segments, info = self._model.transcribe(
            audio,
            task=options.task,
            language=options.language if self.multilingual else "en",
            initial_prompt=options.prompt or None,
            temperature=list(options.temperatures),
            word_timestamps=options.word_timestamps,
            beam_size=options.beam_size,
            vad_filter=options.vad is not None,
            vad_parameters=vad_parameters,
            **options.extra,
        )
        decode_info = DecodeInfo(info.language, float(info.language_probability), info.duration)
        return (_to_domain(i, s) for i, s in enumerate(segments)), decode_info


def _to_domain(index: int, seg: object) -> Segment:
    words = tuple(
        Word(w.word, float(w.start), float(w.end), float(w.probability)) for w in seg.words or ()
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


def load_whisper(spec: ModelSpec, settings: Settings) -> WhisperEngine:
    """Load a Whisper model from its source; never reaches a hub unless given a repo id."""
    from faster_whisper import WhisperModel  # heavy import, only when a model is loaded

    target, is_repo_id = resolve_whisper_source(spec.source, settings.cache_dir)
    device = settings.device
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    # One CTranslate2 worker per scheduler slot, so the slots run in parallel; with
    # cpu_threads=0 the cores are shared out between the workers instead of each taking all.
    workers = slots_for(settings)
    threads = settings.cpu_threads or max(1, (os.cpu_count() or 1) // workers)
    model = WhisperModel(
        target,
        device=device,
        compute_type=settings.resolved_compute_type(device),
        cpu_threads=threads,
        num_workers=workers,
        download_root=str(settings.hf_cache_dir) if is_repo_id and settings.hf_cache_dir else None,
        local_files_only=settings.hf_offline if is_repo_id else False,
    )
    return WhisperEngine(spec.id, model)
