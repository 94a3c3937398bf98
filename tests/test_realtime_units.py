"""The realtime parts that need no model: audio input, streaming VAD, turn detection, the
agreement between live passes, the session's buffer limit, and speaker segments cut from a
transcript."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from realtime_audio import chunks, g711, pcm24, speech

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.audio.vad import StreamingVad
from voxserve.config import Settings
from voxserve.diarize.pipeline import Turn
from voxserve.domain import Segment, Word
from voxserve.errors import InvalidInput
from voxserve.realtime.audio_in import AudioInput, InputFormat
from voxserve.realtime.models import resolve_model
from voxserve.realtime.session import SessionLimits, TranscriptionSession
from voxserve.realtime.session_config import build_config, default_wire, merge_update
from voxserve.realtime.speakers import SessionSpeakers
from voxserve.realtime.transcriber import Agreement, join, pieces_of
from voxserve.realtime.turns import (
    FRAME,
    IdleTimeout,
    TurnConfig,
    TurnCut,
    TurnDetector,
    TurnStarted,
    TurnStopped,
)
from voxserve.runtime.catalog import Catalog
from voxserve.stt.passes import DecodePasses, PassDecode

FPS = SAMPLE_RATE / FRAME  # frames per second


@pytest.mark.parametrize("kind", ["audio/pcmu", "audio/pcma"])
def test_g711_decodes_to_the_signal_it_encodes(kind):
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    decoded = AudioInput(InputFormat(kind)).push(g711(tone, kind))
    assert abs(decoded.size - tone.size) < 64
    a = tone[1000:15000]
    lag = max(range(-40, 40), key=lambda k: float(np.dot(decoded[1000 + k : 15000 + k], a)))
    error = decoded[1000 + lag : 15000 + lag] - a
    snr = 10 * np.log10(np.sum(a**2) / np.sum(error**2))
    assert snr > 25  # G.711's 8-bit companding: about 35 dB on a tone


def test_pcm_chunks_of_any_size_decode_as_one():
    data = (np.sin(np.arange(24_000) / 10) * 8000).astype("<i2").tobytes()
    whole = AudioInput(InputFormat()).push(data)
    odd = AudioInput(InputFormat())
    parts = [odd.push(data[i : i + 333]) for i in range(0, len(data), 333)]
    assert np.allclose(np.concatenate(parts), whole[: sum(p.size for p in parts)], atol=1e-6)


def test_streaming_vad_does_not_depend_on_chunking():
    clip = speech("cards_005.wav")
    whole = StreamingVad().push(clip)
    vad = StreamingVad()
    parts = np.concatenate([vad.push(clip[i : i + 1234]) for i in range(0, clip.size, 1234)])
    assert np.allclose(parts, whole, atol=1e-5)
    assert whole.max() > 0.9 and whole[:5].max() < 0.5  # speech found, leading silence not


def frames(*spans: tuple[float, float]) -> np.ndarray:
    """Frame probabilities: (seconds, probability) spans in order."""
    return np.concatenate([np.full(round(s * FPS), p, dtype=np.float32) for s, p in spans])


def test_server_vad_turn_has_padding_and_ends_after_the_silence():
    detector = TurnDetector(TurnConfig(prefix_padding_ms=300, silence_duration_ms=500), 28 * SAMPLE_RATE)
    events = detector.push(frames((1.0, 0.1), (2.0, 0.9), (1.0, 0.1)))
    assert [type(e) for e in events] == [TurnStarted, TurnStopped]
    onset = round(1.0 * FPS) * FRAME
    assert events[0].start == onset - 300 * SAMPLE_RATE // 1000
    speech_end = onset + round(2.0 * FPS) * FRAME
    assert 0.5 * SAMPLE_RATE <= events[1].end - speech_end < 0.5 * SAMPLE_RATE + 2 * FRAME


def test_idle_timeout_fires_after_that_much_silence():
    detector = TurnDetector(TurnConfig(idle_timeout_ms=5000), 28 * SAMPLE_RATE)
    events = detector.push(frames((11.0, 0.0)))
    assert [type(e) for e in events] == [IdleTimeout, IdleTimeout]
    assert events[0].end - events[0].start >= 5 * SAMPLE_RATE


@pytest.mark.parametrize(("eagerness", "ended", "wait"), [
    ("high", False, 2.0), ("low", False, 8.0), ("auto", False, 4.0), ("high", True, 0.3),
])
def test_semantic_vad_waits_by_eagerness_and_less_after_a_sentence(eagerness, ended, wait):
    detector = TurnDetector(TurnConfig(type="semantic_vad", eagerness=eagerness),
                            28 * SAMPLE_RATE, sentence_ended=lambda: ended)
    events = detector.push(frames((0.5, 0.0), (1.0, 0.9), (wait - 0.1, 0.0)))
    assert [type(e) for e in events] == [TurnStarted]
    assert [type(e) for e in detector.push(frames((0.2, 0.0)))] == [TurnStopped]


def test_a_turn_longer_than_the_window_is_cut_at_its_quietest_frame():
    detector = TurnDetector(TurnConfig(), 28 * SAMPLE_RATE)
    probs = frames((0.5, 0.0), (40.0, 0.9))
    dip = round((0.5 + 22.0) * FPS)
    probs[dip] = 0.4  # a short pause between words, too short to end the turn
    events = detector.push(probs)
    assert [type(e) for e in events] == [TurnStarted, TurnCut]
    assert events[1].at == dip * FRAME


def pieces(text: str):
    return pieces_of([Segment(0, 0, 0.0, 1.0, " " + text)], tokens=False)


def test_an_utterances_first_words_wait_for_three_passes_that_agree():
    """Two passes over a turn's first second agreed on "How do you marry" for "Had he
    married"; the third, with more audio, heard it right. The first words wait for three."""
    agreement = Agreement()
    assert agreement.update(pieces("How do you marry the")) == []
    assert agreement.update(pieces("How do you marry the amiable")) == []
    assert agreement.update(pieces("Had he married a more amiable woman")) == []
    sent = agreement.update(pieces("Had he married a more amiable woman he might"))
    assert join(sent) == ""  # two of the last three disagree still
    sent = agreement.update(pieces("Had he married a more amiable woman he might have"))
    assert join(sent) == "Had he married a more amiable woman"  # what all three say
    # After the first words, two passes suffice.
    assert join(agreement.update(pieces(
        "Had he married a more amiable woman he might have been made"))) == " he might have"


