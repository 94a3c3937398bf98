"""Where speech is: Silero VAD (the ONNX model that ships with faster-whisper, run on
onnxruntime) over 16 kHz mono samples. Used by the speech-to-text pipeline to skip silence
before language detection, by the speech gate, and to cut speech chunks."""

from __future__ import annotations

import numpy as np

SpeechRegion = tuple[int, int]  # [start, end) in samples


def speech_regions(
    samples: np.ndarray,
    *,
    threshold: float = 0.5,
    min_silence_ms: int = 2000,
    pad_ms: int = 400,
) -> list[SpeechRegion]:
    """The speech regions of `samples`, in order (Silero's defaults as faster-whisper sets
    them, unless given)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=threshold, min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms
    )
    return [(r["start"], r["end"]) for r in get_speech_timestamps(samples, options)]


def load_vad() -> None:
    """Load Silero's model now (it is cached for the process): chunked decoding runs VAD before
    the engine's first call, and a request should not pay for the load."""
    from faster_whisper.vad import get_vad_model

    get_vad_model()
