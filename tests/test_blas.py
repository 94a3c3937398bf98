"""A serving process gives numpy's and scipy's OpenBLAS one thread (runtime/blas.py): its
spinning threads took CPU from the engines. Run in fresh interpreters: the limit is
process-wide, and OpenBLAS reads its variable only when it loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from voxserve.runtime.blas import USER_SETTINGS

PROBE = """
import json
import numpy
from threadpoolctl import threadpool_info
from voxserve.config import Settings
from voxserve.services import build_services
before = [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]
build_services(Settings(stt_default_model="whisper-tiny.en", hf_offline=True)).close()
import scipy.linalg  # its own OpenBLAS, loaded after the limit: it follows it too
after = [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]
print(json.dumps({"before": before, "after": after}))
"""


# On one core OpenBLAS starts a single thread anyway: the limit would change nothing to see.
needs_two_cores = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2,
    reason="one CPU core: OpenBLAS already runs on one thread, so there is no limit to observe",
)


def _threads(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env},
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_two_cores
def test_building_the_services_puts_blas_on_one_thread() -> None:
    threads = _threads()
    assert threads["before"] and all(n >= 2 for n in threads["before"])  # a thread per core
    assert len(threads["after"]) == 2 and all(n == 1 for n in threads["after"])


@needs_two_cores
def test_a_user_setting_is_kept() -> None:
    threads = _threads(OPENBLAS_NUM_THREADS="2")
    assert threads["after"] and all(n == 2 for n in threads["after"])