def test_agreement_sends_only_what_two_passes_agree_on_and_never_retracts():
    agreement = Agreement()
    passes = [
        "And Mr. John.", "Mr. John Dashwood.", "Mr. John Dashwood had that",
        "Mr. John Dashwood had then leisure to...", "And Mr. John Dashwood had then leisure to consider how.",
    ]
    sent = []
    for text in passes:
        new = agreement.update(pieces(text))
        sent.append(join(new))
    assert sent[:2] == ["", ""]  # nothing is sent before two passes agree
    assert "".join(sent).startswith("Mr. John")
    rest = agreement.finish(pieces("And Mr. John Dashwood had then leisure to consider how much."))
    assert "".join(sent) + join(rest) == agreement.text
    assert agreement.text.endswith("consider how much.")
    assert agreement.text.count("Dashwood") == 1  # the rewritten start neither lost nor doubled


async def test_a_full_buffer_is_refused_with_an_error_and_the_session_goes_on():
    settings = Settings(stt_default_model="whisper-tiny.en")
    catalog = Catalog(settings)
    session = TranscriptionSession(  # no audio is committed: no decoder needed
        passes=None, resolve_model=lambda name: resolve_model(catalog, settings, name),
        limits=SessionLimits(max_buffer_seconds=1.0), initial=default_wire(),
    )
    session.start()
    assert (await session.outbox.get())["type"] == "session.created"
    session.receive(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {"turn_detection": None}}}}))
    assert (await session.outbox.get())["type"] == "session.updated"
    second = base64.b64encode(bytes(48_000)).decode()  # one second at 24 kHz
    for event_id in ("a1", "a2"):
        session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": second,
                                    "event_id": event_id}))
    error = (await asyncio.wait_for(session.outbox.get(), 5))["error"]
    assert error["code"] == "input_audio_buffer_full" and error["event_id"] == "a2"
    session.receive(json.dumps({"type": "input_audio_buffer.clear"}))
    assert (await session.outbox.get())["type"] == "input_audio_buffer.cleared"
    await session.close()


