"""Live SSE transcription: deltas as segments are decoded, logprobs, errors after the first
byte, and a client that leaves stops the decoder."""

from __future__ import annotations

import json
import re
import time

import httpx
import openai
import pytest
from conftest import LiveServer, audio_path
from joined_audio import english_clips, join_clips
from recordings import recorded_body


@pytest.fixture(scope="module")
def long_speech() -> bytes:
    return join_clips(english_clips() * 2).wav  # about 2.5 minutes


def sse_payloads(body: bytes) -> list[str]:
    return [chunk[len(b"data: "):].decode() for chunk in body.split(b"\r\n\r\n") if chunk]


def test_deltas_leave_while_decoding(base_url, long_speech):
    arrivals = []
    started = time.monotonic()
    with httpx.stream(
        "POST", f"{base_url}/v1/audio/transcriptions",
        files={"file": ("long.wav", long_speech)},
        data={"model": "gpt-4o-mini-transcribe", "stream": "true"}, timeout=600,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic() - started, line[6:]))
    deltas = [(t, json.loads(p)) for t, p in arrivals if p != "[DONE]"]
    assert arrivals[-1][1] == "[DONE]"
    done_at, done = deltas[-1]
    assert done["type"] == "transcript.text.done"
    assert len(deltas) > 5
    # The first words leave long before the file is finished.
    assert deltas[0][0] < done_at / 2, (deltas[0][0], done_at)
    assert "".join(d["delta"] for _, d in deltas[:-1]) == done["text"]


def test_stream_with_logprobs(client):
    with audio_path("audio_hello_world.mp3").open("rb") as f:
        events = list(client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=f, stream=True, include=["logprobs"],
        ))
    deltas, done = events[:-1], events[-1]
    assert all(d.logprobs for d in deltas)
    streamed = [p for d in deltas for p in d.logprobs]
    assert [p.token for p in done.logprobs] == [p.token for p in streamed]
    assert "".join(p.token for p in done.logprobs) == done.text
    assert all(p.logprob <= 0 and bytes(p.bytes).decode() == p.token for p in done.logprobs)


def spelled(payload: dict) -> str:
    return "".join(p["token"] for p in payload["logprobs"])


def test_stream_logprob_tokens_spell_each_delta_as_openai_does(base_url):
    """In OpenAI's recorded stream every delta's tokens spell the delta exactly, the first
    ("Hello", no leading space) included; the done event's tokens spell its text."""
    recorded = [json.loads(p) for p in sse_payloads(recorded_body("StreamingIncludesWork"))[:-1]]
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("a.mp3", audio_path("audio_hello_world.mp3").read_bytes())},
        data={"model": "gpt-4o-transcribe", "stream": "true", "include[]": "logprobs"},
        timeout=60,
    )
    ours = [json.loads(p) for p in sse_payloads(response.content)[:-1]]
    for events in (recorded, ours):
        *deltas, done = events
        assert deltas and all(spelled(d) == d["delta"] for d in deltas)
        assert not deltas[0]["delta"].startswith(" ")
        assert spelled(done) == done["text"] == "".join(d["delta"] for d in deltas)
        first = done["logprobs"][0]
        assert bytes(first["bytes"]).decode() == first["token"] == first["token"].lstrip()


def test_done_event_key_order(base_url):
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("a.mp3", audio_path("audio_hello_world.mp3").read_bytes())},
        data={"model": "gpt-4o-transcribe", "stream": "true", "include[]": "logprobs"},
        timeout=60,
    )
    done = json.loads(sse_payloads(response.content)[-2])
    assert list(done) == ["type", "text", "logprobs", "usage"]


def test_error_after_the_first_byte_is_an_sse_error_event(monkeypatch, long_speech):
    """Fault injection: the decoder fails after its first block."""
    from voxserve.stt.whisper import engine

    original = engine.WhisperEngine.transcribe
    calls = {"n": 0}

    def failing(self, samples, options):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("injected decoder failure")
        yield from original(self, samples, options)

    monkeypatch.setattr(engine.WhisperEngine, "transcribe", failing)

    with LiveServer(block_seconds=30) as live:
        sdk = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="k", max_retries=0)
        stream = sdk.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("long.wav", long_speech), stream=True
        )
        received = []
        with pytest.raises(openai.APIError) as caught:
            for event in stream:
                received.append(event)
    assert received and all(e.type == "transcript.text.delta" for e in received)
    assert caught.value.body["type"] == "server_error"


def engine_calls(base_url: str, model: str = "whisper-tiny.en") -> int:
    """Encode and generate calls the model has made so far (each lands in the batch-size
    histogram, batched or not)."""
    text = httpx.get(f"{base_url}/metrics").text
    match = re.search(rf'^voxserve_batch_size_count{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
    return int(float(match.group(1))) if match else 0


def test_disconnect_stops_decoding_at_the_next_window():
    # The unit of work that cannot be interrupted is one 30 s window (an encode and a
    # generate call; CTranslate2 has no cancellation hook), so the bound is counted in engine
    # calls, not seconds: after the client leaves, the window in flight may finish (with a
    # temperature fallback or two) and nothing more. Without cancellation the decoder would go
    # on through the remaining six minutes of audio: a dozen windows, two dozen calls or more.
    # A server of its own: nothing else may decode while the calls are counted. Its lane
    # holds the request's slot until the worker thread has really stopped.
    six_minutes = join_clips(english_clips() * 5).wav
    with LiveServer() as live:
        def running() -> int:
            return live.app.state.scheduler.busy("whisper-tiny.en")

        with httpx.stream(
            "POST", f"{live.base_url}/v1/audio/transcriptions",
            files={"file": ("long.wav", six_minutes)},
            data={"model": "gpt-4o-transcribe", "stream": "true", "beam_size": "1"},
            timeout=600,
        ) as response:
            deltas = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    deltas += 1
                    if deltas == 3:
                        break  # the client goes away
            assert running() == 1
            calls_when_leaving = engine_calls(live.base_url)
        left = time.monotonic()
        while running():
            assert time.monotonic() - left < 60, "the decoder is still running a minute later"
            time.sleep(0.05)
        calls_after_leaving = engine_calls(live.base_url) - calls_when_leaving
    # Two speech chunks are decoded side by side, and each may finish with a retry (a plain
    # decode that stopped early is done again with timestamps, or a hotter try): at most 12
    # calls; the nine chunks left of the file would take 18 or more.
    assert calls_after_leaving <= 12, f"{calls_after_leaving} engine calls after the client left"
