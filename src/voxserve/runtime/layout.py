"""How a model's work is spread over the machine: scheduler slots, engine replicas, threads
and cross-request batching, derived from the settings (0 means "size it for me").

Two shapes:
- Batching (`max_batch_size` > 1, the default): concurrent requests meet in `stt.batching`
  and share engine calls. On a CPU with two cores or more, two engines share the weights'
  file: a solo engine (one replica with every core) runs a batch when nothing else is
  decoding, so a lone request gets the whole machine; two shared replicas with half the cores
  each run batches side by side under load, and while both are busy the next batch gathers.
  Slots: a full batch per shared replica. On a GPU (or one core) there is no solo engine; the
  two replicas use every core.
- No batching (`max_batch_size` = 1): one replica per slot, the cores shared out between
  them, so the slots decode side by side.

Measured on 2 cores with whisper-base int8, one short clip's encode + beam-5 generate:
one replica with 2 threads 0.88-1.00 clips/s alone; two concurrent streams on two replicas of
2 threads each (4 OpenMP threads on 2 cores) 1.16-1.30 clips/s, on two replicas of 1 thread
each 1.36-1.41 clips/s. One thread alone: encode 1.14 s, generate 0.33 s; two threads: encode
0.70 s, generate 0.43 s. CTranslate2's intra-op threads scale poorly on small inputs and
oversubscribed cores cost more, so under load each replica gets its own cores.
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
    solo_threads: int = 0  # threads of the solo engine for lone batches; 0: none (see above)


def resolve_device(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def engine_layout(settings: Settings, device: str, cores: int | None = None) -> EngineLayout:
    cores = cores or os.cpu_count() or 1
    batch = settings.max_batch_size
    if batch > 1:
        slots = settings.slots or batch * BATCHING_REPLICAS
        threads = settings.cpu_threads or cores
        if device == "cuda" or threads < BATCHING_REPLICAS:
            return EngineLayout(slots, BATCHING_REPLICAS, threads, batch)
        return EngineLayout(slots, BATCHING_REPLICAS, threads // BATCHING_REPLICAS, batch,
                            solo_threads=threads)
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