def _resolver():
    settings = Settings(stt_default_model="whisper-tiny.en", aliases={"gpt-live-transcribe": "whisper-base"})
    catalog = Catalog(settings)
    return lambda name: resolve_model(catalog, settings, name)


@pytest.mark.parametrize(("name", "served"), [
    ("whisper-1", "whisper-tiny.en"), ("gpt-4o-mini-transcribe-2025-12-15", "whisper-tiny.en"),
    ("gpt-transcribe", "whisper-tiny.en"), ("gpt-live-transcribe", "whisper-base"),
    ("whisper-base", "whisper-base"),
])
def test_realtime_model_names_map_onto_served_models(name, served):
    config = build_config(merge_update(default_wire(), {
        "type": "transcription", "audio": {"input": {"turn_detection": None,
                                                     "transcription": {"model": name}}}}), _resolver())
    assert config.model.spec.id == served and config.wire()["audio"]["input"]["transcription"]["model"] == name


def test_gpt_realtime_whisper_keeps_openai_rules():
    resolve = _resolver()
    with pytest.raises(InvalidInput) as vad:
        build_config(merge_update(default_wire(), {"type": "transcription", "audio": {"input": {
            "turn_detection": {"type": "server_vad"},
            "transcription": {"model": "gpt-realtime-whisper"}}}}), resolve)
    assert vad.value.param == "session.audio.input.turn_detection"
    with pytest.raises(InvalidInput) as prompt:
        build_config(merge_update(default_wire(), {"type": "transcription", "audio": {"input": {
            "turn_detection": None, "transcription": {"model": "gpt-realtime-whisper", "prompt": "x"}}}}),
            resolve)
    assert prompt.value.param == "session.audio.input.transcription.prompt"


def test_updates_are_partial_and_unknown_fields_are_named():
    resolve = _resolver()
    wire = merge_update(default_wire(), {"type": "transcription", "audio": {"input": {
        "transcription": {"language": "en"}}}})
    wire = merge_update(wire, {"audio": {"input": {"transcription": {"prompt": "cards"}}}})
    config = build_config(wire, resolve)
    assert (config.language, config.prompt, config.model.id) == ("en", "cards", "whisper-1")
    assert config.turn is not None and config.turn.type == "server_vad"
    with pytest.raises(InvalidInput) as unknown:
        build_config(merge_update(wire, {"audio": {"input": {"volume": 3}}}), resolve)
    assert unknown.value.code == "unknown_parameter" and unknown.value.param == "session.audio.input.volume"


WORDS = (Word(" Hello.", 0.2, 0.6), Word(" Hi", 1.2, 1.4), Word(" there,", 1.4, 1.7),
         Word(" friend.", 1.7, 2.1))
TURNS = [Turn(0.1, 0.9, "A"), Turn(1.1, 2.3, "B")]


@pytest.mark.parametrize(("transcript", "first"), [
    ("Hello. Hi there, friend.", "Hello."),  # the final pass's words
    ("Hello. Hi there friend!", "Hello."),  # the deltas spelt a word or two differently
    # A live pass's word that the final pass did not keep: the previous word's speaker.
    ("Hello. Oh, hi there, friend.", "Hello. Oh,"),
])
def test_speaker_segments_cut_the_transcript_itself(transcript, first):
    speakers = SessionSpeakers(passes=None, diarizer=None, session_gone=None)  # segments need no model
    segments = speakers.segments(transcript, WORDS, TURNS, samples=3 * SAMPLE_RATE)
    assert "".join(s.text for s in segments) == transcript
    assert [s.speaker for s in segments] == ["A", "B"]
    assert segments[0].text == first
    assert (segments[0].start, segments[0].end) == (0.2, 0.6)
    assert segments[1].end == 2.1
    assert speakers.last == "B"


