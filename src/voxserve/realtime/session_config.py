"""A transcription session's configuration: `session.update` payloads checked and merged
into the effective session, which is what `session.created` / `session.updated` show.

Updates are partial, as OpenAI's are: fields left out keep their value, `null` turns a
feature off (`turn_detection: null` means the client commits), and the whole-object fields
(`format`, `turn_detection`, `noise_reduction`) are replaced, not merged.

The commit-only models (`gpt-live-transcribe`, `gpt-realtime-whisper`) refuse any turn
detection object with OpenAI's error. Since a session starts with `server_vad`, an update (or
a client secret's session) that names one of them and says nothing of `turn_detection` turns
it off (`null`), rather than being refused for the default it never asked for.

`transcription.delay` sets the seconds of new audio between live passes
(`DELAY_PARTIAL_INTERVAL`), `keywords` become Whisper's hotwords, `languages` narrows
language detection to those languages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from voxserve.errors import InvalidInput
from voxserve.languages import normalize_language
from voxserve.realtime.audio_in import FORMAT_RATES, InputFormat
from voxserve.realtime.events import missing_parameter, wrong_type
from voxserve.realtime.models import COMMIT_ONLY_MODELS, DEFAULT_MODEL, NO_PROMPT_MODELS
from voxserve.realtime.turns import SEMANTIC_MAX_WAIT, TurnConfig
from voxserve.realtime.wire_fields import as_object, invalid_value, noise_reduction, only_known
from voxserve.runtime.catalog import PublicModel
from voxserve.stt.profiles import profile_for

LOGPROBS = "item.input_audio_transcription.logprobs"
# `transcription.delay` -> seconds of new audio between a turn's live passes: a longer wait
# sends the live text later and in bigger steps (each pass hears more), and costs fewer passes.
# "low" is the server's default interval (REALTIME_PARTIAL_INTERVAL, 0.5 s).
DELAY_PARTIAL_INTERVAL = {"minimal": 0.3, "low": 0.5, "medium": 0.8, "high": 1.2, "xhigh": 2.0}
# `keywords` joined into Whisper's hotwords: at most as long as the file endpoint's `hotwords`.
MAX_HOTWORDS_CHARS = 1000
TRANSCRIPTION_FIELDS = ("model", "language", "prompt", "delay", "keywords", "languages")

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
    language_given: str | None = None  # as the client wrote it
    delay: str | None = None  # minimal|low|medium|high|xhigh; None: the server's interval
    keywords: tuple[str, ...] = ()  # as the client wrote them
    languages: tuple[str, ...] = ()  # Whisper codes, in the client's order, no repeats
    languages_given: tuple[str, ...] = ()  # as the client wrote them

    @property
    def partial_interval(self) -> float | None:
        """Seconds of new audio between live passes that `delay` asks for; None: the
        server's REALTIME_PARTIAL_INTERVAL."""
        return DELAY_PARTIAL_INTERVAL[self.delay] if self.delay else None

    @property
    def hotwords(self) -> str | None:
        """The keywords as Whisper's hotwords (text the decoder is primed with)."""
        return ", ".join(k.strip() for k in self.keywords if k.strip()) or None

    def wire(self) -> dict:
        transcription = {"model": self.model.id, "language": self.language_given,
                         "prompt": self.prompt or ""}
        if self.delay is not None:
            transcription["delay"] = self.delay
        if self.keywords:
            transcription["keywords"] = list(self.keywords)
        if self.languages_given:
            transcription["languages"] = list(self.languages_given)
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
    if _names_commit_only_model(update):
        # A commit-only model without a word about turn detection: the client commits (the
        # session's default server_vad would only be refused).
        given = update["audio"]["input"]
        if "turn_detection" not in given and isinstance(merged.get("audio"), dict) and \
                isinstance(merged["audio"].get("input"), dict):
            merged["audio"] = {**merged["audio"],
                               "input": {**merged["audio"]["input"], "turn_detection": None}}
    return merged


