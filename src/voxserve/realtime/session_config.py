"""A transcription session's configuration: `session.update` payloads checked and merged
into the effective session, which is what `session.created` / `session.updated` show.

Updates are partial, as OpenAI's are: fields left out keep their value, `null` turns a
feature off (`turn_detection: null` means the client commits), and the whole-object fields
(`format`, `turn_detection`, `noise_reduction`) are replaced, not merged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from voxserve.errors import InvalidInput
from voxserve.languages import normalize_language
from voxserve.realtime.audio_in import FORMAT_RATES, InputFormat
from voxserve.realtime.events import missing_parameter, wrong_type
from voxserve.realtime.models import CLIENT_COMMIT_ONLY, DEFAULT_MODEL
from voxserve.realtime.turns import SEMANTIC_MAX_WAIT, TurnConfig
from voxserve.runtime.catalog import PublicModel
from voxserve.stt.profiles import profile_for

LOGPROBS = "item.input_audio_transcription.logprobs"
NOISE_REDUCTION_TYPES = ("near_field", "far_field")

ModelResolver = Callable[[str], PublicModel | None]


@dataclass(frozen=True)
class SessionConfig:
    model: PublicModel
    format: InputFormat = InputFormat()
    turn: TurnConfig | None = TurnConfig()
    language: str | None = None  # Whisper code
    prompt: str | None = None
    include_logprobs: bool = False
    noise_reduction: dict | None = None
    extra_transcription: dict = field(default_factory=dict)  # accepted, reported, not used
    language_given: str | None = None  # as the client wrote it

    def wire(self) -> dict:
        transcription = {"model": self.model.id, "language": self.language_given,
                         "prompt": self.prompt or "", **self.extra_transcription}
        return {
            "type": "transcription",
            "include": [LOGPROBS] if self.include_logprobs else [],
            "audio": {"input": {
                "format": self.format.wire(),
                "noise_reduction": self.noise_reduction,
                "transcription": transcription,
                "turn_detection": self.turn.wire() if self.turn else None,
            }},
        }


def default_wire() -> dict:
    return {"type": "transcription", "audio": {"input": {
        "format": InputFormat().wire(),
        "transcription": {"model": DEFAULT_MODEL},
        "turn_detection": TurnConfig().wire(),
    }}}


def merge_update(current: dict, update: object) -> dict:
    """`current` (a wire session) with `update` (a session.update's `session`) applied."""
    if not isinstance(update, dict):
        raise wrong_type("session", "an object", update)
    merged = dict(current)
    for key, value in update.items():
        if key == "audio" and isinstance(value, dict) and isinstance(merged.get("audio"), dict):
            audio = dict(merged["audio"])
            for akey, avalue in value.items():
                if akey == "input" and isinstance(avalue, dict) and isinstance(
                    audio.get("input"), dict
                ):
                    audio["input"] = _merge_input(audio["input"], avalue)
                else:
                    audio[akey] = avalue
            merged["audio"] = audio
        else:
            merged[key] = value
    return merged


def _merge_input(current: dict, update: dict) -> dict:
    merged = dict(current)
    for key, value in update.items():
        old = merged.get(key)
        if key == "transcription" and isinstance(value, dict) and isinstance(old, dict):
            merged[key] = {**old, **value}
        else:
            merged[key] = value
    return merged


def build_config(wire: dict, resolve: ModelResolver) -> SessionConfig:
    """Check a whole wire session; raises OpenAI-style errors naming the offending field."""
    _only(wire, "session", ("type", "audio", "include", "id", "object", "expires_at",
                            "client_secret"))
    kind = wire.get("type")
    if kind is None:
        raise missing_parameter("session.type")
    if kind != "transcription":
        raise InvalidInput(
            f"Invalid value: '{kind}'. Supported values are: 'transcription'. This server "
            "serves transcription sessions only.",
            param="session.type", code="invalid_value",
        )
    include = wire.get("include") or []
    if not isinstance(include, list):
        raise wrong_type("session.include", "an array", include)
    for value in include:
        if value != LOGPROBS:
            raise _invalid("session.include", value, (LOGPROBS,))
    audio = _object(wire.get("audio") or {}, "session.audio")
    _only(audio, "session.audio", ("input",))
    given = _object(audio.get("input") or {}, "session.audio.input")
    _only(given, "session.audio.input",
          ("format", "noise_reduction", "transcription", "turn_detection"))
    fmt = _format(given.get("format"))
    noise = _noise_reduction(given.get("noise_reduction"))
    turn = _turn_detection(given["turn_detection"]) if "turn_detection" in given else TurnConfig()
    transcription = _object(given.get("transcription") or {}, "session.audio.input.transcription")
    _only(transcription, "session.audio.input.transcription",
          ("model", "language", "prompt", "delay", "keywords", "languages"))
    name = transcription.get("model") or DEFAULT_MODEL
    if not isinstance(name, str):
        raise wrong_type("session.audio.input.transcription.model", "a string", name)
    model = resolve(name)
    if model is None:
        raise InvalidInput(
            f"Invalid value: '{name}'. The model does not exist or cannot transcribe "
            "realtime audio on this server.",
            param="session.audio.input.transcription.model", code="invalid_value",
        )
    language_given = transcription.get("language")
    language = None
    if language_given is not None:
        if not isinstance(language_given, str):
            raise wrong_type("session.audio.input.transcription.language", "a string",
                             language_given)
        language = normalize_language(language_given) if language_given else None
        if language_given and language is None:
            raise InvalidInput(
                f"Invalid value: '{language_given}'. Language must be an ISO-639-1 code "
                "(e.g. 'en').",
                param="session.audio.input.transcription.language", code="invalid_value",
            )
    prompt = transcription.get("prompt") or None
    if prompt is not None and not isinstance(prompt, str):
        raise wrong_type("session.audio.input.transcription.prompt", "a string", prompt)
    profile = profile_for(model.profile)
    if name == CLIENT_COMMIT_ONLY:
        if turn is not None:
            raise InvalidInput(
                f"Turn detection is not supported with model '{name}': set "
                "'session.audio.input.turn_detection' to null and commit the audio buffer.",
                param="session.audio.input.turn_detection", code="unsupported_value",
            )
        if prompt:
            raise _unsupported_prompt(name)
    if prompt and not profile.prompt:
        raise _unsupported_prompt(name)
    if include and not profile.logprobs:
        raise InvalidInput(
            f"'{LOGPROBS}' is not supported with model '{name}'.",
            param="session.include", code="unsupported_value",
        )
    extra = {k: transcription[k] for k in ("delay", "keywords", "languages")
             if transcription.get(k) is not None}
    return SessionConfig(
        model=model, format=fmt, turn=turn, language=language, prompt=prompt,
        include_logprobs=bool(include), noise_reduction=noise, extra_transcription=extra,
        language_given=language_given or None,
    )


def _format(value: object) -> InputFormat:
    if value is None:
        return InputFormat()
    value = _object(value, "session.audio.input.format")
    _only(value, "session.audio.input.format", ("type", "rate"))
    kind = value.get("type", "audio/pcm")
    if kind not in FORMAT_RATES:
        raise _invalid("session.audio.input.format.type", kind, tuple(FORMAT_RATES))
    rate = value.get("rate")
    if kind == "audio/pcm" and rate not in (None, 24000):
        raise _invalid("session.audio.input.format.rate", rate, (24000,))
    if kind != "audio/pcm" and rate not in (None, 8000):
        raise InvalidInput(
            f"Unknown parameter: 'session.audio.input.format.rate' for '{kind}' (G.711 is "
            "always 8000 Hz).",
            param="session.audio.input.format.rate", code="unknown_parameter",
        )
    return InputFormat(kind)


def _noise_reduction(value: object) -> dict | None:
    if value is None:
        return None
    value = _object(value, "session.audio.input.noise_reduction")
    _only(value, "session.audio.input.noise_reduction", ("type", "strength"))
    kind = value.get("type", "near_field")
    if kind not in NOISE_REDUCTION_TYPES:
        raise _invalid("session.audio.input.noise_reduction.type", kind, NOISE_REDUCTION_TYPES)
    strength = value.get("strength", 1)
    if not isinstance(strength, (int, float)) or isinstance(strength, bool):
        raise wrong_type("session.audio.input.noise_reduction.strength", "a number", strength)
    return {"type": kind, "strength": strength}


def _turn_detection(value: object) -> TurnConfig | None:
    if value is None:
        return None
    param = "session.audio.input.turn_detection"
    value = _object(value, param)
    kind = value.get("type")
    if kind is None:
        raise missing_parameter(f"{param}.type")
    common = ("type", "create_response", "interrupt_response")
    if kind == "semantic_vad":
        _only(value, param, (*common, "eagerness"))
        eagerness = value.get("eagerness") or "auto"
        if eagerness not in SEMANTIC_MAX_WAIT:
            raise _invalid(f"{param}.eagerness", eagerness, tuple(SEMANTIC_MAX_WAIT))
        return TurnConfig(type="semantic_vad", eagerness=eagerness)
    if kind != "server_vad":
        raise _invalid(f"{param}.type", kind, ("server_vad", "semantic_vad"))
    _only(value, param, (*common, "threshold", "prefix_padding_ms", "silence_duration_ms",
                         "idle_timeout_ms"))
    defaults = TurnConfig()
    threshold = _number(value, f"{param}.threshold", "threshold", defaults.threshold, 0.0, 1.0)
    padding = _number(value, f"{param}.prefix_padding_ms", "prefix_padding_ms",
                      defaults.prefix_padding_ms, 0, 10_000)
    silence = _number(value, f"{param}.silence_duration_ms", "silence_duration_ms",
                      defaults.silence_duration_ms, 0, 10_000)
    idle = value.get("idle_timeout_ms")
    if idle is not None:
        idle = _number(value, f"{param}.idle_timeout_ms", "idle_timeout_ms", 0, 5_000, 30_000)
    return TurnConfig(
        threshold=float(threshold), prefix_padding_ms=int(padding),
        silence_duration_ms=int(silence), idle_timeout_ms=int(idle) if idle else None,
    )


def _number(obj: dict, param: str, key: str, default: float, low: float, high: float) -> float:
    from voxserve.errors import number_out_of_range

    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise wrong_type(param, "a number", value)
    if not low <= value <= high:
        raise number_out_of_range(param, value, low, high)
    return value


def _object(value: object, param: str) -> dict:
    if not isinstance(value, dict):
        raise wrong_type(param, "an object", value)
    return value


def _only(obj: dict, where: str, allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            raise InvalidInput(f"Unknown parameter: '{where}.{key}'.", param=f"{where}.{key}",
                           code="unknown_parameter")


def _invalid(param: str, value: object, supported: tuple) -> InvalidInput:
    shown = ", ".join(f"'{s}'" for s in supported)
    return InvalidInput(f"Invalid value: '{value}'. Supported values are: {shown}.",
                    param=param, code="invalid_value")


def _unsupported_prompt(name: str) -> InvalidInput:
    return InvalidInput(f"prompt is not supported with model '{name}'.",
                    param="session.audio.input.transcription.prompt", code="unsupported_value")
