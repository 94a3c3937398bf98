"""Tempo change at the same pitch (WSOLA: waveform-similarity overlap-add).

Speech `speed` is applied here rather than by the engines: Piper's length scale and Kokoro's
speed input do not scale a sentence's duration as 1/speed (measured on one sentence: Piper
at 2.0 gave 0.65x the 1.0 duration and at 0.25 3.3x; Kokoro at 4.0 0.46x), while OpenAI's
does. Stretching the 1.0 rendering gives exactly len/speed samples.

WSOLA cuts the input into overlapping frames taken every `hop * speed` samples, lays them down
every `hop` samples with a Hann window, and moves each frame by up to half a hop to where it
continues the previous one best (by cross-correlation), so pitch periods line up and no
phasing is heard.
"""

from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.03  # about three pitch periods of a low voice


def time_stretch(audio: np.ndarray, speed: float, sample_rate: int) -> np.ndarray:
    """`audio` played `speed` times as fast at the same pitch: round(len / speed) samples."""
    audio = np.asarray(audio, dtype=np.float32)
    target = int(round(audio.size / speed))
    if speed == 1.0 or audio.size == 0:
        return audio
    frame = max(64, int(FRAME_SECONDS * sample_rate)) // 2 * 2
    hop = frame // 2
    if audio.size < 2 * frame:
        return _resample_length(audio, target)  # too short to have pitch periods to align
    tolerance = hop // 2
    window = np.hanning(frame + 1)[:frame].astype(np.float32)  # periodic: sums to 1 at hop
    # Padding lets frames reach past both ends while searching.
    padded = np.concatenate([
        np.zeros(frame + tolerance, np.float32), audio, np.zeros(2 * frame + tolerance,
                                                                 np.float32),
    ])
    offset = frame + tolerance
    frames = target // hop + 2
    out = np.zeros((frames + 1) * hop + frame, np.float32)
    previous = 0  # where the last frame was taken from
    for k in range(frames):
        # Output frame k is centred on output sample k * hop (after the first hop is cut),
        # so it is taken around input sample k * hop * speed.
        nominal = offset + int(round(k * hop * speed)) - hop
        if k == 0:
            start = nominal
        else:
            # The previous frame's natural continuation, and the region to search for it.
            natural = padded[previous + hop:previous + hop + frame]
            low = max(0, nominal - tolerance)
            region = padded[low:nominal + tolerance + frame]
            if region.size < frame + 1 or not np.any(natural):
                start = nominal
            else:
                scores = np.correlate(region, natural, mode="valid")
                start = low + int(np.argmax(scores))
        segment = padded[start:start + frame]
        if segment.size < frame:
            segment = np.pad(segment, (0, frame - segment.size))
        out[k * hop:k * hop + frame] += segment * window
        previous = start
    # Before output sample `hop` only one window covers the output: cut it.
    return out[hop:hop + target] if out.size >= hop + target else _fit(out[hop:], target)


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.size >= length:
        return audio[:length]
    return np.pad(audio, (0, length - audio.size))


def _resample_length(audio: np.ndarray, length: int) -> np.ndarray:
    if length <= 0:
        return np.zeros(0, np.float32)
    positions = np.linspace(0, audio.size - 1, length)
    return np.interp(positions, np.arange(audio.size), audio).astype(np.float32)
