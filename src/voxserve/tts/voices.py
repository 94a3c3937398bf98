"""OpenAI's voice names, and how a requested voice becomes an engine's own voice.

OpenAI names are mapped onto each engine's voices by configuration (`VOXSERVE_PIPER_VOICES`,
`VOXSERVE_KOKORO_VOICES`), on top of the defaults each engine declares. An engine's own voice
names (`joe`, `jf_alpha`, ...) are accepted as they are, on every model.
"""

from __future__ import annotations

from collections.abc import Mapping

from voxserve.errors import InvalidInput

# In the order OpenAI's own error messages list them.
OPENAI_VOICES: tuple[str, ...] = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx",
    "nova", "sage", "shimmer", "verse", "marin", "cedar",
)
# tts-1 and tts-1-hd know only these nine (OpenAI's text-to-speech guide).
TTS1_VOICES: tuple[str, ...] = (
    "alloy", "ash", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
)


def quoted_list(values: tuple[str, ...] | list[str]) -> str:
    """`'a', 'b', and 'c'` as OpenAI writes the supported values of a field."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def unsupported_value(
    param: str, value: object, supported: tuple[str, ...] | list[str]
) -> InvalidInput:
    return InvalidInput(
        f"Invalid value: '{value}'. Supported values are: {quoted_list(supported)}.",
        param=param,
        code="invalid_value",
    )


def voice_map(defaults: Mapping[str, str], configured: Mapping[str, str]) -> dict[str, str]:
    """OpenAI name -> engine voice: the engine's defaults, overridden by configuration."""
    return {**defaults, **configured}


def resolve_voice(
    requested: str,
    openai_voices: tuple[str, ...],
    mapping: Mapping[str, str],
    engine_voices: tuple[str, ...],
) -> str:
    """The engine voice that speaks `requested`, or OpenAI's invalid-value error."""
    if requested in openai_voices and mapping.get(requested) in engine_voices:
        return mapping[requested]
    if requested in engine_voices:
        return requested
    raise unsupported_value("voice", requested, openai_voices)
