"""Where speech is: Silero VAD (the ONNX model that ships with faster-whisper, run on
onnxruntime) over 16 kHz mono samples.

- `speech_regions`: the regions of a stretch of audio, as faster-whisper finds them (its
  thresholds and padding). Used by the speech-to-text pipeline to skip silence before language
  detection, by the speech gate, and to cut speech chunks.
- `StreamingVad`: the probability of each 32 ms frame as samples arrive (live turns,
  realtime/turns.py), the model's recurrent state carried between pushes.

faster-whisper scores 10,000 frames (5.3 minutes of audio) in one onnxruntime call, whose
activations were the largest transient of a long file's decode (a 10-minute block: +165 MB for
VAD alone, 204 MB at peak with the block). `speech_regions` hands faster-whisper a scorer that
pushes the audio through a `StreamingVad` FRAMES_PER_CALL frames at a time: the state
carried from call to call as faster-whisper carries it, so the probabilities are the same.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

FRAME = 512  # Silero's frame at 16 kHz: 32 ms
CONTEXT = 64  # samples of the previous frame the model sees before each frame
# Frames scored per onnxruntime call for a whole stretch (32 s of audio): no slower than
# faster-whisper's 10,000.
FRAMES_PER_CALL = 1000

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

    _install_bounded_scorer()
    options = VadOptions(
        threshold=threshold, min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms
    )
    return [(r["start"], r["end"]) for r in get_speech_timestamps(samples, options)]


def load_vad() -> None:
    """Load Silero's model now (it is cached for the process): chunked decoding runs VAD before
    the engine's first call, and a request should not pay for the load."""
    _install_bounded_scorer()


class StreamingVad:
    """Speech probability of each 32 ms frame, as samples arrive: each sample is looked at
    once however the audio is split."""

    def __init__(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = data.size // FRAME * FRAME
        self._pending = data[whole:].copy()
        if whole == 0:
            return np.zeros(0, dtype=np.float32)
        frames = data[:whole].reshape(-1, FRAME)
        contexts = np.concatenate([self._context[None], frames[:-1, -CONTEXT:]])
        batch = np.concatenate([contexts, frames], axis=1).astype(np.float32, copy=False)
        probs, self._h, self._c = _silero_session().run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = frames[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)


class BoundedScorer:
    """What faster-whisper's `get_speech_timestamps` calls as its model: the probability of
    each frame of `audio` (a whole number of frames), scored in bounded calls."""

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        vad = StreamingVad()
        step = FRAMES_PER_CALL * FRAME
        return np.concatenate([vad.push(audio[i : i + step]) for i in range(0, audio.size, step)])


@cache
def _silero_session() -> Any:
    """One onnxruntime session for the process, loaded by faster-whisper (its `run` is
    thread-safe and stateless: the recurrent state is the caller's)."""
    import faster_whisper.vad as fw_vad

    return fw_vad.get_vad_model().session


@cache
def _install_bounded_scorer() -> None:
    """Make the scorer the model faster-whisper's `get_speech_timestamps` uses (it looks
    `get_vad_model` up at every call)."""
    import faster_whisper.vad as fw_vad

    _silero_session()  # loaded through faster-whisper's own loader before it is replaced
    scorer = BoundedScorer()
    fw_vad.get_vad_model = lambda: scorer
