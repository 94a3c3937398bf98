"""The diarization fields of a transcription request, as sent (validated in references.py).
Import-light: the API layer reads these even where the diarize extra is not installed."""

from __future__ import annotations

from dataclasses import dataclass

MAX_KNOWN_SPEAKERS = 4


@dataclass(frozen=True)
class DiarizeParams:
    known_speaker_names: tuple[str, ...] = ()
    known_speaker_references: tuple[str, ...] = ()  # data URLs
    # voxserve extensions for native `+diarize` ids (OpenAI has neither).
    min_speakers: int | None = None
    max_speakers: int | None = None
