"""Realtime translation sessions, driven through the official SDK's
`client.realtime.translations.connect` (sync and async), with real French speech translated by
whisper-base and spoken by Piper. Audio is sent faster than real time; the server catches up."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import numpy as np
import pytest
import websockets
from conftest import LiveServer
from openai import AsyncOpenAI, OpenAI
from realtime_audio import chunks, pcm24, speech

KEY = "rt-translate-key"
PAIR = "whisper-base>piper"
MODELS = ("whisper-base", "piper")
FRENCH_WORDS = {"le", "la", "les", "est", "des", "une", "nous", "pour", "et", "je", "de"}
ENGLISH_WORDS = {"the", "and", "to", "of", "is", "we", "a", "in", "that", "it", "you", "i"}


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(api_keys=[KEY], realtime_max_sessions=3,
                    preload=["whisper-base", "piper"]) as server:
        yield server.wait_ready(300)


@pytest.fixture(scope="module")
def sdk(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{live.base_url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


def words(text: str) -> list[str]:
    return [w.strip(".,!?;:'\"").lower() for w in text.split()]


def check_stream(events: list, seconds_in: float) -> tuple[str, str, np.ndarray]:
    """Every event typed by the SDK, closed last; returns the source text, the English text
    and the translated speech (float32 at 24 kHz)."""
    for event in events:
        assert type(event).__module__.startswith("openai.types.realtime"), event
    assert len({e.event_id for e in events}) == len(events)
    assert events[0].type == "session.created" and events[-1].type == "session.closed"
    source = "".join(e.delta for e in events if e.type == "session.input_transcript.delta")
    english = "".join(e.delta for e in events if e.type == "session.output_transcript.delta")
    audio = [e for e in events if e.type == "session.output_audio.delta"]
    assert audio, "no translated speech"
    pcm = b""
    for event in audio:
        assert (event.format, event.sample_rate, event.channels) == ("pcm16", 24000, 1)
        chunk = base64.b64decode(event.delta)
        assert len(chunk) % 2 == 0
        pcm += chunk
    timed = [e for e in events if e.type.endswith(".delta")]
    stamps = [e.elapsed_ms for e in timed]
    assert all(s % 200 == 0 and 0 < s <= seconds_in * 1000 + 200 for s in stamps), stamps
    for stream in ("session.output_transcript.delta", "session.output_audio.delta",
                   "session.input_transcript.delta"):
        # Each stream's phrases come out in the order they were spoken (the text of the next
        # phrase may come while the last one is still being spoken).
        output = [e.elapsed_ms for e in timed if e.type == stream]
        assert output == sorted(output), stream
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    return source, english, samples


def assert_english(text: str) -> None:
    found = words(text)
    assert len(found) >= 10, text
    assert sum(w in ENGLISH_WORDS for w in found) >= 3, text
    assert sum(w in FRENCH_WORDS - {"a", "i"} for w in found) <= len(found) // 10, text


def test_sdk_sync_translates_french_into_english_speech(sdk):
    """The 42 s French clip: English text and speech for every phrase, then session.closed
    once everything is out."""
    samples = speech("audio_french.wav", lead=0.3, tail=1.0)
    events = []
    with sdk.realtime.translations.connect(model=PAIR) as conn:
        created = conn.recv()
        assert created.type == "session.created"
        assert created.session.type == "translation" and created.session.model == PAIR
        assert created.session.audio.output.language == "en"
        conn.session.update(session={"audio": {"output": {"language": "en"}}})
        updated = conn.recv()
        assert updated.type == "session.updated", updated
        assert updated.session.audio.input.transcription is None
        for piece in chunks(pcm24(samples), 9600):
            conn.session.input_audio_buffer.append(audio=piece)
        conn.session.close()
        events = [created, updated, *conn]
    source, english, speech_out = check_stream(events, samples.size / 16000)
    assert_english(english)
    assert source == ""  # no source transcript unless asked for
    # Piper speaks the English: seconds of audible speech, not silence.
    assert speech_out.size / 24000 > 10
    assert np.sqrt(np.mean(speech_out ** 2)) > 0.02


def test_sdk_async_refusals_bad_input_and_a_phrase(live):
    """Async client: another target language is refused by name, bad client events are answered
    by errors echoing their event_id, and the session still translates a phrase, with its
    French source text (audio.input.transcription)."""
    samples = speech("audio_french.wav", lead=0.3, tail=1.0)[: 11 * 16000]
    samples = np.concatenate([samples, np.zeros(16000, np.float32)])

    async def run() -> list:
        client = AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key=KEY, max_retries=0)
        async with client.realtime.translations.connect(model=PAIR) as conn:
            await conn.session.update(session={"audio": {"output": {"language": "fr"}}},
                                      event_id="evt_lang")
            await conn.send({"type": "session.input_audio_buffer.append", "audio": "%%%",
                             "event_id": "evt_b64"})
            await conn.send({"type": "input_audio_buffer.commit", "event_id": "evt_type"})
            await conn.session.update(session={"audio": {"output": {"voice": "echo"},
                                                         "input": {"transcription": {"model": "whisper-base"}}}})
            for piece in chunks(pcm24(samples), 4800):
                await conn.session.input_audio_buffer.append(audio=piece)
            await conn.session.close()
            return [event async for event in conn]

    events = asyncio.run(run())
    errors = {e.error.event_id: e.error for e in events if e.type == "error"}
    assert set(errors) == {"evt_lang", "evt_b64", "evt_type"}, errors
    language = errors["evt_lang"]
    assert language.param == "session.audio.output.language"
    assert "'en'" in language.message and "English only" in language.message
    assert errors["evt_b64"].param == "audio"
    assert "session.input_audio_buffer.append" in errors["evt_type"].message
    updated = [e for e in events if e.type == "session.updated"]
    assert [u.session.audio.output.language for u in updated] == ["en"]
    assert updated[0].session.audio.input.transcription.model == "whisper-base"
    source, english, speech_out = check_stream(events, samples.size / 16000)
    assert len(words(english)) >= 4, english
    assert sum(w in FRENCH_WORDS for w in words(source)) >= 2, source
    assert speech_out.size > 24000


def test_auth_secrets_and_connect_refusals(live, sdk):
    base = live.base_url.replace("http://", "ws://") + "/v1/realtime/translations"

    async def first(url: str, **kwargs) -> tuple[dict, int | None]:
        async with websockets.connect(url, **kwargs) as ws:
            import json

            event = json.loads(await ws.recv())
            if event["type"] == "error":
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                return event, ws.close_code
            return event, None

    secret = sdk.realtime.translations.client_secrets.create(
        session={"model": "gpt-realtime-translate", "audio": {"output": {"language": "en"}}},
    )
    assert secret.value.startswith("ek_") and secret.session.model == "gpt-realtime-translate"
    with pytest.raises(Exception) as refused:  # the secret's session is checked up front
        sdk.realtime.translations.client_secrets.create(
            session={"model": PAIR, "audio": {"output": {"language": "de"}}})
    assert "English only" in str(refused.value)

    async def checks() -> None:
        event, _ = await first(f"{base}?model={PAIR}",
                               additional_headers={"Authorization": f"Bearer {KEY}"})
        assert event["type"] == "session.created"
        assert event["session"]["audio"]["output"]["voice"] == "alloy"
        event, _ = await first(f"{base}?model=gpt-realtime-translate",
                               subprotocols=["realtime", f"openai-insecure-api-key.{secret.value}"])
        assert event["type"] == "session.created" and event["session"]["model"] == "gpt-realtime-translate"
        transcription = base.replace("/translations", "?intent=transcription")
        event, code = await first(transcription,
                                  subprotocols=["realtime", f"openai-insecure-api-key.{secret.value}"])
        assert event["error"]["param"].startswith("session.") and code == 1008
        event, code = await first(f"{base}?model={PAIR}")
        assert event["error"]["type"] == "invalid_request_error" and code == 1008
        event, code = await first(f"{base}?model=whisper-base>nothing",
                                  additional_headers={"Authorization": f"Bearer {KEY}"})
        assert event["error"]["param"] == "model" and "whisper-base>piper" in event["error"]["message"]
        event, code = await first(base, additional_headers={"Authorization": f"Bearer {KEY}"})
        assert event["error"]["code"] == "missing_required_parameter"

        await live.sessions_released()  # every session above is released

    asyncio.run(checks())


def test_a_client_that_leaves_stops_recognizer_and_synthesizer(live):
    """The whole clip queued at once, and the client leaves at the first translated audio:
    the session ends (both workers stopped) and neither model has work left."""
    import json

    hub, scheduler = live.app.state.realtime, live.app.state.scheduler
    translated = live.app.state.metrics.audio_seconds.labels("whisper-base")
    before = translated._value.get()
    url = live.base_url.replace("http://", "ws://") + f"/v1/realtime/translations?model={PAIR}"
    samples = speech("audio_french.wav", lead=0.3, tail=1.0)

    async def leave_early() -> None:
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"},
                                      max_size=None) as ws:
            for piece in chunks(pcm24(samples), 48000):
                await ws.send(json.dumps({"type": "session.input_audio_buffer.append", "audio": piece}))
            while json.loads(await ws.recv())["type"] != "session.output_audio.delta":
                pass
            assert hub.active == 1
        # The session is released only once both workers have been stopped, and the pass
        # or sentence in flight then frees its slot; ~35 s of queued speech is never run.
        while hub.active or any(scheduler.busy(m) or scheduler.queued(m) for m in MODELS):
            await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(leave_early(), 300))
    # Had the recognizer gone on, all ~43 s would have been translated before the release.
    assert translated._value.get() - before < samples.size / 16000 / 2
