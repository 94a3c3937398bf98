"""How a model's work is spread over the machine: scheduler slots, engine replicas, threads
and cross-request batching, derived from the settings (0 means "size it for me").

- CPU (T = `cpu_threads` or every core, T >= 2): two CTranslate2 models of the same weights.
  A solo engine (one replica, T threads) runs an encode when nothing else is decoding, so a
  lone request's encoder gets the whole machine; shared replicas (min(4, T) of them, T /
  replicas threads each) run calls side by side under load, and every generate (beam search
  is faster on one thread). `stt.batching` routes every call; it merges
  concurrent calls only up to `max_batch_size`, which on a CPU is 1 unless set (see below).
- CUDA: two replicas, and merging up to `max_batch_size` (8 unless set), where batching is
  what keeps a GPU busy. Without merging (`max_batch_size` 1), one replica and two slots.
- One thread: one replica per slot, as many slots as `slots` says (2 unless set).

Slots: each replica gets max(batch, 4): a full batch, and enough requests that the ones
decoding audio or extracting features keep it fed.

Measured on 2 cores with whisper-base int8 (one short clip's encode + beam-5 generate): one
replica with 2 threads does 0.88-1.00 clips/s alone; two streams on two replicas of 2 threads
each (4 OpenMP threads on 2 cores) 1.16-1.30 clips/s, on two replicas of 1 thread each
1.36-1.41. One thread alone: encode 1.14 s, generate 0.33 s; two threads: encode 0.70 s,
generate 0.43 s. Merging barely helps there: the encoder, most of the work, costs the same per
row in a batch (1.14 s alone, 1.08 s per row in twos, 1.27 s in fours), and through the server
16 clients got 4.92-5.33 audio s/s without merging against 4.74-4.81 with batches of 4, whose
beam-5 decoder state raised the peak RSS from 630 MB to 1.1 GB (docs/benchmarks.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from voxserve.config import Settings

# Shared CPU replicas beyond this cost memory for little gain.
MAX_SHARED_REPLICAS = 4
GPU_REPLICAS = 2
# Merged engine calls when `max_batch_size` is 0 (see the docstring for the CPU's 1).
AUTO_BATCH = {"cpu": 1, "cuda": 8}
MIN_SLOTS_PER_REPLICA = 4


@dataclass(frozen=True)
class EngineLayout:
    slots: int  # requests decoding at once per model (runtime.scheduler)
    workers: int  # CTranslate2 replicas (faster-whisper's num_workers)
    threads: int  # intra-op threads per replica (faster-whisper's cpu_threads)
    max_batch: int  # engine calls merged into one; 1: none
    solo_threads: int = 0  # threads of the solo engine (CPU); 0: no solo engine

    @property
    def routed(self) -> bool:
        """Whether engine calls go through `stt.batching` (to merge them, or to choose
        between the solo and the shared engine)."""
        return self.max_batch > 1 or self.solo_threads > 0


def resolve_device(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def engine_layout(settings: Settings, device: str, cores: int | None = None) -> EngineLayout:
    threads = settings.cpu_threads or cores or os.cpu_count() or 1
    batch = settings.max_batch_size or AUTO_BATCH.get(device, 1)

    def slots(replicas: int) -> int:
        return settings.slots or replicas * max(batch, MIN_SLOTS_PER_REPLICA)

    if device == "cuda":
        if batch == 1:
            # Two slots: one request's CPU work (decoding the upload, features) overlaps
            # another's GPU work.
            return EngineLayout(settings.slots or 2, 1, threads, 1)
        return EngineLayout(slots(GPU_REPLICAS), GPU_REPLICAS, threads, batch)
    if threads == 1:
        replicas = settings.slots or 2
        return EngineLayout(replicas, replicas, 1, 1)
    replicas = min(MAX_SHARED_REPLICAS, threads)
    return EngineLayout(slots(replicas), replicas, threads // replicas, batch,
                        solo_threads=threads)
