"""Which served model a realtime session's `transcription.model` names.

OpenAI's names map onto the served Whisper models as the REST aliases do (`whisper-1`,
`gpt-4o-transcribe`, `gpt-4o-mini-transcribe` and its snapshot go through the catalog);
the realtime-only names (`gpt-transcribe`, `gpt-live-transcribe`, `gpt-realtime-whisper`)
follow `VOXSERVE_ALIASES` when it names them, else the default speech-to-text model. Native
ids work too.

A diarization model (`gpt-4o-transcribe-diarize`, `<whisper>+diarize`) keeps its name and
rules but is decoded by its Whisper model (the same lane as that model's other work); the
session adds the speakers (`voxserve.realtime.speakers`).
"""

from __future__ import annotations

from dataclasses import replace

from voxserve.config import Settings
from voxserve.runtime.catalog import Catalog, PublicModel

# Realtime-only names; their rules are gpt-4o-transcribe's (token usage, logprobs).
REALTIME_ONLY_NAMES = ("gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper")
# Turns end only when the client commits: OpenAI refuses any turn detection for these
# (session_config.py), so their sessions send no speech_started/stopped. gpt-realtime-whisper
# also refuses a prompt.
COMMIT_ONLY_MODELS = ("gpt-live-transcribe", "gpt-realtime-whisper")
NO_PROMPT_MODELS = ("gpt-realtime-whisper",)
DEFAULT_MODEL = "whisper-1"
# The profiles of the diarization models: their sessions send speaker segments.
SPEAKER_PROFILES = ("gpt-4o-transcribe-diarize", "native-diarize")


def resolve_model(catalog: Catalog, settings: Settings, name: str) -> PublicModel | None:
    """The Whisper model serving `name`, or None when it names nothing a session can use."""
    public = catalog.resolve(name)
    if public is not None:
        if public.spec.kind != "stt":
            return None
        whisper = public.spec.options.get("whisper")
        if whisper is None:
            return public
        spec = catalog.spec(whisper)
        return replace(public, spec=spec) if spec is not None else None
    if name not in REALTIME_ONLY_NAMES:
        return None
    target = catalog.resolve(settings.aliases.get(name, settings.stt_default_model))
    if target is None or target.spec.kind != "stt":
        return None
    return PublicModel(name, target.spec, "gpt-4o-transcribe", target.created, "system")


def labels_speakers(model: PublicModel) -> bool:
    """Whether a session on this model sends `…input_audio_transcription.segment` events."""
    return model.profile in SPEAKER_PROFILES


def realtime_only_models(catalog: Catalog, settings: Settings) -> list[PublicModel]:
    """The realtime-only names this server serves that the catalog does not already hold
    (an alias of `VOXSERVE_ALIASES` puts one there): `/v1/models` lists them too."""
    served = (resolve_model(catalog, settings, n) for n in REALTIME_ONLY_NAMES
              if catalog.resolve(n) is None)
    return [m for m in served if m is not None]


def known_names(catalog: Catalog, settings: Settings) -> list[str]:
    names = [m.id for m in catalog.public_models() if m.spec.kind == "stt"]
    names += [m.id for m in realtime_only_models(catalog, settings)]
    return names
