"""Translations (any language to English) with the multilingual whisper-base on real French."""

from __future__ import annotations

import json
import re
import warnings

import httpx
import pytest
from conftest import audio_path
from recordings import french_translation

FRENCH = audio_path("audio_french.wav")
FRENCH_WORDS = {"le", "la", "les", "est", "des", "une", "nous", "pour"}


def english_share(text: str) -> float:
    words = [w.strip(".,").lower() for w in text.split()]
    return 1 - sum(w in FRENCH_WORDS for w in words) / max(len(words), 1)


@pytest.fixture(scope="module")
def french_verbose(base_url):
    """One real translation in verbose_json with word times, shared by the checks below."""
    response = httpx.post(
        f"{base_url}/v1/audio/translations",
        files={"file": ("audio_french.wav", FRENCH.read_bytes(), "audio/wav")},
        data={"model": "whisper-base", "response_format": "verbose_json", "language": "fr",
              "timestamp_granularities[]": ["word", "segment"]},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_verbose_json_is_an_english_translation(french_verbose):
    body = french_verbose
    assert list(body) == ["task", "language", "duration", "text", "segments", "words"]  # no usage
    assert body["task"] == "translate" and body["language"] == "english"
    assert body["duration"] == pytest.approx(42.06, abs=0.05)
    assert english_share(body["text"]) > 0.97
    # ("source": whisper-base says "source code" or "code source" depending on where the
    # speech chunks are cut.)
    for keyword in ("internet", "english", "source"):
        assert keyword in body["text"].lower()
    assert len(body["segments"]) >= 3
    assert body["segments"][-1]["end"] <= body["duration"] + 0.5
    assert [w["start"] for w in body["words"]] == sorted(w["start"] for w in body["words"])


def test_formats_follow_the_recorded_layouts(client):
    recorded = french_translation()
    data = FRENCH.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # translations are deprecated upstream
        for fmt in ("json", "text", "srt", "vtt"):
            raw = client.audio.translations.with_raw_response.create(
                model="whisper-base", file=("audio_french.wav", data), response_format=fmt,
                extra_body={"language": "fr"},
            )
            body = raw.http_response.text
            assert raw.headers["content-type"] == recorded["content_types"][fmt]
            if fmt == "json":
                assert list(json.loads(body)) == ["text"]  # translations carry no usage
            elif fmt == "text":
                assert body.endswith("\n") and english_share(body) > 0.97
            elif fmt == "srt":
                # The first cue starts where the speech does (about 1.1 s in), not at 0.
                assert re.match(r"1\n00:00:0\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", body)
                assert body.endswith("\n\n\n")
                assert body.count(" --> ") >= 3
            else:
                assert re.match(r"WEBVTT\n\n00:00:0\d\.\d{3} --> 00:00:\d\d\.\d{3}\n\S", body)
                assert not body.endswith("\n\n\n")


def test_language_is_detected_when_not_given(client):
    with FRENCH.open("rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result = client.audio.translations.create(model="whisper-base", file=f)
    assert english_share(result.text) > 0.97 and "internet" in result.text.lower()


def test_transcription_of_french_stays_french(base_url):
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("fr.wav", FRENCH.read_bytes())},
        data={"model": "whisper-base", "response_format": "verbose_json"},
        timeout=300,
    )
    body = response.json()
    assert body["language"] == "french"
    assert english_share(body["text"]) < 0.9


def test_gpt4o_names_are_not_translation_models(base_url):
    response = httpx.post(
        f"{base_url}/v1/audio/translations",
        files={"file": ("fr.wav", FRENCH.read_bytes())},
        data={"model": "gpt-4o-transcribe"},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
