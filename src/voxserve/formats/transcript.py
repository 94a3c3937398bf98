"""Render a Transcript the way OpenAI's API does, byte for byte.

Subtitles follow openai/whisper's idea of one algorithm with the formats as data; OpenAI's
server differs from open-source Whisper in two ways we copy: hours are always present, and SRT
ends with one extra blank line.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxserve.domain import Segment, TokenLogprob, Transcript, Word
from voxserve.languages import language_name

JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str


@dataclass(frozen=True)
class SubtitleStyle:
    header: str
    numbered_cues: bool
    decimal_marker: str
    trailer: str


SUBTITLE_STYLES: dict[str, SubtitleStyle] = {
    "srt": SubtitleStyle(header="", numbered_cues=True, decimal_marker=",", trailer="\n"),
    "vtt": SubtitleStyle(header="WEBVTT\n\n", numbered_cues=False, decimal_marker=".", trailer=""),
}


def format_timestamp(seconds: float, decimal_marker: str) -> str:
    """`HH:MM:SS<marker>mmm`, hours always present."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def render_subtitles(segments: tuple[Segment, ...] | list[Segment], style: SubtitleStyle) -> str:
    cues = []
    for number, seg in enumerate(segments, 1):
        timing = (
            f"{format_timestamp(seg.start, style.decimal_marker)} --> "
            f"{format_timestamp(seg.end, style.decimal_marker)}"
        )
        prefix = f"{number}\n" if style.numbered_cues else ""
        cues.append(f"{prefix}{timing}\n{seg.text.strip()}\n\n")
    return style.header + "".join(cues) + style.trailer


def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def f32(value: float) -> float:
    """OpenAI reports float32 values widened to float64 (1.7 -> 1.7000000476837158)."""
    return float(np.float32(value))


def duration_usage(duration: float) -> dict:
    return {"type": "duration", "seconds": math.ceil(round(duration, 6))}


def plain_word(word: str) -> str:
    """A word as OpenAI lists it: no surrounding spaces or punctuation (`" world,"` -> `world`)."""
    text = word.strip()
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(text[end - 1]).startswith("P"):
        end -= 1
    return text[start:end]


def segment_object(seg: Segment) -> dict:
    obj = {
        "id": seg.id,
        "seek": seg.seek,
        "start": f32(seg.start),
        "end": f32(seg.end),
        "text": seg.text,
        "tokens": list(seg.tokens),
        "temperature": f32(seg.temperature),
        "avg_logprob": f32(seg.avg_logprob),
        "compression_ratio": f32(seg.compression_ratio),
        "no_speech_prob": f32(seg.no_speech_prob),
    }
    if seg.speaker is not None:  # voxserve extension: native `+diarize` models
        obj["speaker"] = seg.speaker
    return obj


def diarized_segment_object(seg: Segment) -> dict:
    """OpenAI's `transcript.text.segment`, in its key order; also the streaming event."""
    return {
        "type": "transcript.text.segment",
        "text": seg.text,
        "speaker": seg.speaker,
        "start": round(seg.start, 3),
        "end": round(seg.end, 3),
        "id": f"seg_{seg.id}",
    }


def word_objects(words: tuple[Word, ...]) -> list[dict]:
    out = []
    for w in words:
        text = plain_word(w.word)
        if text:
            obj = {"word": text, "start": f32(w.start), "end": f32(w.end)}
            if w.speaker is not None:  # voxserve extension: native `+diarize` models
                obj["speaker"] = w.speaker
            out.append(obj)
    return out


def logprob_objects(logprobs: Iterable[TokenLogprob]) -> list[dict]:
    return [{"token": p.token, "logprob": p.logprob, "bytes": list(p.bytes)} for p in logprobs]


def language_probability_objects(transcript: Transcript) -> list[dict]:
    """voxserve extension: the language detector's top candidates."""
    return [
        {"language": code, "probability": f32(p)}
        for code, p in transcript.language_probabilities
    ]


@dataclass(frozen=True)
class RenderOptions:
    """What the model profile and request put into the JSON formats."""

    usage: dict | None = None
    segments: bool = True  # verbose_json: include `segments`
    words: bool = False  # verbose_json: include `words`
    logprobs: bool = False  # json: include `logprobs`
    language_probabilities: bool = False  # extension: include the detector's candidates


def render_transcript(
    transcript: Transcript, response_format: str, opts: RenderOptions
) -> Rendered:
    if response_format in SUBTITLE_STYLES:
        body = render_subtitles(transcript.segments, SUBTITLE_STYLES[response_format])
        return Rendered(body.encode(), TEXT_CONTENT_TYPE)
    if response_format == "text":
        return Rendered((transcript.text + "\n").encode(), TEXT_CONTENT_TYPE)
    if response_format == "verbose_json":
        obj: dict[str, Any] = {
            "task": transcript.task,
            "language": language_name(transcript.language),
            "duration": f32(transcript.duration),
            "text": transcript.text,
        }
        if opts.segments:
            obj["segments"] = [segment_object(s) for s in transcript.segments]
        if opts.words:
            obj["words"] = word_objects(transcript.words)
        if opts.language_probabilities:
            obj["language_probabilities"] = language_probability_objects(transcript)
    elif response_format == "diarized_json":
        # Exactly what OpenAI's server sends: text, segments, usage. Its spec and SDK model
        # also name `task` and `duration`, but the server omits them and the SDK parses the
        # body without them (contract §2.3.3).
        obj = {
            "text": transcript.text,
            "segments": [diarized_segment_object(s) for s in transcript.segments],
        }
    else:
        obj = {"text": transcript.text}
        if opts.logprobs:
            obj["logprobs"] = logprob_objects(transcript.logprobs)
        if opts.language_probabilities:
            obj["language_probabilities"] = language_probability_objects(transcript)
    if opts.usage is not None:
        obj["usage"] = opts.usage
    return Rendered(compact_json(obj), JSON_CONTENT_TYPE)
