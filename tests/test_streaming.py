"""Live SSE transcription: deltas as segments are decoded, logprobs, errors after the first
byte, and a client that leaves stops the decoder."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from conftest import audio_path
from joined_audio import english_clips, join_clips


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
    assert "".join(p.token for p in done.logprobs).strip() == done.text
    assert all(p.logprob <= 0 and bytes(p.bytes).decode() == p.token for p in done.logprobs)


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
    from voxserve.stt import engine

    original = engine.WhisperEngine._transcribe_block
    calls = {"n": 0}

    def failing(self, block, options, state):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("injected decoder failure")
        yield from original(self, block, options, state)

    monkeypatch.setattr(engine.WhisperEngine, "_transcribe_block", failing)
    from conftest import LiveServer

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


def test_disconnect_stops_decoding_at_the_next_window(base_url, long_speech):
    # The unit of work that cannot be interrupted is one 30 s window's `generate` call
    # (CTranslate2 has no cancellation hook), so the bound is the window in flight, with
    # room for one slower window: the test watches two windows' deltas arrive to learn how
    # long a window takes here, then leaves. Without cancellation the worker would stay busy
    # for the remaining minute and a half of audio, four windows or more.
    with httpx.stream(
        "POST", f"{base_url}/v1/audio/transcriptions",
        files={"file": ("long.wav", long_speech)},
        data={"model": "gpt-4o-transcribe", "stream": "true", "beam_size": "1"}, timeout=600,
    ) as response:
        bursts: list[float] = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                now = time.monotonic()
                if not bursts or now - bursts[-1] > 0.2:  # a new window's segments
                    bursts.append(now)
                if len(bursts) == 2:
                    break  # the client goes away
        window = bursts[1] - bursts[0]
        assert httpx.get(f"{base_url}/health").json()["busy_workers"] >= 1
    left = time.monotonic()
    while httpx.get(f"{base_url}/health").json()["busy_workers"] > 0:
        waited = time.monotonic() - left
        assert waited < 2 * window, f"still decoding {waited:.2f} s after leaving ({window=:.2f})"
        time.sleep(0.05)
