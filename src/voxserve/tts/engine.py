"""The protocol every speech engine follows, and the loader that builds one from a ModelSpec.

Engines are imported only here, only when a model of theirs is first used: a server without
the `piper` or `kokoro` extra starts fine and simply does not offer that model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from voxserve.config import Settings
from voxserve.runtime.catalog import ModelSpec


@runtime_checkable
class SpeechEngine(Protocol):
    """Text in, float32 mono PCM out, one chunk at a time."""

    sample_rate: int
    # The engine's own voice names.
    voices: tuple[str, ...]
    # OpenAI voice name -> one of `voices`, before configuration overrides it.
    default_voice_map: Mapping[str, str]
    # Silence put between sentences at speed 1 (engines trim their own).
    sentence_pause: float

    def synthesize(self, text: str, voice: str) -> Iterator[np.ndarray]:
        """Speak one sentence at the voice's own tempo (`speed` is applied afterwards, by
        audio/stretch.py, so that every engine scales duration exactly as 1/speed)."""
        ...


def engine_installed(engine: str) -> bool:
    """Whether the engine's Python package is importable (checked without importing it)."""
    module = {"piper": "piper", "kokoro": "kokoro_onnx"}[engine]
    return importlib.util.find_spec(module) is not None


def load_speech_engine(spec: ModelSpec, settings: Settings) -> SpeechEngine:
    """The pool's loader for `tts` models (runs once per model, in a worker thread)."""
    engine = spec.options["engine"]
    if engine == "piper":
        from voxserve.tts.piper_engine import load_piper

        return load_piper(spec, settings)
    if engine == "kokoro":
        from voxserve.tts.kokoro_engine import load_kokoro

        return load_kokoro(spec, settings)
    raise ValueError(f"unknown speech engine {engine!r}")
