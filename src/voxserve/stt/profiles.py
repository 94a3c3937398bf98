"""What each model name allows. OpenAI's names keep OpenAI's rules (contract §2.2); native ids
get everything the engine can do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Profile:
    name: str
    formats: tuple[str, ...]
    honours_stream: bool  # False: `stream=true` is ignored, as whisper-1 does
    logprobs: bool
    timestamp_granularities: bool
    usage: Literal["duration", "tokens"]
    translations: bool
    prompt: bool = True



WHISPER_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")

PROFILES: dict[str, Profile] = {
    "whisper-1": Profile(
        "whisper-1", WHISPER_FORMATS, honours_stream=False, logprobs=False,
        timestamp_granularities=True, usage="duration", translations=True,
    ),
    "gpt-4o-transcribe": Profile(
        "gpt-4o-transcribe", ("json", "text"), honours_stream=True, logprobs=True,
        timestamp_granularities=False, usage="tokens", translations=False,
    ),
    "native": Profile(
        "native", WHISPER_FORMATS, honours_stream=True, logprobs=True,
        timestamp_granularities=True, usage="duration", translations=True,
    ),
    # Diarization (voxserve.diarize): OpenAI's rules, and a native profile with everything.
    "gpt-4o-transcribe-diarize": Profile(
        "gpt-4o-transcribe-diarize", ("json", "text", "diarized_json"), honours_stream=True,
        logprobs=False, timestamp_granularities=False, usage="tokens", translations=False,
        prompt=False,
    ),
    "native-diarize": Profile(
        "native-diarize", (*WHISPER_FORMATS, "diarized_json"), honours_stream=True,
        logprobs=True, timestamp_granularities=True, usage="duration", translations=False,
    ),
}


def profile_for(name: str) -> Profile:
    return PROFILES.get(name, PROFILES["native"])
