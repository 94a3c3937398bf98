"""Which speech-to-text engines exist, and how each is loaded and sized. A model's catalog
entry names its engine (`ModelSpec.engine`); a new engine goes here and in a folder of its own
beside stt/whisper/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from voxserve.config import Settings
from voxserve.errors import Internal
from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.metrics import Metrics
from voxserve.stt.engine import SpeechToTextEngine


@dataclass(frozen=True)
class EngineKind:
    name: str
    load: Callable[[ModelSpec, Settings, Metrics | None], SpeechToTextEngine]
    # Requests that should decode at once on one model of this engine (scheduler slots).
    lane_slots: Callable[[Settings], int]


def _whisper() -> EngineKind:
    from voxserve.stt.whisper import loader

    return EngineKind("whisper", loader.load_whisper, loader.lane_slots)


ENGINES: dict[str, Callable[[], EngineKind]] = {"whisper": _whisper}


def engine_kind(name: str) -> EngineKind:
    factory = ENGINES.get(name)
    if factory is None:
        raise Internal(f"Unknown speech-to-text engine '{name}'.")
    return factory()


def load_stt_engine(
    spec: ModelSpec, settings: Settings, metrics: Metrics | None = None
) -> SpeechToTextEngine:
    """The pool's loader for `stt` models: the engine the spec names."""
    return engine_kind(spec.engine).load(spec, settings, metrics)


def lane_slots(settings: Settings, engines: list[str]) -> dict[str, int]:
    return {name: engine_kind(name).lane_slots(settings) for name in engines}
