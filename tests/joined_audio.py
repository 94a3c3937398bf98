"""Long test inputs made by joining the real English clips with silences, remembering where
each clip was placed."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
from conftest import audio_path, reference_texts

from voxserve.audio.decode import SAMPLE_RATE, decode_audio


@dataclass(frozen=True)
class JoinedAudio:
    wav: bytes
    placements: list[tuple[str, float]]  # (clip name, start second)
    duration: float


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def join_clips(names: list[str], gap_seconds: float = 1.5, lead_seconds: float = 1.0) -> JoinedAudio:
    gap = np.zeros(int(gap_seconds * SAMPLE_RATE), dtype=np.float32)
    pieces = [np.zeros(int(lead_seconds * SAMPLE_RATE), dtype=np.float32)]
    placements, cursor = [], pieces[0].size
    for name in names:
        clip = decode_audio(audio_path(name).read_bytes())
        placements.append((name, cursor / SAMPLE_RATE))
        pieces += [clip, gap]
        cursor += clip.size + gap.size
    samples = np.concatenate(pieces)
    return JoinedAudio(wav_bytes(samples), placements, samples.size / SAMPLE_RATE)


def english_clips() -> list[str]:
    return [n for n in reference_texts() if not n.startswith(("phone_call", "two_cities"))]
