"""Loading Whisper: a model source to CTranslate2 engines laid out over the machine
(layout.py), wrapped for batching and routing (batching.py) and for the protocol (engine.py)."""

from __future__ import annotations

from pathlib import Path

from voxserve.audio.vad import load_vad
from voxserve.config import Settings
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.metrics import Metrics
from voxserve.runtime.store import (
    PACKAGED_DIRECTORIES,
    PACKAGED_SPLIT_MODELS,
    ModelSourceError,
    assemble_split_weights,
    package_dir,
)
from voxserve.stt.whisper.batching import BatchingWhisper
from voxserve.stt.whisper.encoder_memo import EncoderMemo
from voxserve.stt.whisper.engine import WhisperEngine
from voxserve.stt.whisper.layout import engine_layout, resolve_device
from voxserve.stt.whisper.short_window import ShortWindows


def lane_slots(settings: Settings) -> int:
    """How many requests decode at once on one Whisper model (the scheduler's slots)."""
    return engine_layout(settings, resolve_device(settings)).slots


def resolve_whisper_source(source: str, cache_dir: Path) -> tuple[str, bool]:
    """(what to hand to faster-whisper, whether it is a Hugging Face repo id)."""
    kind, _, value = source.partition(":")
    if kind == "package":
        if value in PACKAGED_SPLIT_MODELS:
            return str(assemble_split_weights(PACKAGED_SPLIT_MODELS[value], cache_dir)), False
        if value in PACKAGED_DIRECTORIES:
            package, rel = PACKAGED_DIRECTORIES[value]
            return str(package_dir(package) / rel), False
        raise ModelSourceError(f"Unknown model package '{value}'.")
    if kind == "dir":
        path = Path(value).expanduser()
        if not (path / "model.bin").is_file():
            raise ModelSourceError(f"No CTranslate2 model (model.bin) in directory '{path}'.")
        return str(path), False
    if kind == "hf":
        return value, True
    raise ModelSourceError(f"Unknown model source '{source}'.")


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
    # A window encoded to detect its language is not encoded again to decode it; a live
    # pass may encode its audio alone instead of a 30 s window (short_window.py).
    model.short_windows = ShortWindows(model.encode)
    model.encode = EncoderMemo(model.short_windows)
    load_vad()  # speech chunks are cut by VAD before every decode
    # Speech chunks of one file side by side: one per shared replica on a CPU (a lone chunk
    # still gets the solo engine's every core), and on CUDA enough to fill the merged calls.
    return WhisperEngine(spec.id, model, parallel_chunks=layout.workers * layout.max_batch)