def test_a_turn_without_speaker_turns_is_the_speaker_heard_last():
    speakers = SessionSpeakers(passes=None, diarizer=None, session_gone=None)
    first = speakers.segments("Hello.", WORDS[:1], [], samples=SAMPLE_RATE)
    assert [(s.speaker, s.text) for s in first] == [("A", "Hello.")]
    speakers.segments("Hi there, friend.", WORDS[1:], TURNS, samples=3 * SAMPLE_RATE)
    short = speakers.segments("Yes.", (Word(" Yes.", 0.1, 0.3),), [], samples=SAMPLE_RATE)
    assert [(s.speaker, s.text, s.start, s.end) for s in short] == [("B", "Yes.", 0.1, 0.3)]
    assert speakers.segments("", (), [], samples=SAMPLE_RATE) == []


class _NumberingPasses(DecodePasses):
    """A stand-in for the decode passes: every pass "hears" how many samples it was given, so
    the transcript tells which decode became the item's."""

    def __init__(self) -> None:
        self.finals: list[int] = []  # sizes of the final decodes started

    async def decode(self, model, samples, options, ctx, *, optional=False) -> PassDecode:
        if options.engine_options["beam_size"] > 1:
            self.finals.append(samples.size)
        await asyncio.sleep(0.02)
        text = f" Heard {samples.size}."
        return PassDecode([Segment(0, 0, 0.0, samples.size / SAMPLE_RATE, text)], "en", 0, 2)

    def waiting(self, model_id: str) -> bool:
        return False


async def test_the_final_pass_starts_in_a_pause_and_is_dropped_if_the_speaker_goes_on():
    settings = Settings(stt_default_model="whisper-tiny.en")
    catalog = Catalog(settings)
    passes = _NumberingPasses()
    session = TranscriptionSession(
        passes=passes, resolve_model=lambda name: resolve_model(catalog, settings, name),
        limits=SessionLimits(partial_interval=600.0), initial=default_wire(),  # no live passes
    )
    session.start()
    session.receive(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {"turn_detection": {
            "type": "server_vad", "silence_duration_ms": 1500}}}}}))
    # Two sentences 0.4 s apart (with the clips' own quiet edges, under 1.5 s): one turn.
    samples = speech("arctic_a0007.wav", "arctic_a0007.wav", gap=0.4, tail=2.5)
    events = []
    for append in chunks(pcm24(samples), 4800):  # 100 ms each, the worker runs in between
        session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": append}))
        await asyncio.sleep(0.03)
    while not any(e["type"].endswith(".completed") for e in events):
        events.append(await asyncio.wait_for(session.outbox.get(), 10))
    await session.close()
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    committed = (stopped["audio_end_ms"] - started["audio_start_ms"]) * SAMPLE_RATE // 1000
    completed = next(e for e in events if e["type"].endswith(".completed"))
    heard = int(completed["transcript"].split()[-1].rstrip("."))
    # The decode started in the pause between the sentences was dropped when speech went on;
    # the item's is the one started once the second sentence ended, before the turn did.
    assert len(passes.finals) >= 2 and passes.finals[0] < committed / 2
    assert committed - 1.5 * SAMPLE_RATE < heard < committed
    assert sum(1 for e in events if e["type"] == "input_audio_buffer.committed") == 1


