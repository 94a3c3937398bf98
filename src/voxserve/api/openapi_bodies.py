"""Request bodies for the OpenAPI schema, so `/docs` can "Try it out".

The handlers read their bodies by hand (to answer every mistake with OpenAI's wording), so
FastAPI cannot infer them; these descriptions are documentation only and validate nothing.
"""

from __future__ import annotations

from voxserve.audio.encode import SPEECH_FORMATS
from voxserve.stt.profiles import PROFILES

_STT_FORMATS = sorted({f for p in PROFILES.values() for f in p.formats})


def _stt_properties(task: str) -> dict:
    properties: dict = {
        "file": {"type": "string", "format": "binary",
                 "description": "The audio: flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav or webm."},
        "model": {"type": "string", "example": "whisper-1",
                  "description": "A speech-to-text model id from GET /v1/models."},
        # Empty examples: Swagger UI pre-fills "string" otherwise, which the server refuses.
        "prompt": {"type": "string", "example": "",
                   "description": "Text to guide the style or vocabulary."},
        "response_format": {"type": "string", "enum": _STT_FORMATS, "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
    }
    if task == "transcribe":
        properties.update({
            "language": {"type": "string", "example": "",
                         "description": "ISO-639-1 code, e.g. en; empty: detected."},
            "timestamp_granularities[]": {
                "type": "array", "items": {"type": "string", "enum": ["word", "segment"]},
                "example": [], "description": "With response_format=verbose_json.",
            },
            "include[]": {
                "type": "array",
                "items": {"type": "string", "enum": ["logprobs", "language_probabilities"]},
                "example": [],
            },
            "stream": {"type": "boolean", "default": False,
                       "description": "Server-sent events instead of one response."},
            "chunking_strategy": {"type": "string", "example": "auto"},
            "known_speaker_names[]": {"type": "array", "items": {"type": "string"},
                                      "example": [], "description": "Diarization models only."},
            "known_speaker_references[]": {
                "type": "array", "items": {"type": "string"}, "example": [],
                "description": "Data URLs of short samples, one per name (diarization only).",
            },
        })
    return properties


def _multipart(task: str) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "model"],
                        "properties": _stt_properties(task),
                    },
                    "encoding": {
                        "timestamp_granularities[]": {"style": "form", "explode": True},
                        "include[]": {"style": "form", "explode": True},
                        "known_speaker_names[]": {"style": "form", "explode": True},
                        "known_speaker_references[]": {"style": "form", "explode": True},
                    },
                }
            },
        }
    }


TRANSCRIPTION_BODY = _multipart("transcribe")
TRANSLATION_BODY = _multipart("translate")

SPEECH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "input", "voice"],
                    "properties": {
                        "model": {"type": "string", "example": "tts-1"},
                        "input": {"type": "string", "maxLength": 4096,
                                  "example": "Hello from voxserve."},
                        "voice": {"type": "string", "example": "alloy",
                                  "description": "See GET /v1/audio/voices."},
                        "instructions": {"type": "string", "example": ""},
                        "response_format": {"type": "string", "enum": list(SPEECH_FORMATS),
                                            "default": "mp3"},
                        "speed": {"type": "number", "minimum": 0.25, "maximum": 4,
                                  "default": 1},
                        "stream_format": {"type": "string", "enum": ["audio", "sse"],
                                          "default": "audio"},
                    },
                }
            }
        },
    }
}
