"""Realtime transcription sessions, driven as users drive them: the official SDK's realtime
client (sync and async) and a raw `websockets` client, over loopback, with real speech."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import jiwer
import pytest
import websockets
from conftest import LiveServer, reference_texts
from openai import AsyncOpenAI, OpenAI
from realtime_audio import chunks, g711, pcm24, speech
from whisper_normalizer.english import EnglishTextNormalizer

KEY = "rt-test-key"
INTENT = {"intent": "transcription"}
CLIPS = [
    "sense_and_sensibility_01_austen_64kb-0870.wav",
    "arctic_a0007.wav",
    "sense_and_sensibility_01_austen_64kb-0890.wav",
    "goforward.wav",
]
normalize = EnglishTextNormalizer()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(api_keys=[KEY], realtime_max_sessions=3) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{live.base_url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


def ws_url(live: LiveServer, query: str = "intent=transcription") -> str:
    return live.base_url.replace("http://", "ws://") + "/v1/realtime" + (f"?{query}" if query else "")


def session_update(**input_fields) -> dict:
    return {"type": "transcription", "audio": {"input": input_fields}}


def check_events(events: list, turns: bool) -> dict[str, str]:
    """Event order, id chaining and delta/transcript agreement; returns item id -> text."""
    for event in events:  # every event parsed into the SDK's own model, none left untyped
        assert type(event).__module__.startswith("openai.types.realtime"), event
    assert len({e.event_id for e in events}) == len(events)
    position: dict[tuple[str, str], int] = {}
    deltas: dict[str, list[str]] = {}
    for i, event in enumerate(events):
        item_id = getattr(event, "item_id", None) or getattr(getattr(event, "item", None), "id", None)
        if event.type.endswith(".delta"):
            deltas.setdefault(item_id, []).append(event.delta)
            position.setdefault((item_id, "first_delta"), i)
            position[(item_id, "last_delta")] = i
        elif item_id:
            position[(item_id, event.type)] = i
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    previous = None
    texts = {}
    for event in committed:
        item = event.item_id
        assert event.previous_item_id == previous
        previous = item
        order = ["input_audio_buffer.committed", "conversation.item.added",
                 "conversation.item.input_audio_transcription.completed", "conversation.item.done"]
        if turns:
            order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", *order]
        indexes = [position[(item, name)] for name in order]
        assert indexes == sorted(indexes), order
        done = position[(item, "conversation.item.input_audio_transcription.completed")]
        if (item, "last_delta") in position:
            assert position[(item, "last_delta")] < done
        completed = events[done]
        assert "".join(deltas.get(item, [])) == completed.transcript
        assert events[position[(item, "conversation.item.done")]].item.content[0].transcript == completed.transcript
        texts[item] = completed.transcript
    return texts


def file_endpoint_wer(sdk: OpenAI, names: list[str]) -> float:
    from conftest import audio_path

    hypotheses = []
    for name in names:
        with audio_path(name).open("rb") as f:
            hypotheses.append(sdk.audio.transcriptions.create(model="whisper-1", file=f, language="en").text)
    return jiwer.wer([normalize(reference_texts()[n]) for n in names], [normalize(h) for h in hypotheses])


def test_sdk_sync_vad_turns_match_file_endpoint(sdk, live):
    """Four clips with pauses, sent faster than real time: one item per clip, in order, each
    within the file endpoint's word error rate."""
    audio = pcm24(speech(*CLIPS, gap=1.5))
    events = []
    with sdk.realtime.connect(extra_query=INTENT) as conn:
        created = conn.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        assert created.session.audio.input.turn_detection.type == "server_vad"
        conn.session.update(session=session_update(transcription={"model": "whisper-1", "language": "en"}))
        updated = conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.transcription.language == "en"
        assert updated.session.audio.input.format.rate == 24000
        for piece in chunks(audio, 48_000):
            conn.input_audio_buffer.append(audio=piece)
        done = 0
        while done < len(CLIPS):
            event = conn.recv()
            events.append(event)
            done += event.type == "conversation.item.done"
    texts = list(check_events(events, turns=True).values())
    assert len(texts) == len(CLIPS)
    realtime_wer = jiwer.wer([normalize(reference_texts()[n]) for n in CLIPS], [normalize(t) for t in texts])
    assert realtime_wer <= file_endpoint_wer(sdk, CLIPS) + 0.05
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e.type == "input_audio_buffer.speech_stopped"]
    assert [e.item_id for e in started] == [e.item_id for e in stopped]
    assert all(a.audio_start_ms < b.audio_end_ms for a, b in zip(started, stopped, strict=True))
    assert all(b.audio_end_ms < a.audio_start_ms for a, b in zip(started[1:], stopped, strict=False))


