"""Transcriptions through the official SDK (sync and async) against a live server."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from audio_variants import VARIANTS, encode, read_pcm
from conftest import audio_path
from recordings import recorded_entry

HELLO = audio_path("audio_hello_world.mp3")
ARCTIC = audio_path("arctic_a0007.wav")  # "And you always want to see it in the superlative degree."

SEGMENT_KEYS = [
    "id", "seek", "start", "end", "text", "tokens", "temperature",
    "avg_logprob", "compression_ratio", "no_speech_prob",
]


def raw_transcription(client, **kwargs):
    with HELLO.open("rb") as f:
        return client.audio.transcriptions.with_raw_response.create(file=f, **kwargs)


@pytest.mark.parametrize(
    "fmt, content_type",
    [
        ("json", "application/json"),
        ("text", "text/plain; charset=utf-8"),
        ("srt", "text/plain; charset=utf-8"),
        ("vtt", "text/plain; charset=utf-8"),
        ("verbose_json", "application/json"),
    ],
)
def test_every_format_with_its_content_type(client, fmt, content_type):
    raw = raw_transcription(client, model="whisper-1", response_format=fmt)
    assert raw.headers["content-type"] == content_type
    body = raw.http_response.text
    assert "hello world" in body.lower().replace(",", "")
    if fmt == "text":
        assert body.endswith("test.\n") and not body.endswith("\n\n")
    if fmt == "srt":
        assert body.startswith("1\n00:00:00,000 --> 00:00:0") and body.endswith("\n\n\n")
    if fmt == "vtt":
        assert body.startswith("WEBVTT\n\n00:00:00.000 --> ") and body.endswith(".\n\n")
        assert not body.endswith("\n\n\n")


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt"])
def test_word_granularity_is_accepted_and_changes_nothing_outside_verbose_json(base_url, fmt):
    """OpenAI answers `timestamp_granularities[]=word` with these formats exactly as without it
    (contract §2.3.5): the same bytes, in the recorded layout and content type."""
    def post(**extra):
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            files={"file": ("hello.mp3", HELLO.read_bytes())},
            data={"model": "whisper-1", "response_format": fmt, **extra}, timeout=60,
        )
        assert response.status_code == 200, response.text
        return response

    with_words = post(**{"timestamp_granularities[]": "word"})
    without = post()
    assert with_words.content == without.content
    entry = recorded_entry(f"TranscriptionFormatsWork(%{fmt}%)")
    assert with_words.headers["content-type"] == entry["ResponseHeaders"]["Content-Type"]
    if fmt == "json":
        assert list(with_words.json()) == list(entry["ResponseBody"])  # text, usage: no words


def test_json_is_compact_with_duration_usage_rounded_up(client):
    raw = raw_transcription(client, model="whisper-1")
    body = raw.http_response.content
    assert b": " not in body and b", " not in body.replace(b"world, this", b"")
    parsed = json.loads(body)
    assert list(parsed) == ["text", "usage"]
    assert parsed["usage"] == {"type": "duration", "seconds": 2}  # 1.7 s rounds up
    assert raw.headers["x-request-id"].startswith("req_")


def test_sdk_returns_typed_objects(client):
    with HELLO.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, language="en")
    assert result.text == "Hello world, this is a test."
    with HELLO.open("rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(text, str) and text.endswith("\n")


async def test_async_client_every_json_format(async_client):
    data = HELLO.read_bytes()
    result = await async_client.audio.transcriptions.create(
        model="whisper-1", file=("hello.mp3", data, "audio/mpeg")
    )
    assert "hello" in result.text.lower()
    verbose = await async_client.audio.transcriptions.create(
        model="whisper-1", file=("hello.mp3", data), response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.words and verbose.segments
    srt = await async_client.audio.transcriptions.create(
        model="whisper-1", file=("hello.mp3", data), response_format="srt"
    )
    assert srt.startswith("1\n")


def test_verbose_json_fields_and_key_order(client):
    raw = raw_transcription(client, model="whisper-1", response_format="verbose_json")
    body = json.loads(raw.http_response.content)
    assert list(body) == ["task", "language", "duration", "text", "segments", "usage"]
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert 1.6 < body["duration"] < 1.8
    assert body["usage"] == {"type": "duration", "seconds": math.ceil(body["duration"])}
    segment = body["segments"][0]
    assert list(segment) == SEGMENT_KEYS
    assert segment["id"] == 0 and segment["seek"] == 0
    assert segment["text"].startswith(" ")
    # Whisper token ids with the timestamp tokens around the text (tiny.en: <|0.00|> = 50363).
    assert segment["tokens"][0] >= 50363 and segment["tokens"][-1] >= 50363
    assert segment["avg_logprob"] < 0 and 0 <= segment["no_speech_prob"] <= 1
    assert segment["compression_ratio"] > 0


@pytest.mark.parametrize(
    "granularities, keys",
    [
        (["word"], ["task", "language", "duration", "text", "words", "usage"]),
        (["segment"], ["task", "language", "duration", "text", "segments", "usage"]),
        (["word", "segment"], ["task", "language", "duration", "text", "segments", "words", "usage"]),
    ],
)
def test_timestamp_granularities(client, granularities, keys):
    raw = raw_transcription(
        client, model="whisper-1", response_format="verbose_json",
        timestamp_granularities=granularities,
    )
    body = json.loads(raw.http_response.content)
    assert list(body) == keys
    if "words" in body:
        words = [w["word"] for w in body["words"]]
        assert words == ["Hello", "world", "this", "is", "a", "test"]
        starts = [w["start"] for w in body["words"]]
        assert starts == sorted(starts)
        assert all(w["start"] <= w["end"] <= body["duration"] + 0.05 for w in body["words"])


def test_temperature_explicit_and_fallback(client):
    hot = json.loads(raw_transcription(
        client, model="whisper-1", response_format="verbose_json", temperature=0.4
    ).http_response.content)
    assert hot["segments"][0]["temperature"] == pytest.approx(0.4)
    default = json.loads(raw_transcription(
        client, model="whisper-1", response_format="verbose_json"
    ).http_response.content)
    assert default["segments"][0]["temperature"] == 0.0


def test_prompt_reaches_the_decoder(client):
    plain = raw_transcription(client, model="gpt-4o-transcribe").parse()
    prompted = raw_transcription(
        client, model="gpt-4o-transcribe", prompt="A greeting to the whole world."
    ).parse()
    assert plain.usage.input_token_details.text_tokens == 0
    assert prompted.usage.input_token_details.text_tokens == 7
    assert prompted.usage.input_tokens == prompted.usage.input_token_details.audio_tokens + 7


def test_gpt4o_alias_uses_token_usage(client):
    raw = raw_transcription(client, model="gpt-4o-mini-transcribe")
    body = json.loads(raw.http_response.content)
    assert list(body) == ["text", "usage"]
    usage = body["usage"]
    assert list(usage) == ["type", "total_tokens", "input_tokens", "input_token_details", "output_tokens"]
    assert usage["type"] == "tokens"
    assert usage["input_token_details"]["audio_tokens"] == 17  # ten per second, as OpenAI counts
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens"] > 5


def test_gpt4o_stream_sends_deltas_then_done(client):
    with HELLO.open("rb") as f:
        stream = client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=f, stream=True
        )
        events = list(stream)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    assert "".join(e.delta for e in events[:-1]) == events[-1].text
    assert events[-1].usage.type == "tokens"


def test_stream_framing_is_crlf_with_done_marker(base_url):
    with httpx.stream(
        "POST", f"{base_url}/v1/audio/transcriptions",
        files={"file": ("hello.mp3", HELLO.read_bytes())},
        data={"model": "gpt-4o-transcribe", "stream": "true"},
    ) as response:
        body = response.read()
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert body.startswith(b'data: {"type":"transcript.text.delta","delta":"')
    assert body.endswith(b"\r\n\r\ndata: [DONE]\r\n\r\n")
    assert all(line.startswith(b"data: ") for line in body.split(b"\r\n\r\n") if line)


def test_whisper1_ignores_stream(client, base_url):
    # OpenAI answers whisper-1 with a plain JSON body; the SDK then iterates zero events.
    with HELLO.open("rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    assert events == []
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("hello.mp3", HELLO.read_bytes())},
        data={"model": "whisper-1", "stream": "true"},
        timeout=60,
    )
    assert response.headers["content-type"] == "application/json"
    assert "hello" in response.json()["text"].lower()


def test_logprobs_on_gpt4o_json(client):
    raw = raw_transcription(client, model="gpt-4o-transcribe", include=["logprobs"])
    body = json.loads(raw.http_response.content)
    assert list(body) == ["text", "logprobs", "usage"]
    # As in OpenAI's recording (token strings sanitized, bytes kept): the tokens spell the text
    # exactly, the first one b"Hello" with no leading space.
    recorded = recorded_entry("IncludesWork")["ResponseBody"]
    assert bytes(p for t in recorded["logprobs"] for p in t["bytes"]).decode() == recorded["text"]
    assert list(recorded) == list(body)
    assert bytes(p for t in body["logprobs"] for p in t["bytes"]).decode() == body["text"]
    assert "".join(p["token"] for p in body["logprobs"]) == body["text"]
    for p in body["logprobs"]:
        assert p["logprob"] <= 0 and bytes(p["bytes"]).decode() == p["token"]


@pytest.mark.parametrize(
    "form",
    [
        {"chunking_strategy": "auto"},
        {"chunking_strategy": '{"type":"server_vad","prefix_padding_ms":100,"silence_duration_ms":100,"threshold":0.3}'},
        {"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "0.4"},
    ],
    ids=["auto", "json-string", "bracket-fields"],
)
def test_chunking_strategy_wire_forms(base_url, form):
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("arctic.wav", ARCTIC.read_bytes())},
        data={"model": "whisper-1", **form},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert "superlative" in response.json()["text"].lower()


def test_chunking_strategy_from_the_sdk(client):
    with ARCTIC.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=f,
            chunking_strategy={"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300},
        )
    assert "superlative" in result.text.lower()


def test_plain_repeated_names_and_string_booleans(base_url):
    """Vercel's AI SDK sends `timestamp_granularities` without brackets; curl users type True."""
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files=[
            ("file", ("a.mp3", HELLO.read_bytes(), "audio/mpeg")),
        ],
        data={
            "model": "whisper-1",
            "response_format": "verbose_json",
            "timestamp_granularities": ["word", "segment"],
            "stream": "False",
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "words" in body and "segments" in body


def test_raw_bytes_upload_without_extension(client):
    result = client.audio.transcriptions.create(model="whisper-1", file=HELLO.read_bytes())
    assert "hello" in result.text.lower()


def test_windows_path_filename(base_url):
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("Assets\\audio_hello_world.mp3", HELLO.read_bytes(), "text/plain")},
        data={"model": "whisper-1", "response_format": "text"},
        timeout=60,
    )
    assert response.status_code == 200 and "hello" in response.text.lower()


@pytest.fixture(scope="module")
def arctic_pcm():
    return read_pcm(ARCTIC)


@pytest.mark.parametrize("variant", [*VARIANTS, "mpeg", "mpga"])
def test_every_accepted_container(client, arctic_pcm, variant):
    samples, rate = arctic_pcm
    data = encode(samples, rate, "mp3" if variant in ("mpeg", "mpga") else variant)
    # Named "upload" with no extension: the server must sniff the bytes.
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("upload", data, "application/octet-stream")
    )
    assert "superlative" in result.text.lower(), (variant, result.text)
