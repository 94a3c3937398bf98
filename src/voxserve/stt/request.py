"""A transcription or translation request after the wire format is gone, and the checks that
depend on the model: which formats and options its profile allows."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxserve.diarize.params import DiarizeParams
from voxserve.domain import Task
from voxserve.errors import InvalidInput
from voxserve.formats.transcript import TRANSCRIPT_FORMATS
from voxserve.runtime.catalog import PublicModel
from voxserve.stt.engine import VadSettings
from voxserve.stt.profiles import Profile, profile_for


@dataclass(frozen=True)
class SpeechToTextRequest:
    task: Task
    model: PublicModel
    audio: bytes
    response_format: str = "json"
    language: str | None = None  # Whisper code, already validated
    prompt: str | None = None
    temperature: float | None = None  # None: omitted
    timestamp_granularities: frozenset[str] = frozenset()
    include_logprobs: bool = False
    include_language_probabilities: bool = False  # extension
    stream: bool = False
    vad: VadSettings | None = None
    # Per-request decoder settings (documented extensions): DecodeOptions field -> value.
    extra: dict = field(default_factory=dict)
    diarize: DiarizeParams = DiarizeParams()  # read only by diarization models

    @property
    def profile(self) -> Profile:
        return profile_for(self.model.profile)

    @property
    def wants_stream(self) -> bool:
        return self.stream and self.profile.honours_stream

    @property
    def word_timestamps(self) -> bool:
        return "word" in self.timestamp_granularities


def check_against_profile(req: SpeechToTextRequest) -> None:
    """OpenAI's per-model rules, raised as OpenAI's errors."""
    profile = req.profile
    shown_model = req.model.id
    if req.task == "translate" and not profile.translations:
        raise InvalidInput(
            f"Model '{shown_model}' is not supported for translations. Use 'whisper-1' instead.",
            param="model",
            code="unsupported_value",
        )
    if req.response_format not in TRANSCRIPT_FORMATS:
        raise unknown_response_format(req.response_format)
    if req.response_format not in profile.formats:
        allowed = " or ".join(f"'{f}'" for f in profile.formats)
        raise InvalidInput(
            f"response_format '{req.response_format}' is not compatible with model "
            f"'{shown_model}'. Use {allowed} instead.",
            param="response_format",
            code="unsupported_value",
        )
    if req.prompt and not profile.prompt:
        raise InvalidInput(
            f"prompt is not supported with model '{shown_model}'.",
            param="prompt",
            code="unsupported_value",
        )
    if req.timestamp_granularities:
        if not profile.timestamp_granularities:
            raise InvalidInput(
                f"timestamp_granularities is not compatible with model '{shown_model}'.",
                param="timestamp_granularities",
                code="unsupported_value",
            )
        if "word" in req.timestamp_granularities and req.response_format != "verbose_json":
            raise InvalidInput(
                "timestamp_granularities[]=word requires response_format 'verbose_json'.",
                param="timestamp_granularities",
                code="unsupported_value",
            )
    if req.include_logprobs:
        if not profile.logprobs:
            raise InvalidInput(
                f"include[]=logprobs is not supported with model '{shown_model}'.",
                param="include",
                code="unsupported_value",
            )
        if req.response_format != "json":
            raise InvalidInput(
                "include[]=logprobs is only supported with response_format 'json'.",
                param="include",
                code="unsupported_value",
            )
    if req.include_language_probabilities and req.response_format not in ("json", "verbose_json"):
        raise InvalidInput(
            "include[]=language_probabilities needs response_format 'json' or 'verbose_json'.",
            param="include",
            code="unsupported_value",
        )


def unknown_response_format(value: str) -> InvalidInput:
    # OpenAI still answers this one in pydantic's legacy style (contract §6.3).
    expected = "'json', 'text', 'srt', 'verbose_json', 'vtt' or 'diarized_json'"
    return InvalidInput(
        f"[{{'type': 'enum', 'loc': ('body', 'response_format'), 'msg': \"Input should be "
        f"{expected}\", 'input': {value!r}, 'ctx': {{'expected': \"{expected}\"}}}}]"
    )
