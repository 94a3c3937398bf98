"""The two ONNX speaker models and the features they read.

- pyannote segmentation-3.0: 10 s of raw 16 kHz audio -> 589 frames of powerset log-probs
  over at most 3 local speakers (up to 2 at once).
- CAM++ (3D-Speaker zh+en): 80-bin kaldi fbank, mean-normalised -> one 192-d embedding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 10.0
# segmentation-3.0's frame geometry (from its SincNet front end).
FRAME_STEP = 0.016875
FRAME_DURATION = 0.0619375
LOCAL_SPEAKERS = 3
FBANK_SHIFT = 160  # samples per fbank frame (10 ms)
FBANK_LENGTH = 400  # samples per fbank window (25 ms)

SEGMENTATION_FILE = "segmentation-3.0.onnx"
EMBEDDING_FILE = "campplus_cn_en_common.onnx"
MANIFEST = "SHA256SUMS"


class ModelFilesError(RuntimeError):
    """The converted model directory is missing or does not match its manifest."""


def verify_manifest(directory: Path) -> None:
    """Check every file listed in SHA256SUMS, so a damaged cache never loads silently."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise ModelFilesError(f"no converted diarization models in {directory}")
    for line in manifest.read_text().splitlines():
        expected, _, name = line.partition("  ")
        path = directory / name
        if not path.is_file():
            raise ModelFilesError(f"{path} is missing")
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise ModelFilesError(f"{path} has sha256 {digest.hexdigest()}, expected {expected}")


def _powerset_mapping(classes: int = LOCAL_SPEAKERS, max_set: int = 2) -> np.ndarray:
    """Row k: which local speakers powerset class k means ({}, {0}, {1}, {2}, {0,1}, ...)."""
    rows = []
    for size in range(max_set + 1):
        for members in combinations(range(classes), size):
            row = np.zeros(classes, dtype=np.float32)
            row[list(members)] = 1.0
            rows.append(row)
    return np.stack(rows)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread each: the diarizer runs beside Whisper, and its cost is counted in CPU time.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # The arena keeps the largest batch's buffers for good; without it peak RSS stays flat.
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class SpeakerModels:
    segmentation: object
    embedding: object
    mapping: np.ndarray

    @classmethod
    def load(cls, directory: Path, threads: int = 1) -> SpeakerModels:
        verify_manifest(directory)
        return cls(
            segmentation=_session(directory / SEGMENTATION_FILE, threads),
            embedding=_session(directory / EMBEDDING_FILE, threads),
            mapping=_powerset_mapping(),
        )

    def local_speakers(
        self, windows: np.ndarray, silence_threshold: float
    ) -> np.ndarray:
        """(n, 160000) audio windows -> (n, frames, 3) hard activity of each local speaker.

        The powerset argmax picks who speaks; a frame counts as silent as soon as P(silence)
        reaches `silence_threshold`, below the argmax's 0.5: segmentation-3.0 keeps short
        pauses between two speakers at P(silence) ~ 0.45, and those pauses are where turns
        are cut."""
        out = []
        for start in range(0, len(windows), 8):  # small batches bound the memory peak
            batch = windows[start:start + 8, None, :].astype(np.float32, copy=False)
            log_probs = self.segmentation.run(None, {"waveform": batch})[0]
            speech = np.argmax(log_probs[..., 1:], axis=-1) + 1
            speech[np.exp(log_probs[..., 0]) >= silence_threshold] = 0
            out.append(self.mapping[speech])
        return np.concatenate(out)

    def embed(self, features: np.ndarray) -> np.ndarray:
        """(frames, 80) fbank -> L2-normalised 192-d embedding."""
        normalised = features - features.mean(axis=0, keepdims=True)
        vector = self.embedding.run(None, {"fbank": normalised[None].astype(np.float32)})[0][0]
        return vector / max(float(np.linalg.norm(vector)), 1e-9)


def fbank(audio: np.ndarray) -> np.ndarray:
    """80-bin log-mel fbank as 3D-Speaker trains CAM++ (kaldi defaults, no dither), computed once
    per file; frame i covers samples [160 i, 160 i + 400)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    computer = knf.OnlineFbank(opts)
    computer.accept_waveform(SAMPLE_RATE, audio.astype(np.float32, copy=False))
    computer.input_finished()
    count = computer.num_frames_ready
    if count == 0:
        return np.zeros((0, 80), dtype=np.float32)
    return np.stack([computer.get_frame(i) for i in range(count)]).astype(np.float32)
