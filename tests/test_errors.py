"""One test per bad input: OpenAI's status, envelope and message, and the server keeps serving."""

from __future__ import annotations

import io
import os
import wave

import httpx
import numpy as np
import openai
import pytest
from conftest import LiveServer, audio_path

HELLO = audio_path("audio_hello_world.mp3").read_bytes()
FORMATS_MESSAGE = (
    "Invalid file format. Supported formats: "
    "['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']"
)


def wav_bytes(seconds: float, rate: int = 16_000) -> bytes:
    samples = (np.sin(np.arange(int(seconds * rate)) * 0.05) * 8000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buffer.getvalue()


def post(base_url: str, path: str = "transcriptions", *, file=("a.mp3", HELLO), **data):
    # A `(None, value)` part keeps the body multipart even when no file is sent.
    files = {"file": file} if file is not None else {"purpose": (None, "test")}
    return httpx.post(f"{base_url}/v1/audio/{path}", files=files, data=data, timeout=60)


def assert_error(response, status, message=None, *, param=None, code=None, type="invalid_request_error"):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type and error["param"] == param and error["code"] == code
    if message is not None:
        assert error["message"] == message
    return error


def test_missing_file(base_url):
    assert_error(
        post(base_url, file=None, model="whisper-1"), 400,
        "1 validation error for Request\nbody -> file\n  field required (type=value_error.missing)",
    )


def test_missing_model(base_url):
    error = assert_error(post(base_url), 400)
    assert "body -> model" in error["message"]


def test_unknown_model_is_404(base_url):
    assert_error(
        post(base_url, model="whisper-9"), 404, "The model 'whisper-9' does not exist",
        param="model", code="model_not_found",
    )


def test_unknown_response_format(base_url):
    error = assert_error(post(base_url, model="whisper-1", response_format="verboseJson"), 400)
    assert "'loc': ('body', 'response_format')" in error["message"]
    assert "'input': 'verboseJson'" in error["message"]


def test_format_not_allowed_for_gpt4o(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.mp3", HELLO), response_format="verbose_json"
        )
    assert caught.value.body == {
        "message": "response_format 'verbose_json' is not compatible with model "
        "'gpt-4o-transcribe'. Use 'json' or 'text' instead.",
        "type": "invalid_request_error",
        "param": "response_format",
        "code": "unsupported_value",
    }


@pytest.mark.parametrize(
    "value, code, message",
    [
        ("2", "decimal_above_max_value",
         "Invalid 'temperature': decimal above maximum value. Expected a value <= 1, but got 2 instead."),
        ("-0.5", "decimal_below_min_value",
         "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got -0.5 instead."),
        ("warm", "invalid_type", "Invalid 'temperature': expected a number, but got 'warm' instead."),
    ],
)
def test_temperature_out_of_range(base_url, value, code, message):
    assert_error(post(base_url, model="whisper-1", temperature=value), 400, message,
                 param="temperature", code=code)


def test_bad_language_matches_recording(base_url):
    response = post(base_url, model="whisper-1", language="this should cause an error")
    assert_error(
        response, 400,
        "Invalid language 'this should cause an error'. Language parameter must be specified "
        "in ISO-639-1 format.",
        param="language", code="invalid_language_format",
    )
    assert response.json()["usage"] == {"type": "duration", "seconds": 0}
    assert len(response.content) == 251  # the recorded Content-Length


def test_wrong_content_type(base_url):
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions", json={"model": "whisper-1"}, timeout=30
    )
    error = assert_error(response, 400, param=None, code="unsupported_content_type")
    assert error["message"].startswith("Unsupported content type: 'application/json'.")


@pytest.mark.parametrize(
    "name, data",
    [
        ("empty", b""),
        ("random", os.urandom(40_000)),
        ("text", b"this is a text file, not audio\n" * 50),
        ("png", b"\x89PNG\r\n\x1a\n" + os.urandom(2_000)),
        ("truncated", HELLO[:200]),
    ],
)
def test_undecodable_files(base_url, name, data):
    assert_error(post(base_url, file=(f"{name}.mp3", data), model="whisper-1"), 400, FORMATS_MESSAGE)


def test_audio_under_a_tenth_of_a_second(base_url):
    assert_error(
        post(base_url, file=("short.wav", wav_bytes(0.05)), model="whisper-1"), 400,
        "Audio file is too short. Minimum audio length is 0.1 seconds.",
        param="file", code="audio_too_short",
    )