def _names_commit_only_model(update: dict) -> bool:
    audio = update.get("audio")
    given = audio.get("input") if isinstance(audio, dict) else None
    transcription = given.get("transcription") if isinstance(given, dict) else None
    return isinstance(transcription, dict) and transcription.get("model") in COMMIT_ONLY_MODELS


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
    only_known(wire, "session", ("type", "audio", "include", "id", "object", "expires_at",
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
            raise invalid_value("session.include", value, (LOGPROBS,))
    audio = as_object(wire.get("audio") or {}, "session.audio")
    only_known(audio, "session.audio", ("input",))
    given = as_object(audio.get("input") or {}, "session.audio.input")
    only_known(given, "session.audio.input",
          ("format", "noise_reduction", "transcription", "turn_detection"))
    fmt = _format(given.get("format"))
    noise = noise_reduction(given.get("noise_reduction"))
    turn = _turn_detection(given["turn_detection"]) if "turn_detection" in given else TurnConfig()
    transcription = as_object(given.get("transcription") or {}, "session.audio.input.transcription")
    only_known(transcription, "session.audio.input.transcription", TRANSCRIPTION_FIELDS)
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
    delay = _delay(transcription.get("delay"))
    keywords = _keywords(transcription.get("keywords"))
    languages_given, languages = _languages(transcription.get("languages"))
    profile = profile_for(model.profile)
    if name in COMMIT_ONLY_MODELS and turn is not None:
        raise InvalidInput(
            "Turn detection is not supported for this transcription model.",
            param="session.audio.input.turn_detection", code="invalid_value",
        )
    if name in NO_PROMPT_MODELS and prompt:
        raise _unsupported_prompt(name)
    if prompt and not profile.prompt:
        raise _unsupported_prompt(name)
    if include and not profile.logprobs:
        raise InvalidInput(
            f"'{LOGPROBS}' is not supported with model '{name}'.",
            param="session.include", code="unsupported_value",
        )
    return SessionConfig(
        model=model, format=fmt, turn=turn, language=language, prompt=prompt,
        include_logprobs=bool(include), noise_reduction=noise,
        language_given=language_given or None, delay=delay, keywords=keywords,
        languages=languages, languages_given=languages_given,
    )


_TRANSCRIPTION = "session.audio.input.transcription"


def _delay(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong_type(f"{_TRANSCRIPTION}.delay", "a string", value)
    if value not in DELAY_PARTIAL_INTERVAL:
        raise invalid_value(f"{_TRANSCRIPTION}.delay", value, tuple(DELAY_PARTIAL_INTERVAL))
    return value


def _strings(value: object, param: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise wrong_type(param, "an array of strings", value)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise wrong_type(f"{param}[{index}]", "a string", item)
    return tuple(value)


def _keywords(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    param = f"{_TRANSCRIPTION}.keywords"
    keywords = _strings(value, param)
    joined = ", ".join(k.strip() for k in keywords if k.strip())
    if len(joined) > MAX_HOTWORDS_CHARS:
        raise InvalidInput(
            f"Invalid '{param}': the keywords joined by ', ' may be at most "
            f"{MAX_HOTWORDS_CHARS} characters, but they are {len(joined)}.",
            param=param, code="invalid_value",
        )
    return keywords


def _languages(value: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The languages as sent and as Whisper codes, without repeats."""
    if value is None:
        return (), ()
    param = f"{_TRANSCRIPTION}.languages"
    given = _strings(value, param)
    codes: list[str] = []
    for index, item in enumerate(given):
        code = normalize_language(item)
        if code is None:
            raise InvalidInput(
                f"Invalid value: '{item}'. Language must be an ISO-639-1 code (e.g. 'en').",
                param=f"{param}[{index}]", code="invalid_value",
            )
        if code not in codes:
            codes.append(code)
    return given, tuple(codes)


def _format(value: object) -> InputFormat:
    if value is None:
        return InputFormat()
    value = as_object(value, "session.audio.input.format")
    only_known(value, "session.audio.input.format", ("type", "rate"))
    kind = value.get("type", "audio/pcm")
    if kind not in FORMAT_RATES:
        raise invalid_value("session.audio.input.format.type", kind, tuple(FORMAT_RATES))
    rate = value.get("rate")
    if kind == "audio/pcm" and rate not in (None, 24000):
        raise invalid_value("session.audio.input.format.rate", rate, (24000,))
    if kind != "audio/pcm" and rate not in (None, 8000):
        raise InvalidInput(
            f"Unknown parameter: 'session.audio.input.format.rate' for '{kind}' (G.711 is "
            "always 8000 Hz).",
            param="session.audio.input.format.rate", code="unknown_parameter",
        )
    return InputFormat(kind)


def _turn_detection(value: object) -> TurnConfig | None:
    if value is None:
        return None
    param = "session.audio.input.turn_detection"
    value = as_object(value, param)
    kind = value.get("type")
    if kind is None:
        raise missing_parameter(f"{param}.type")
    common = ("type", "create_response", "interrupt_response")
    if kind == "semantic_vad":
        only_known(value, param, (*common, "eagerness"))
        eagerness = value.get("eagerness") or "auto"
        if eagerness not in SEMANTIC_MAX_WAIT:
            raise invalid_value(f"{param}.eagerness", eagerness, tuple(SEMANTIC_MAX_WAIT))
        return TurnConfig(type="semantic_vad", eagerness=eagerness)
    if kind != "server_vad":
        raise invalid_value(f"{param}.type", kind, ("server_vad", "semantic_vad"))
    only_known(value, param, (*common, "threshold", "prefix_padding_ms", "silence_duration_ms",
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


def _unsupported_prompt(name: str) -> InvalidInput:
    return InvalidInput(f"prompt is not supported with model '{name}'.",
                    param="session.audio.input.transcription.prompt", code="unsupported_value")