async def test_a_live_pass_waits_while_a_final_pass_or_another_live_pass_is_under_way():
    """The scheduler's slots outnumber the cores, so the passes themselves keep live text
    from competing with final passes: a seam test with a scheduler stand-in whose admission
    blocks until released."""
    from contextlib import asynccontextmanager

    from voxserve.runtime.context import RequestContext
    from voxserve.stt.passes import ScheduledPasses

    gate = asyncio.Event()

    class Holding:
        def queued(self, model_id: str) -> int:
            return 0

        @asynccontextmanager
        async def admit(self, spec, ctx, *, live=False):
            await gate.wait()
            raise RuntimeError("admitted")  # the pass itself is not this test's business
            yield

    settings = Settings()
    model = resolve_model(Catalog(settings), settings, "whisper-1")
    passes = ScheduledPasses(Holding())  # type: ignore[arg-type]
    model_id = model.spec.id
    assert passes.optional_may_start(model_id)
    for optional in (False, True):
        task = asyncio.ensure_future(passes.decode(model, np.zeros(1), None, RequestContext(),
                                                   optional=optional))
        await asyncio.sleep(0)
        assert not passes.optional_may_start(model_id)
        assert passes.optional_may_start("another-model")
        gate.set()
        with pytest.raises(RuntimeError, match="admitted"):
            await task
        gate.clear()
        assert passes.optional_may_start(model_id)


