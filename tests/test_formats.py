"""The renderers against OpenAI's recorded bytes: the same segments must give the same body."""

from __future__ import annotations

import json

import pytest
from recordings import french_translation, recorded_body, recorded_entry

from voxserve.domain import Segment, Transcript, Word
from voxserve.formats.transcript import (
    RenderOptions,
    duration_usage,
    format_timestamp,
    plain_word,
    render_transcript,
)

HELLO = Transcript(
    task="transcribe",
    language="en",
    duration=1.7,
    segments=(Segment(0, 0, 0.0, 2.0, " Hello, world! This is a test."),),
)


def transcript_from_verbose(body: dict, words: list[dict] | None = None) -> Transcript:
    segments = tuple(
        Segment(
            id=s["id"], seek=s["seek"], start=s["start"], end=s["end"], text=s["text"],
            tokens=tuple(s["tokens"]), temperature=s["temperature"],
            avg_logprob=s["avg_logprob"], compression_ratio=s["compression_ratio"],
            no_speech_prob=s["no_speech_prob"],
        )
        for s in body.get("segments", [])
    )
    if words:
        # Put all words on one carrier segment: verbose_json lists them flat.
        carrier = segments[0] if segments else Segment(0, 0, 0.0, 0.0, " " + body["text"])
        segments = (
            Segment(**{**carrier.__dict__, "words": tuple(Word(" " + w["word"], w["start"], w["end"]) for w in words)}),
            *segments[1:],
        )
    return Transcript(body["task"], "en", body["duration"], segments)


@pytest.mark.parametrize(
    "fmt, recording",
    [
        ("srt", "TranscriptionFormatsWork(%srt%)"),
        ("vtt", "TranscriptionFormatsWork(%vtt%)"),
        ("text", "TranscriptionFormatsWork(%text%)"),
    ],
)
def test_text_formats_match_recorded_bytes(fmt, recording):
    rendered = render_transcript(HELLO, fmt, RenderOptions())
    entry = recorded_entry(recording)
    assert rendered.body == recorded_body(recording)
    assert len(rendered.body) == int(entry["ResponseHeaders"]["Content-Length"])
    assert rendered.content_type == entry["ResponseHeaders"]["Content-Type"]


def test_json_matches_recorded_bytes():
    rendered = render_transcript(HELLO, "json", RenderOptions(usage=duration_usage(1.7)))
    assert rendered.body == recorded_body("TranscriptionFormatsWork(%json%)")
    assert rendered.content_type == "application/json"


def test_verbose_json_matches_recorded_bytes_and_key_order():
    name = "TranscriptionFormatsWork(%verbose_json%)"
    body = recorded_entry(name)["ResponseBody"]
    transcript = transcript_from_verbose(body)
    rendered = render_transcript(transcript, "verbose_json", RenderOptions(usage=duration_usage(transcript.duration)))
    assert rendered.body == recorded_body(name)
    assert len(rendered.body) == int(recorded_entry(name)["ResponseHeaders"]["Content-Length"])


def test_word_only_verbose_json_has_no_segments_key():
    name = "TimestampsWork(Word)"
    body = recorded_entry(name)["ResponseBody"]
    transcript = transcript_from_verbose(body, words=body["words"])
    opts = RenderOptions(usage=duration_usage(transcript.duration), segments=False, words=True)
    rendered = render_transcript(transcript, "verbose_json", opts)
    assert rendered.body == recorded_body(name)
    assert "segments" not in json.loads(rendered.body)


@pytest.mark.parametrize("fmt", ["srt", "vtt", "text", "json", "verbose_json"])
def test_five_segment_translation_matches_recorded_bytes(fmt):
    recorded = french_translation()
    body = json.loads(recorded["verbose_json"])
    transcript = transcript_from_verbose(body)
    rendered = render_transcript(transcript, fmt, RenderOptions())  # translations carry no usage
    assert rendered.body.decode() == recorded[fmt]
    assert rendered.content_type == recorded["content_types"][fmt]


@pytest.mark.parametrize(
    "seconds, marker, expected",
    [
        (0.0, ",", "00:00:00,000"),
        (1.4600000381469727, ".", "00:00:01.460"),
        (3599.9996, ",", "01:00:00,000"),
        (3723.5, ".", "01:02:03.500"),
        (-0.01, ",", "00:00:00,000"),
    ],
)
def test_timestamps_always_have_hours(seconds, marker, expected):
    assert format_timestamp(seconds, marker) == expected


@pytest.mark.parametrize(
    "raw, plain",
    [(" world,", "world"), (" test.", "test"), ("«Bonjour»", "Bonjour"), (" don't", "don't"), (" -", "")],
)
def test_words_lose_punctuation_and_spaces(raw, plain):
    assert plain_word(raw) == plain


@pytest.mark.parametrize("duration, seconds", [(1.7, 2), (8.47, 9), (2.0, 2), (0.1, 1)])
def test_duration_usage_rounds_up(duration, seconds):
    assert duration_usage(duration) == {"type": "duration", "seconds": seconds}


def test_diarized_json_is_what_openais_server_sends():
    """text, segments, usage and nothing more, byte for byte. OpenAI's server wrote one time as
    1.6500000000000001 (its float arithmetic); voxserve rounds times to milliseconds."""
    name = "DiarizedTranscriptionWorks(UsingFilePath)"
    entry = recorded_entry(name)
    body = entry["ResponseBody"]
    assert len(recorded_body(name)) == int(entry["ResponseHeaders"]["Content-Length"])
    segments = tuple(
        Segment(id=i, seek=0, start=s["start"], end=s["end"], text=s["text"], speaker=s["speaker"])
        for i, s in enumerate(body["segments"])
    )
    transcript = Transcript("transcribe", "en", 5.9, segments)
    rendered = render_transcript(transcript, "diarized_json", RenderOptions(usage=body["usage"]))
    assert rendered.body == recorded_body(name).replace(b"1.6500000000000001", b"1.65")
    assert list(json.loads(rendered.body)) == ["text", "segments", "usage"]
    assert rendered.content_type == entry["ResponseHeaders"]["Content-Type"]
