"""How a model's work is spread over the machine: scheduler slots, engine replicas, threads
and cross-request batching, derived from the settings (0 means "size it for me").

Two shapes:
- Batching (`max_batch_size` > 1, the default): concurrent requests meet in `stt.batching`
  and share engine calls. Two CTranslate2 replicas, each with every core: a lone request runs
  at full speed on one, and under load one batch computes while the next is gathered. Slots:
  a full batch per replica.
- No batching (`max_batch_size` = 1): one replica per slot, the cores shared out between
  them, so the slots decode side by side.

Measured on 2 cores with whisper-base int8 (16 short clips): one replica with 2 threads took
15.4 s alone; two replicas with 2 threads each 16.1 s for one client and 11.5-12.3 s for two;
two replicas with 1 thread each 23 s for one client. CTranslate2's intra-op threads scale
poorly on small inputs, so a second replica is worth more than a second thread under load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from voxserve.config import Settings

# Without batching, replicas beyond this cost memory for little gain.
MAX_AUTO_REPLICAS = 4
BATCHING_REPLICAS = 2


@dataclass(frozen=True)
class EngineLayout:
    slots: int  # requests decoding at once per model (runtime.scheduler)
    workers: int  # CTranslate2 replicas (faster-whisper's num_workers)
    threads: int  # intra-op threads per replica (faster-whisper's cpu_threads)
    max_batch: int  # engine calls merged into one; 1: no batching


def resolve_device(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def engine_layout(settings: Settings, device: str, cores: int | None = None) -> EngineLayout:
    cores = cores or os.cpu_count() or 1
    batch = settings.max_batch_size
    if batch > 1:
        return EngineLayout(
            slots=settings.slots or batch * BATCHING_REPLICAS,
            workers=BATCHING_REPLICAS,
            threads=settings.cpu_threads or cores,
            max_batch=batch,
        )
    if device == "cuda":
        # Two slots: one request's CPU work (decoding the upload, features) overlaps another's
        # GPU work.
        return EngineLayout(settings.slots or 2, 1, settings.cpu_threads or cores, 1)
    if settings.slots:
        slots = settings.slots
    elif settings.cpu_threads:
        slots = max(1, cores // settings.cpu_threads)
    else:
        slots = max(1, min(MAX_AUTO_REPLICAS, cores))
    threads = settings.cpu_threads or max(1, cores // slots)
    return EngineLayout(slots=slots, workers=slots, threads=threads, max_batch=1)
