"""numpy's and scipy's BLAS (OpenBLAS) on one thread in a serving process.

The engines own the cores: CTranslate2's solo engine and shared replicas are laid out over
`cpu_threads` (stt/whisper/layout.py), onnxruntime sessions get their own thread counts.
OpenBLAS, which numpy uses for the mel filter bank of every Whisper window, starts one thread
per core and keeps them spinning after each call; on a 2-core machine those threads took CPU
from the engines: one client's 32 short clips cost the server 51.7-52.6 s of CPU with
OpenBLAS on two threads and 48.0-49.5 s on one (the server's own BLAS calls are small enough
for one thread).

A user who sets OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) keeps their setting.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

USER_SETTINGS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def limit_blas_threads() -> None:
    """Every BLAS library loaded in this process on one thread, and any loaded later too
    (OpenBLAS reads the variable when it loads), unless the user chose a thread count."""
    if any(name in os.environ for name in USER_SETTINGS):
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    log.debug("BLAS limited to one thread")