async def test_sdk_async_manual_commit_in_g711(live):
    """turn_detection null: the client commits. µ-law, then A-law after a format change."""
    clip = "arctic_a0009.wav"
    async with AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key=KEY, max_retries=0) as client:
        async with client.realtime.connect(extra_query=INTENT) as conn:
            assert (await conn.recv()).type == "session.created"
            events = []
            for kind in ("audio/pcmu", "audio/pcma"):
                await conn.session.update(session=session_update(
                    format={"type": kind}, turn_detection=None,
                    transcription={"model": "gpt-4o-mini-transcribe", "language": "en"},
                ))
                updated = await asyncio.wait_for(conn.recv(), 60)
                assert updated.type == "session.updated"
                assert updated.session.audio.input.turn_detection is None
                assert updated.session.audio.input.format.type == kind
                for piece in chunks(g711(speech(clip, tail=0.3), kind), 4000):
                    await conn.input_audio_buffer.append(audio=piece)
                await conn.input_audio_buffer.commit()
                while True:
                    event = await asyncio.wait_for(conn.recv(), 120)
                    events.append(event)
                    if event.type == "conversation.item.done":
                        break
    texts = list(check_events(events, turns=False).values())
    assert len(texts) == 2
    reference = normalize(reference_texts()[clip])
    for text in texts:
        assert jiwer.wer(reference, normalize(text)) <= 0.3, text  # telephone band: 8 kHz
    completed = [e for e in events if e.type.endswith("transcription.completed")]
    assert all(e.usage.type == "tokens" and e.usage.output_tokens > 0 for e in completed)


async def test_live_deltas_arrive_while_speaking(live):
    """One long turn at real-time pace: text arrives before the speaker stops (raw client)."""
    names = CLIPS[0], CLIPS[2], "sense_and_sensibility_01_austen_64kb-0920.wav"
    audio = pcm24(speech(*names, gap=0.25, tail=2.0))
    headers = {"Authorization": f"Bearer {KEY}"}
    events: list[dict] = []
    async with websockets.connect(ws_url(live), additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": session_update(
            transcription={"model": "whisper-1", "language": "en"},
            turn_detection={"type": "server_vad", "silence_duration_ms": 1500},
        )}))

        async def send() -> None:
            start = time.monotonic()
            for i, piece in enumerate(chunks(audio, 4800)):  # 100 ms each, on the clock
                await asyncio.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))

        sender = asyncio.create_task(send())
        await sender
        # Events come in order: once `cleared` is here, every turn has been committed.
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        while True:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
            kinds = [e["type"] for e in events]
            committed = kinds.count("input_audio_buffer.committed")
            if "input_audio_buffer.cleared" in kinds and committed == kinds.count("conversation.item.done"):
                break
    assert committed >= 1
    stopped = next(i for i, e in enumerate(events) if e["type"] == "input_audio_buffer.speech_stopped")
    first_item = events[stopped]["item_id"]
    live_deltas = [e["delta"] for e in events[:stopped] if e["type"].endswith(".delta")]
    assert live_deltas, [e["type"] for e in events]
    assert all(e["item_id"] == first_item for e in events[:stopped] if e["type"].endswith(".delta"))
    transcripts = []
    for item in [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]:
        deltas = "".join(e["delta"] for e in events if e["type"].endswith(".delta") and e["item_id"] == item)
        completed = next(e for e in events if e["type"].endswith(".completed") and e["item_id"] == item)
        assert deltas == completed["transcript"]
        transcripts.append(completed["transcript"])
    assert transcripts[0].startswith("".join(live_deltas))
    reference = " ".join(normalize(reference_texts()[n]) for n in names)
    assert jiwer.wer(reference, normalize(" ".join(transcripts))) <= 0.25