def test_truncated_but_decodable_audio_is_transcribed(base_url):
    """An upload cut short still holds speech before the cut: transcribe that part."""
    response = post(base_url, file=("cut.mp3", HELLO[: len(HELLO) // 2]), model="whisper-1")
    assert response.status_code == 200 and "hello" in response.json()["text"].lower()


@pytest.mark.parametrize(
    "field, value, param",
    [
        ("timestamp_granularities[]", "sentence", "timestamp_granularities"),
        ("include[]", "tokens", "include"),
        ("chunking_strategy", "sometimes", "chunking_strategy"),
        ("chunking_strategy", '{"type":"client_vad"}', "chunking_strategy.type"),
        ("chunking_strategy[threshold]", "3", "chunking_strategy.threshold"),
        ("stream", "maybe", "stream"),
    ],
)
def test_invalid_field_values(base_url, field, value, param):
    data = {"model": "whisper-1", field: value}
    if field == "chunking_strategy[threshold]":
        data["chunking_strategy[type]"] = "server_vad"
    response = post(base_url, **data)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_word_timestamps_not_on_gpt4o(base_url):
    # whisper-1 accepts them with every format (test_transcriptions); gpt-4o models have none.
    assert_error(
        post(base_url, model="gpt-4o-transcribe", **{"timestamp_granularities[]": "word"}), 400,
        param="timestamp_granularities", code="unsupported_value",
    )


def test_logprobs_not_on_whisper1(base_url):
    assert_error(post(base_url, model="whisper-1", **{"include[]": "logprobs"}), 400,
                 param="include", code="unsupported_value")


def test_english_only_model_refuses_other_languages(base_url):
    error = assert_error(post(base_url, model="whisper-1", language="fr"), 400,
                         param="language", code="unsupported_value")
    assert "English-only" in error["message"]


def test_english_only_model_refuses_translation(base_url):
    error = assert_error(post(base_url, "translations", model="whisper-tiny.en"), 400,
                         param="model", code="unsupported_value")
    assert "cannot translate" in error["message"]


def test_unknown_route_is_an_openai_404(base_url):
    response = httpx.get(f"{base_url}/v1/audio/nothing", timeout=10)
    assert_error(response, 404, "Invalid URL (GET /v1/audio/nothing)")


def test_server_keeps_serving_after_bad_input(base_url, client):
    for data in (b"", os.urandom(1000), HELLO[:100]):
        post(base_url, file=("x", data), model="whisper-1")
    assert httpx.get(f"{base_url}/health").status_code == 200
    assert "hello" in client.audio.transcriptions.create(model="whisper-1", file=HELLO).text.lower()


@pytest.fixture(scope="module")
def small_limit_server():
    with LiveServer(max_upload_bytes=100_000, api_keys=["sk-first-key-0001", "sk-second-key-0002"]) as live:
        yield live


def test_oversize_upload_gets_413_through_the_sdk(small_limit_server):
    client = openai.OpenAI(
        base_url=f"{small_limit_server.base_url}/v1", api_key="sk-first-key-0001", max_retries=0
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", wav_bytes(5.0)))
    assert caught.value.status_code == 413
    body = caught.value.body
    assert body["type"] == "server_error" and body["param"] is None and body["code"] is None
    assert body["message"].startswith("Maximum content size limit (100000) exceeded (")
    assert body["message"].endswith(" bytes read)")


def test_oversize_chunked_upload_without_length(small_limit_server):
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 10_000

    response = httpx.post(
        f"{small_limit_server.base_url}/v1/audio/transcriptions", content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x",
                 "authorization": "Bearer sk-first-key-0001"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "server_error"


def test_missing_api_key(small_limit_server):
    response = httpx.get(f"{small_limit_server.base_url}/v1/models", timeout=10)
    error = assert_error(response, 401)
    assert error["message"].startswith("You didn't provide an API key.")


def test_wrong_api_key_is_masked(small_limit_server):
    client = openai.OpenAI(base_url=f"{small_limit_server.base_url}/v1", api_key="sk-invalid-key-c66a", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.code == "invalid_api_key"
    assert caught.value.body["message"] == (
        "Incorrect API key provided: sk-inval***c66a. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


def test_any_configured_key_works_and_health_stays_open(small_limit_server):
    for key in ("sk-first-key-0001", "sk-second-key-0002"):
        client = openai.OpenAI(base_url=f"{small_limit_server.base_url}/v1", api_key=key, max_retries=0)
        assert client.models.retrieve("whisper-1").id == "whisper-1"
    assert httpx.get(f"{small_limit_server.base_url}/health").status_code == 200
