"""A small diarization error rate scorer for the tests (no pyannote.metrics).

Scored on a 10 ms grid, overlapping speech scored, with a forgiveness collar around every
reference boundary as in NIST md-eval: DER = (missed + false alarm + confusion) / reference
speech, after the best one-to-one mapping of system speakers onto reference speakers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

STEP = 0.01

Segment = tuple[float, float, str]  # start, end, speaker


def read_rttm(path: Path) -> list[Segment]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "SPEAKER":
            start, duration = float(parts[3]), float(parts[4])
            out.append((start, start + duration, parts[7]))
    return out


def _grid(segments: list[Segment], speakers: list[str], frames: int) -> np.ndarray:
    grid = np.zeros((frames, len(speakers)), dtype=bool)
    for start, end, speaker in segments:
        grid[int(round(start / STEP)):int(round(end / STEP)), speakers.index(speaker)] = True
    return grid


def der(reference: list[Segment], hypothesis: list[Segment], collar: float = 0.25) -> dict:
    end = max([e for _, e, _ in reference + hypothesis] + [0.0])
    frames = int(np.ceil(end / STEP)) + 1
    ref_speakers = sorted({s for _, _, s in reference})
    hyp_speakers = sorted({s for _, _, s in hypothesis})
    ref = _grid(reference, ref_speakers, frames)
    hyp = _grid(hypothesis, hyp_speakers, frames)
    scored = np.ones(frames, dtype=bool)
    for start, stop, _ in reference:
        for edge in (start, stop):
            scored[max(0, int(round((edge - collar) / STEP))):int(round((edge + collar) / STEP))] = False
    ref, hyp = ref[scored], hyp[scored]
    # Best mapping: maximise co-occurring speech between system and reference speakers.
    overlap = ref.T.astype(int) @ hyp.astype(int)
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    correct = np.zeros(len(ref), dtype=int)
    for r, c in zip(rows, cols, strict=False):
        correct += ref[:, r] & hyp[:, c]
    n_ref, n_hyp = ref.sum(axis=1), hyp.sum(axis=1)
    total = float(n_ref.sum()) * STEP
    missed = float(np.maximum(0, n_ref - n_hyp).sum()) * STEP
    false_alarm = float(np.maximum(0, n_hyp - n_ref).sum()) * STEP
    confusion = float((np.minimum(n_ref, n_hyp) - correct).sum()) * STEP
    return {
        "der": (missed + false_alarm + confusion) / total if total else 0.0,
        "missed": missed, "false_alarm": false_alarm, "confusion": confusion, "total": total,
    }