class _Speech:
    """A stand-in speech service: each text is "spoken" as one chunk of its UTF-8 bytes."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def open(self, request, ctx):
        self.texts.append(request.input)

        async def chunks():
            yield request.input.encode()

        return type("Stream", (), {"chunks": chunks()})()


async def test_a_phrase_is_translated_in_the_pause_and_spoken_lead_first():
    """The translation starts 200 ms into a pause; when the speaker goes on it is dropped,
    when the phrase then ends it is the phrase's (one decode, finished before the VAD's
    500 ms); the English text is spoken opening clause first."""
    from voxserve.realtime.translation import TranslationSession
    from voxserve.realtime.translation_config import resolve_translation_models
    from voxserve.tts.models import register_speech_models

    settings = Settings()
    catalog = Catalog(settings)
    register_speech_models(catalog, settings)

    class Translating(_NumberingPasses):
        async def decode(self, model, samples, options, ctx, *, optional=False) -> PassDecode:
            self.finals.append(samples.size)
            await asyncio.sleep(0.02)
            text = f" Heard {samples.size} samples, which is a sentence long enough to cut."
            return PassDecode([Segment(0, 0, 0.0, 1.0, text)], "fr", 0, 9)

    passes, tts = Translating(), _Speech()
    session = TranslationSession(
        passes, tts, resolve_translation_models(catalog, settings, "whisper-base>piper"),
        lambda name: resolve_model(catalog, settings, name), SessionLimits(), "alloy", {},
    )
    session.start()
    # Two sentences 0.35 s apart (longer than 200 ms, shorter than the VAD's 500 ms): one
    # phrase. (The clip's speech is 0.4-3.5 s of its 4 s.)
    sentence = speech("arctic_a0007.wav", lead=0, tail=0)[int(0.4 * SAMPLE_RATE):
                                                          int(3.5 * SAMPLE_RATE)]
    silence = np.zeros(int(0.35 * SAMPLE_RATE), np.float32)
    samples = np.concatenate([silence, sentence, silence, sentence, silence * 5])
    events = []
    for append in chunks(pcm24(samples), 4800):  # 100 ms each
        session.receive(json.dumps({"type": "session.input_audio_buffer.append",
                                    "audio": append}))
        await asyncio.sleep(0.03)
        while not session.outbox.empty():
            events.append(session.outbox.get_nowait())
    session.receive(json.dumps({"type": "session.close"}))
    while not events or events[-1] and events[-1]["type"] != "session.closed":
        events.append(await asyncio.wait_for(session.outbox.get(), 10))
    await session.close()
    texts = [e for e in events if e["type"] == "session.output_transcript.delta"]
    assert len(texts) == 1
    phrase = texts[0]["elapsed_ms"] * SAMPLE_RATE // 1000  # where the phrase ended
    heard = int(texts[0]["delta"].split()[1])
    # The decode started in the pause between the sentences was dropped; the phrase's was
    # started on its audio less the VAD's silence, and no decode followed.
    assert len(passes.finals) == 2 and passes.finals[0] < heard
    assert phrase - 0.6 * SAMPLE_RATE < heard < phrase - 0.2 * SAMPLE_RATE
    assert tts.texts == [f"Heard {heard} samples,", "which is a sentence long enough to cut."]
    spoken = b"".join(base64.b64decode(e["delta"]) for e in events
                      if e["type"] == "session.output_audio.delta")
    assert spoken.decode() == "".join(tts.texts)


def test_the_lead_of_a_text_ends_at_a_clause_or_a_word():
    from voxserve.tts.text import split_lead

    assert split_lead("Short one.") == ("Short one.", "")
    assert split_lead("We distribute as much as the free software, the code source for the "
                      "model.") == ("We distribute as much as the free software,",
                                    "the code source for the model.")
    lead, rest = split_lead("Westburg is a systematic reconnaissance system of the word "
                            "trained on 680,000 hours of data.")
    assert lead == "Westburg is a systematic reconnaissance system of the word"
    assert rest == "trained on 680,000 hours of data."


def _session_with_worker(work):
    """A bare live session whose one worker (beside ingest) is `work(session)`."""
    from dataclasses import dataclass, field

    from voxserve.realtime.session_base import SessionBase

    @dataclass
    class OneWorker(SessionBase):
        limits: SessionLimits = field(default_factory=SessionLimits)

        def session_object(self) -> dict:
            return {"id": self.id}

        def _workers_to_start(self):
            return [("worker", work(self))]

    return OneWorker()


async def test_close_stops_a_worker_that_lost_its_cancellation():
    """A worker can lose a cancellation in code we do not own (asyncio.wait_for before
    Python 3.12); `close` cancels it again, so the session is still released."""

    async def stubborn(session) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # lost, as wait_for loses it when its future completes at that moment
        await asyncio.Event().wait()  # then waits for input that never comes

    session = _session_with_worker(stubborn)
    session.start()
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(session.close())
    done, _ = await asyncio.wait({closing}, timeout=10)
    assert closing in done, "close() still waits for the worker"
    closing.result()


async def test_a_worker_that_dies_ends_the_session_with_an_error_and_close_1011(caplog):
    """A bug in a worker must not leave a session open with nothing decoding: the client
    gets `server_error`, the log has it at ERROR with the session id, the close code is one
    the SDK reconnects after."""

    async def broken(session) -> None:
        raise RuntimeError("a bug")

    session = _session_with_worker(broken)
    with caplog.at_level("ERROR", logger="voxserve.realtime"):
        session.start()
        await asyncio.wait_for(session.ended.wait(), 5)
    events = [session.outbox.get_nowait() for _ in range(2)]
    assert [e["type"] for e in events] == ["session.created", "error"]
    assert events[1]["error"]["type"] == "server_error"
    assert session.outbox.close_code == 1011
    assert any(session.id in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    await session.close()


def test_a_refused_append_leaves_no_trace_in_the_resampler():
    """An append the buffer cannot take is refused before the stateful resampler sees it:
    the accepted appends decode exactly as if the refused one had never been sent."""
    from voxserve.realtime.segmenter import Segmenter

    audio = pcm24(speech("arctic_a0007.wav"))
    # 1 s, then 2 s (refused), then what follows (24 kHz PCM16: 48,000 bytes a second)
    first, refused, rest = audio[:48_000], audio[48_000:144_000], audio[144_000:]

    def segmenter() -> Segmenter:
        return Segmenter(InputFormat(), None, max_turn_samples=10**9,
                         max_buffer_samples=int(2.5 * SAMPLE_RATE), full_message="full")

    tested = segmenter()  # no turn detection: the buffer only
    tested.push(first)
    with pytest.raises(InvalidInput):
        tested.push(refused)  # 1 s + 2 s > 2.5 s
    tested.push(rest[:24_000])
    reference = AudioInput(InputFormat())
    expected = np.concatenate([reference.push(first), reference.push(rest[:24_000])])
    got = tested.audio_since(0)
    assert got.size == expected.size and np.allclose(got, expected)
