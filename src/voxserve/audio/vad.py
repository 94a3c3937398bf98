"""Where speech is: Silero VAD (the ONNX model that ships with faster-whisper, run on
onnxruntime) over 16 kHz mono samples. Used by the speech-to-text pipeline to skip silence
before language detection, by the speech gate, and to cut speech chunks.

faster-whisper's thresholds and padding decide where speech is; only how its model is run
differs: it scores 10,000 of Silero's 32 ms windows (5.3 minutes of audio) in one onnxruntime
call, whose activations were the largest transient of a long file's decode (a 10-minute block:
+165 MB for VAD alone, 204 MB at peak with the block). `BoundedSilero` scores the same windows
VAD_WINDOWS_PER_CALL at a time, carrying the model's state across calls as faster-whisper
carries it across its own, so the probabilities are the same."""

from __future__ import annotations

from functools import cache

import numpy as np

# Silero windows scored per onnxruntime call (32 s of audio): no slower than 10,000.
VAD_WINDOWS_PER_CALL = 1000
WINDOW_SAMPLES = 512  # Silero's window at 16 kHz
CONTEXT_SAMPLES = 64  # the end of the previous window, prepended to each

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

    _bounded_model()
    options = VadOptions(
        threshold=threshold, min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms
    )
    return [(r["start"], r["end"]) for r in get_speech_timestamps(samples, options)]


def load_vad() -> None:
    """Load Silero's model now (it is cached for the process): chunked decoding runs VAD before
    the engine's first call, and a request should not pay for the load."""
    _bounded_model()


@cache
def _bounded_model() -> BoundedSilero:
    """faster-whisper's Silero model, scored in bounded calls; installed as the model its
    `get_speech_timestamps` uses (it looks `get_vad_model` up at every call)."""
    import faster_whisper.vad as fw_vad

    model = fw_vad.get_vad_model()
    bounded = BoundedSilero(model.session)
    fw_vad.get_vad_model = lambda: bounded
    return bounded


class BoundedSilero:
    """Silero's speech probability for each 512-sample window of `audio` (a multiple of 512
    samples long), the model's LSTM state carried from window to window across calls."""

    def __init__(self, session: object) -> None:
        self.session = session

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        windows = audio.reshape(-1, WINDOW_SAMPLES)
        state = {"h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
        previous_tail = np.zeros((1, CONTEXT_SAMPLES), np.float32)  # before the first window
        outputs = []
        for first in range(0, len(windows), VAD_WINDOWS_PER_CALL):
            part = windows[first : first + VAD_WINDOWS_PER_CALL]
            tails = np.concatenate([previous_tail, part[:-1, -CONTEXT_SAMPLES:]])
            previous_tail = part[-1:, -CONTEXT_SAMPLES:]
            batch = np.concatenate([tails, part], axis=1)
            output, state["h"], state["c"] = self.session.run(
                None, {"input": batch, "h": state["h"], "c": state["c"]}
            )
            outputs.append(output)
        return np.concatenate(outputs)
