"""Known-speaker references: `data:audio/...;base64,` URLs of a few seconds of one voice,
checked and decoded with OpenAI-style 400s before any work starts."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE, decode_audio
from voxserve.diarize.params import MAX_KNOWN_SPEAKERS, DiarizeParams
from voxserve.errors import InvalidInput, ServiceError

# OpenAI documents 2-10 s, yet accepted its own 1.75 s `audio_agent_reference.wav` example;
# we allow a little either side so that example, and slightly long clips, still work.
MIN_REFERENCE_SECONDS = 1.5
MAX_REFERENCE_SECONDS = 10.5
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.S
)


@dataclass(frozen=True)
class ReferenceAudio:
    name: str
    audio: np.ndarray


def check_known_speakers(params: DiarizeParams) -> None:
    """The checks that need no decoding: counts, pairing and names."""
    names, refs = params.known_speaker_names, params.known_speaker_references
    for field, values in (("known_speaker_names", names), ("known_speaker_references", refs)):
        if len(values) > MAX_KNOWN_SPEAKERS:
            raise InvalidInput(
                f"Invalid '{field}': array too long. Expected an array with maximum length "
                f"{MAX_KNOWN_SPEAKERS}, but got an array with length {len(values)} instead.",
                param=field, code="array_above_max_length",
            )
    if len(names) != len(refs):
        raise InvalidInput(
            f"known_speaker_names has {len(names)} item(s) but known_speaker_references has "
            f"{len(refs)}: each name needs exactly one reference clip.",
            param="known_speaker_references" if len(names) > len(refs) else "known_speaker_names",
            code="invalid_value",
        )
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name.strip() or len(name) > 64:
            raise InvalidInput(
                f"Invalid 'known_speaker_names[{i}]': expected a name of 1 to 64 characters.",
                param=f"known_speaker_names[{i}]", code="invalid_value",
            )
        if name in seen:
            raise InvalidInput(
                f"Invalid 'known_speaker_names[{i}]': '{name}' is given twice.",
                param=f"known_speaker_names[{i}]", code="invalid_value",
            )
        seen.add(name)
    low, high = params.min_speakers, params.max_speakers
    if low is not None and high is not None and low > high:
        raise InvalidInput("min_speakers must not exceed max_speakers.", param="min_speakers",
                       code="invalid_value")


def decode_references(params: DiarizeParams) -> list[ReferenceAudio]:
    """Each reference as 16 kHz mono samples, or the 400 that explains what is wrong."""
    check_known_speakers(params)
    out = []
    pairs = zip(params.known_speaker_names, params.known_speaker_references, strict=False)
    for i, (name, url) in enumerate(pairs):
        param = f"known_speaker_references[{i}]"
        audio = _decode_one(url, param)
        seconds = audio.size / SAMPLE_RATE
        if not MIN_REFERENCE_SECONDS <= seconds <= MAX_REFERENCE_SECONDS:
            raise InvalidInput(
                f"Invalid '{param}': reference audio must be 2 to 10 seconds long, "
                f"got {seconds:.2f} seconds.",
                param=param, code="invalid_value",
            )
        out.append(ReferenceAudio(name, audio))
    return out


def _decode_one(url: str, param: str) -> np.ndarray:
    match = _DATA_URL.match(url.strip())
    if match is None:
        raise InvalidInput(
            f"Invalid '{param}': expected a data URL such as 'data:audio/wav;base64,...'.",
            param=param, code="invalid_value",
        )
    try:
        data = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"Invalid '{param}': the data URL's base64 payload is malformed.",
            param=param, code="invalid_value",
        ) from None
    try:
        return decode_audio(data, max_seconds=MAX_REFERENCE_SECONDS + 1)
    except ServiceError as exc:
        raise InvalidInput(
            f"Invalid '{param}': the reference audio could not be used ({exc.message})",
            param=param, code="invalid_value",
        ) from None
