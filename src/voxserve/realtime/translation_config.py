"""A translation session's models and configuration.

The session's `model` (fixed at connect) names a *pair*: a multilingual Whisper that
translates speech into English (Whisper's translate task) and a speech model that speaks the
result. OpenAI's translation model names are served by the pair the settings choose
(`realtime_translation_stt_model`, `realtime_translation_tts_model`); a native pair is written
`<whisper>><speech model>`, e.g. `whisper-base>piper`.

`session.update` may change `audio.output.language` (only English: Whisper translates into
English only), `audio.output.voice` (an extension; default: `realtime_translation_voice`),
`audio.input.transcription` (a transcription model: then the source-language text is sent too)
and `audio.input.noise_reduction` (accepted and reported, not applied).
"""

from __future__ import annotations

from dataclasses import dataclass

from voxserve.config import Settings
from voxserve.errors import InvalidInput
from voxserve.languages import normalize_language
from voxserve.realtime.events import wrong_type
from voxserve.realtime.session_config import ModelResolver
from voxserve.realtime.wire_fields import as_object, noise_reduction, only_known
from voxserve.runtime.catalog import Catalog, PublicModel

# OpenAI's realtime translation model names (the SDK leaves `model` a free string).
OPENAI_TRANSLATION_MODELS = ("gpt-realtime-translate",)
PAIR_SEPARATOR = ">"
TARGET_LANGUAGES = ("en",)


@dataclass(frozen=True)
class TranslationModels:
    name: str  # as the client named the pair
    translator: PublicModel  # a Whisper (stt)
    speaker: PublicModel  # a speech model (tts)


def resolve_translation_models(
    catalog: Catalog, settings: Settings, name: str
) -> TranslationModels | None:
    """The Whisper and speech model serving `name`, or None when it names no such pair."""
    if name in OPENAI_TRANSLATION_MODELS:
        stt, tts = settings.realtime_translation_stt_model, settings.realtime_translation_tts_model
    elif name.count(PAIR_SEPARATOR) == 1:
        stt, tts = name.split(PAIR_SEPARATOR)
    else:
        return None
    translator, speaker = catalog.resolve(stt), catalog.resolve(tts)
    if translator is None or translator.spec.kind != "stt":
        return None
    if speaker is None or speaker.spec.kind != "tts":
        return None
    return TranslationModels(name, translator, speaker)


def unknown_translation_model(name: str | None) -> InvalidInput:
    shown = ", ".join(f"'{n}'" for n in OPENAI_TRANSLATION_MODELS)
    return InvalidInput(
        f"Invalid value: '{name}'. Realtime translation models on this server are {shown} "
        f"and pairs '<whisper model>{PAIR_SEPARATOR}<speech model>' (e.g. "
        f"'whisper-base{PAIR_SEPARATOR}piper') of served models.",
        param="model", code="invalid_value",
    )


@dataclass(frozen=True)
class TranslationConfig:
    voice: str
    transcriber: PublicModel | None = None  # the source transcript's model, when asked for
    transcription_name: str | None = None
    noise_reduction: dict | None = None

    def wire(self) -> dict:
        transcription = {"model": self.transcription_name} if self.transcriber else None
        return {"audio": {
            "input": {"transcription": transcription, "noise_reduction": self.noise_reduction},
            "output": {"language": "en", "voice": self.voice},
        }}


def merge_translation_update(current: dict, update: object) -> dict:
    """A wire session with a `session.update`'s fields applied: objects merge key by key,
    anything else (null included) replaces."""
    if not isinstance(update, dict):
        raise wrong_type("session", "an object", update)
    merged = dict(current)
    for key, value in update.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and key != "transcription":
            merged[key] = merge_translation_update(old, value)
        else:
            merged[key] = value
    return merged


def build_translation_config(
    wire: dict, default_voice: str, resolve_transcriber: ModelResolver
) -> TranslationConfig:
    """Check a whole wire session (`session.update` payloads merged); raises OpenAI-style
    errors naming the offending field."""
    only_known(wire, "session", ("type", "model", "audio", "id", "object", "expires_at"))
    kind = wire.get("type", "translation")
    if kind != "translation":
        raise InvalidInput(
            f"Invalid value: '{kind}'. Supported values are: 'translation'.",
            param="session.type", code="invalid_value",
        )
    audio = as_object(wire.get("audio") or {}, "session.audio")
    only_known(audio, "session.audio", ("input", "output"))
    given = as_object(audio.get("input") or {}, "session.audio.input")
    only_known(given, "session.audio.input", ("transcription", "noise_reduction"))
    output = as_object(audio.get("output") or {}, "session.audio.output")
    only_known(output, "session.audio.output", ("language", "voice"))
    _check_target(output.get("language"))
    voice = output.get("voice") or default_voice
    if not isinstance(voice, str):
        raise wrong_type("session.audio.output.voice", "a string", voice)
    transcriber, name = None, None
    transcription = given.get("transcription")
    if transcription is not None:
        param = "session.audio.input.transcription"
        transcription = as_object(transcription, param)
        only_known(transcription, param, ("model",))
        name = transcription.get("model")
        if not isinstance(name, str):
            raise wrong_type(f"{param}.model", "a string", name)
        transcriber = resolve_transcriber(name)
        if transcriber is None:
            raise InvalidInput(
                f"Invalid value: '{name}'. The model does not exist or cannot transcribe "
                "realtime audio on this server.", param=f"{param}.model", code="invalid_value",
            )
    return TranslationConfig(voice, transcriber, name,
                             noise_reduction(given.get("noise_reduction")))


def _check_target(language: object) -> None:
    if language is None:
        return
    if not isinstance(language, str):
        raise wrong_type("session.audio.output.language", "a string", language)
    if normalize_language(language) in TARGET_LANGUAGES:
        return
    shown = ", ".join(f"'{code}'" for code in TARGET_LANGUAGES)
    raise InvalidInput(
        f"Invalid value: '{language}'. Supported values are: {shown}. This server translates "
        "with Whisper, which translates speech into English only.",
        param="session.audio.output.language", code="unsupported_value",
    )
