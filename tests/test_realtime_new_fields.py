"""Issue 25, part 1: `audio.input.transcription`'s `delay`, `keywords` and `languages`, and the
commit-only models (`gpt-live-transcribe`, `gpt-realtime-whisper`) that refuse turn detection.

Units with stand-in passes and engines (what each field does to the decode passes), then the
official SDK, sync and async, against a live server on whisper-tiny.en with real speech."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import jiwer
import numpy as np
import pytest
from conftest import LiveServer, reference_texts
from openai import AsyncOpenAI, OpenAI
from realtime_audio import chunks, pcm24, speech
from whisper_normalizer.english import EnglishTextNormalizer

from voxserve.audio.blocks import AudioBlock
from voxserve.audio.decode import SAMPLE_RATE
from voxserve.config import Settings
from voxserve.domain import Segment
from voxserve.errors import InvalidInput
from voxserve.realtime.models import resolve_model
from voxserve.realtime.session import SessionLimits, TranscriptionSession
from voxserve.realtime.session_config import (
    DELAY_PARTIAL_INTERVAL,
    build_config,
    default_wire,
    merge_update,
)
from voxserve.runtime.catalog import Catalog
from voxserve.stt.engine import DecodeInfo, DecodeOptions, EngineCapabilities, restrict_language
from voxserve.stt.passes import DecodePasses, PassDecode
from voxserve.stt.pipeline import decode_blocks
from voxserve.stt.whisper.engine import WhisperOptions

INTENT = {"intent": "transcription"}
CLIP = "arctic_a0007.wav"
COMMIT_ONLY = ("gpt-live-transcribe", "gpt-realtime-whisper")
TURN_REFUSED = "Turn detection is not supported for this transcription model."
TRANSCRIPTION = "session.audio.input.transcription"
normalize = EnglishTextNormalizer()


def _resolver():
    settings = Settings(stt_default_model="whisper-tiny.en")
    catalog = Catalog(settings)
    return lambda name: resolve_model(catalog, settings, name)


def _update(**input_fields) -> dict:
    return {"type": "transcription", "audio": {"input": input_fields}}


def _config(**input_fields):
    return build_config(merge_update(default_wire(), _update(**input_fields)), _resolver())


# -- the session's configuration ---------------------------------------------------------


def test_delay_keywords_and_languages_are_typed_and_shown_as_sent():
    config = _config(transcription={"model": "gpt-transcribe", "delay": "high",
                                    "keywords": ["Dashwood", " Norland Park ", ""],
                                    "languages": ["EN", "de", "en"]})
    assert config.delay == "high" and config.partial_interval == DELAY_PARTIAL_INTERVAL["high"]
    assert config.keywords == ("Dashwood", " Norland Park ", "")
    assert config.hotwords == "Dashwood, Norland Park"
    assert config.languages == ("en", "de")
    shown = config.wire()["audio"]["input"]["transcription"]
    assert (shown["delay"], shown["keywords"], shown["languages"]) == (
        "high", ["Dashwood", " Norland Park ", ""], ["EN", "de", "en"])
    plain = _config(transcription={"model": "gpt-transcribe"})
    assert (plain.delay, plain.partial_interval, plain.hotwords, plain.languages) == (
        None, None, None, ())
    assert not {"delay", "keywords", "languages"} & set(plain.wire()["audio"]["input"]["transcription"])
    # Fields left out of a later update keep their value.
    wire = merge_update(default_wire(), _update(transcription={"keywords": ["Elinor"]}))
    wire = merge_update(wire, _update(transcription={"delay": "minimal"}))
    kept = build_config(wire, _resolver())
    assert (kept.keywords, kept.delay) == (("Elinor",), "minimal")


@pytest.mark.parametrize(("field", "value", "param", "code"), [
    ("delay", "fast", "delay", "invalid_value"),
    ("delay", 2, "delay", "invalid_type"),
    ("keywords", "Dashwood", "keywords", "invalid_type"),
    ("keywords", ["Dashwood", 7], "keywords[1]", "invalid_type"),
    ("keywords", ["w" * 600, "x" * 600], "keywords", "invalid_value"),
    ("languages", "en", "languages", "invalid_type"),
    ("languages", ["en", "xx"], "languages[1]", "invalid_value"),
    ("languages", [None], "languages[0]", "invalid_type"),
])
def test_bad_values_are_refused_naming_the_field(field, value, param, code):
    with pytest.raises(InvalidInput) as caught:
        _config(transcription={"model": "gpt-transcribe", field: value})
    assert (caught.value.param, caught.value.code) == (f"{TRANSCRIPTION}.{param}", code)
    if field == "delay" and code == "invalid_value":
        assert caught.value.message == ("Invalid value: 'fast'. Supported values are: 'minimal', "
                                        "'low', 'medium', 'high', 'xhigh'.")


@pytest.mark.parametrize("model", COMMIT_ONLY)
@pytest.mark.parametrize("turn", [{"type": "server_vad"}, {"type": "semantic_vad"},
                                  {"type": "server_vad", "silence_duration_ms": 300}])
def test_commit_only_models_refuse_any_turn_detection(model, turn):
    with pytest.raises(InvalidInput) as caught:
        _config(transcription={"model": model}, turn_detection=turn)
    assert (caught.value.message, caught.value.param, caught.value.code) == (
        TURN_REFUSED, "session.audio.input.turn_detection", "invalid_value")
    # Once on the model, a later update that turns VAD back on is refused the same way.
    wire = merge_update(default_wire(), _update(transcription={"model": model}))
    with pytest.raises(InvalidInput) as again:
        build_config(merge_update(wire, _update(turn_detection=turn)), _resolver())
    assert again.value.message == TURN_REFUSED


@pytest.mark.parametrize("model", COMMIT_ONLY)
def test_naming_a_commit_only_model_turns_the_default_vad_off(model):
    """A session starts with server_vad: an update that names a commit-only model and says
    nothing of turn detection means the client commits (not a refusal of the default)."""
    config = _config(transcription={"model": model})
    assert config.turn is None
    assert config.wire()["audio"]["input"]["turn_detection"] is None
    assert _config(transcription={"model": model}, turn_detection=None).turn is None
    # Other models keep the session's VAD.
    assert _config(transcription={"model": "gpt-transcribe"}).turn is not None


def test_only_gpt_realtime_whisper_refuses_a_prompt():
    with pytest.raises(InvalidInput) as caught:
        _config(transcription={"model": "gpt-realtime-whisper", "prompt": "cards"})
    assert caught.value.param == f"{TRANSCRIPTION}.prompt"
    assert _config(transcription={"model": "gpt-live-transcribe", "prompt": "cards"}).prompt == "cards"


# -- languages: detection among the given ones -------------------------------------------


PROBABILITIES = (("en", 0.80), ("de", 0.10), ("fr", 0.05), ("nl", 0.02))


@pytest.mark.parametrize(("candidates", "chosen", "probability"), [
    ((), "en", 0.80),               # no restriction
    (("fr", "en"), "en", 0.80),     # the detected one is allowed
    (("fr", "de"), "de", 0.10),     # the most probable of the allowed ones, not the first
    (("nl", "fr"), "fr", 0.05),
    (("ja", "fr"), "fr", 0.05),     # one the detector did not list loses to one it did
    (("ja", "ko"), "ja", 0.0),      # none heard: the first given
])
def test_restrict_language_picks_the_most_probable_allowed_language(candidates, chosen, probability):
    info = restrict_language(DecodeInfo("en", 0.80, PROBABILITIES, prompt_tokens=3), candidates)
    assert (info.language, info.language_probability, info.prompt_tokens) == (chosen, probability, 3)


class _DetectingEngine:
    """A multilingual stand-in engine: hears `PROBABILITIES`, records the language it is
    asked to decode in."""

    model_id = "stand-in"
    capabilities = EngineCapabilities()

    def __init__(self) -> None:
        self.detections = 0
        self.decoded_in: list[str | None] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def detect_language(self, samples: np.ndarray) -> DecodeInfo:
        self.detections += 1
        return DecodeInfo("en", 0.8, PROBABILITIES)

    def transcribe(self, samples: np.ndarray, options: DecodeOptions):
        self.decoded_in.append(options.language)
        yield Segment(0, 0, 0.0, samples.size / SAMPLE_RATE, " Hallo.")


@pytest.mark.parametrize(("candidates", "language", "detections"), [
    ((), "en", 1), (("fr", "de"), "de", 1), (("fr",), "fr", 0)])
def test_decoding_detects_the_language_among_the_candidates(candidates, language, detections):
    engine = _DetectingEngine()
    block = AudioBlock(0, speech(CLIP, lead=0.2, tail=0.2), last=True)
    items = list(decode_blocks(engine, [block], DecodeOptions(language_candidates=candidates)))
    assert items[0].language == language
    assert engine.decoded_in and set(engine.decoded_in) == {language}
    assert engine.detections == detections  # one candidate alone is simply used


# -- keywords and delay reach the passes -------------------------------------------------


class _RecordingPasses(DecodePasses):
    """Stand-in passes: record every pass's DecodeOptions and answer with a fixed text."""

    def __init__(self) -> None:
        self.options: list[tuple[bool, DecodeOptions]] = []  # (optional, options)

    async def decode(self, model, samples, options, ctx, *, optional=False) -> PassDecode:
        self.options.append((optional, options))
        await asyncio.sleep(0.01)
        text = " ".join(["word"] * (samples.size // 4000 + 1)) + "."
        return PassDecode([Segment(0, 0, 0.0, samples.size / SAMPLE_RATE, " " + text)], "en", 0, 2)

    def waiting(self, model_id: str) -> bool:
        return False


def _session(passes: DecodePasses, initial: dict | None = None) -> TranscriptionSession:
    settings = Settings(stt_default_model="whisper-tiny.en")
    catalog = Catalog(settings)
    return TranscriptionSession(
        passes=passes, resolve_model=lambda name: resolve_model(catalog, settings, name),
        limits=SessionLimits(partial_interval=0.5), initial=initial or default_wire(),
    )


async def _stream_one_turn(session: TranscriptionSession, update: dict) -> list[dict]:
    session.start()
    assert (await session.outbox.get())["type"] == "session.created"
    session.receive(json.dumps({"type": "session.update", "session": update}))
    updated = await asyncio.wait_for(session.outbox.get(), 5)
    assert updated["type"] == "session.updated", updated
    events = [updated]
    # Two sentences in one turn (VAD silence 1.5 s); the worker runs between the appends.
    for append in chunks(pcm24(speech(CLIP, CLIP, gap=0.4, tail=2.0)), 4800):
        session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": append}))
        await asyncio.sleep(0.02)
    while not any(e["type"] == "conversation.item.done" for e in events):
        events.append(await asyncio.wait_for(session.outbox.get(), 10))
    await session.close()
    return events


VAD_1500 = {"type": "server_vad", "silence_duration_ms": 1500}


async def test_keywords_reach_every_pass_as_whisper_hotwords_and_languages_as_candidates():
    passes = _RecordingPasses()
    events = await _stream_one_turn(_session(passes), _update(
        turn_detection=VAD_1500,
        transcription={"model": "gpt-transcribe", "keywords": ["Dashwood", "Norland Park"],
                       "languages": ["en", "FR"]}))
    shown = events[0]["session"]["audio"]["input"]["transcription"]
    assert shown["keywords"] == ["Dashwood", "Norland Park"] and shown["languages"] == ["en", "FR"]
    kinds = {optional for optional, _ in passes.options}
    assert kinds == {True, False}  # live passes and the final one
    for _, options in passes.options:
        assert options.engine_options["hotwords"] == "Dashwood, Norland Park"
        assert options.language_candidates == ("en", "fr")
        # The Whisper engine's own knobs take them (faster-whisper's `hotwords=`).
        assert WhisperOptions.from_options(options).hotwords == "Dashwood, Norland Park"
    # Without keywords no hotwords are passed at all.
    plain = _RecordingPasses()
    await _stream_one_turn(_session(plain), _update(turn_detection=VAD_1500))
    assert plain.options and all("hotwords" not in o.engine_options for _, o in plain.options)
    assert all(o.language_candidates == () for _, o in plain.options)


async def test_delay_sets_the_audio_between_live_passes():
    counts = {}
    for delay in ("minimal", "xhigh"):
        passes = _RecordingPasses()
        session = _session(passes)
        await _stream_one_turn(session, _update(turn_detection=VAD_1500,
                                                transcription={"delay": delay}))
        assert session.pipeline._interval == int(DELAY_PARTIAL_INTERVAL[delay] * SAMPLE_RATE)
        counts[delay] = sum(1 for optional, _ in passes.options if optional)
    # About 5.5 s of turn: live passes every 0.3 s of new audio against every 2 s.
    assert counts["minimal"] >= 2 * counts["xhigh"] > 0, counts
    # Without `delay` the server's interval; an ephemeral secret's delay holds from the start.
    session = _session(_RecordingPasses())
    assert session.pipeline._interval == int(0.5 * SAMPLE_RATE)
    secret = merge_update(default_wire(), _update(transcription={"delay": "medium"}))
    assert _session(_RecordingPasses(), secret).pipeline._interval == int(0.8 * SAMPLE_RATE)


# -- through the official SDK ------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(realtime_max_sessions=4, preload=["whisper-tiny.en"]) as server:
        yield server.wait_ready(120)


@pytest.fixture(scope="module")
def sdk(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{live.base_url}/v1", api_key="k", max_retries=0) as client:
        yield client


def _close_enough(text: str) -> bool:
    return jiwer.wer(normalize(reference_texts()[CLIP]), normalize(text)) <= 0.3


NEW_FIELDS = {"model": "gpt-transcribe", "language": "en", "delay": "low",
              "keywords": ["Dashwood"], "languages": ["en", "de"]}


def test_sdk_sync_new_fields_are_accepted_echoed_and_transcribe(sdk):
    with sdk.realtime.connect(extra_query=INTENT) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(session=_update(transcription=NEW_FIELDS))
        updated = conn.recv()
        assert updated.type == "session.updated", updated
        shown = updated.session.audio.input.transcription
        assert (shown.delay, shown.keywords, shown.languages) == ("low", ["Dashwood"], ["en", "de"])
        for piece in chunks(pcm24(speech(CLIP, tail=1.5)), 48_000):
            conn.input_audio_buffer.append(audio=piece)
        events = []
        while not events or events[-1].type != "conversation.item.done":
            events.append(conn.recv())
    completed = next(e for e in events if e.type.endswith("transcription.completed"))
    assert _close_enough(completed.transcript), completed.transcript
    assert any(e.type == "input_audio_buffer.speech_started" for e in events)  # VAD still on


async def _commit_only_session(conn, model: str) -> list:
    """The refusal of turn detection, then one committed item of real speech; returns every
    event after the refusal."""
    assert (await conn.recv()).type == "session.created"
    await conn.session.update(session=_update(
        transcription={"model": model, "language": "en"},
        turn_detection={"type": "server_vad"}), event_id="evt_vad")
    refused = await asyncio.wait_for(conn.recv(), 30)
    assert refused.type == "error"
    assert (refused.error.message, refused.error.param, refused.error.code,
            refused.error.type, refused.error.event_id) == (
        TURN_REFUSED, "session.audio.input.turn_detection", "invalid_value",
        "invalid_request_error", "evt_vad")
    await conn.session.update(session=_update(transcription={"model": model, "language": "en"}))
    updated = await asyncio.wait_for(conn.recv(), 30)
    assert updated.type == "session.updated"
    assert updated.session.audio.input.turn_detection is None
    assert updated.session.audio.input.transcription.model == model
    # Speech with pauses around it: a VAD would cut a turn here; only the commit does.
    for piece in chunks(pcm24(speech(CLIP, lead=1.0, tail=1.5)), 9600):
        await conn.input_audio_buffer.append(audio=piece)
    await asyncio.sleep(0.3)
    await conn.input_audio_buffer.commit()
    events = [updated]
    while events[-1].type != "conversation.item.done":
        events.append(await asyncio.wait_for(conn.recv(), 60))
    return events


def _check_commit_only(events: list) -> None:
    kinds = [e.type for e in events]
    assert not [k for k in kinds if k.startswith("input_audio_buffer.speech_")], kinds
    assert kinds.count("input_audio_buffer.committed") == 1
    completed = next(e for e in events if e.type.endswith("transcription.completed"))
    assert _close_enough(completed.transcript), completed.transcript
    deltas = "".join(e.delta for e in events if e.type.endswith("transcription.delta"))
    assert deltas == completed.transcript


class _SyncAsAsync:
    """The sync SDK connection behind awaitables, so one script drives both clients."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.session = self
        self.input_audio_buffer = self

    async def recv(self):
        return self._conn.recv()

    async def update(self, **kwargs):
        self._conn.session.update(**kwargs)

    async def append(self, **kwargs):
        self._conn.input_audio_buffer.append(**kwargs)

    async def commit(self):
        self._conn.input_audio_buffer.commit()


@pytest.mark.parametrize("model", COMMIT_ONLY)
def test_sdk_sync_commit_only_models_refuse_vad_and_transcribe_on_commit(sdk, model):
    with sdk.realtime.connect(extra_query=INTENT) as conn:
        events = asyncio.run(_commit_only_session(_SyncAsAsync(conn), model))
    _check_commit_only(events)


@pytest.mark.parametrize("model", COMMIT_ONLY)
async def test_sdk_async_commit_only_models_refuse_vad_and_transcribe_on_commit(live, model):
    async with AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key="k", max_retries=0) as client:
        async with client.realtime.connect(extra_query=INTENT) as conn:
            events = await _commit_only_session(conn, model)
    _check_commit_only(events)


async def test_a_commit_only_session_streams_text_before_the_commit(live):
    """gpt-realtime-whisper's `delay` is the interval of live passes on the audio not yet
    committed: with real speech at real-time pace, deltas come before the client commits, and
    the commit's final pass completes the same text."""
    import time

    async with AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key="k", max_retries=0) as client:
        async with client.realtime.connect(extra_query=INTENT) as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session=_update(transcription={
                "model": "gpt-realtime-whisper", "language": "en", "delay": "minimal"}))
            assert (await asyncio.wait_for(conn.recv(), 30)).type == "session.updated"
            events: list = []

            async def read() -> None:
                while True:
                    events.append(await conn.recv())

            reader = asyncio.create_task(read())
            start = time.monotonic()
            for i, piece in enumerate(chunks(pcm24(speech(CLIP, lead=0.3, tail=0.5)), 4800)):
                await asyncio.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
                await conn.input_audio_buffer.append(audio=piece)
            before_commit = [e for e in events if e.type.endswith("transcription.delta")]
            await conn.input_audio_buffer.commit()
            deadline = time.monotonic() + 60
            while not any(e.type == "conversation.item.done" for e in events):
                assert time.monotonic() < deadline, [e.type for e in events]
                await asyncio.sleep(0.05)
            reader.cancel()
    assert before_commit, "no text streamed before the commit"
    kinds = [e.type for e in events]
    assert not [k for k in kinds if k.startswith("input_audio_buffer.speech_")], kinds
    completed = next(e for e in events if e.type.endswith("transcription.completed"))
    assert completed.item_id == before_commit[0].item_id
    deltas = "".join(e.delta for e in events if e.type.endswith("transcription.delta"))
    assert deltas == completed.transcript and _close_enough(completed.transcript)


async def test_sdk_async_new_fields_are_accepted_and_bad_ones_refused(live):
    async with AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key="k", max_retries=0) as client:
        async with client.realtime.connect(extra_query=INTENT) as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session=_update(
                transcription={**NEW_FIELDS, "model": "gpt-live-transcribe", "delay": "xhigh"}))
            updated = await asyncio.wait_for(conn.recv(), 30)
            assert updated.type == "session.updated"
            shown = updated.session.audio.input.transcription
            assert (shown.model, shown.delay, shown.keywords, shown.languages) == (
                "gpt-live-transcribe", "xhigh", ["Dashwood"], ["en", "de"])
            await conn.session.update(session=_update(transcription={"languages": ["en", "zz"]}))
            refused = await asyncio.wait_for(conn.recv(), 30)
            assert refused.type == "error"
            assert (refused.error.param, refused.error.code) == (f"{TRANSCRIPTION}.languages[1]",
                                                                 "invalid_value")


REALTIME_IDS = ("gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper")


def test_sdk_models_list_the_realtime_transcription_models(sdk):
    ids = [m.id for m in sdk.models.list()]
    assert set(REALTIME_IDS) <= set(ids) and len(ids) == len(set(ids))
    assert "whisper-1" in ids
    for name in REALTIME_IDS:
        model = sdk.models.retrieve(name)
        assert (model.id, model.object) == (name, "model")


async def test_sdk_async_models_list_the_realtime_transcription_models(live):
    async with AsyncOpenAI(base_url=f"{live.base_url}/v1", api_key="k", max_retries=0) as client:
        ids = [m.id async for m in client.models.list()]
        assert set(REALTIME_IDS) <= set(ids)
        assert (await client.models.retrieve("gpt-live-transcribe")).id == "gpt-live-transcribe"
