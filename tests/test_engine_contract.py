"""The contract every speech-to-text engine keeps (stt/engine.py), run against Whisper and
against a minimal second engine that exists only here. The second engine knows nothing of
Whisper (it "hears" loud stretches and names them), so the pipeline and the service passing
with it show they assume nothing beyond the protocol."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from conftest import MODEL_CACHE, audio_path
from joined_audio import english_clips, join_clips

from voxserve.audio.blocks import AudioBlock
from voxserve.audio.decode import SAMPLE_RATE, decode_audio
from voxserve.config import Settings
from voxserve.domain import Segment
from voxserve.errors import InvalidInput
from voxserve.runtime.catalog import Catalog, ModelSpec, PublicModel
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.scheduler import Scheduler, SchedulerConfig
from voxserve.stt.engine import (
    DecodeEnd,
    DecodeInfo,
    DecodeOptions,
    EngineCapabilities,
    SpeechToTextEngine,
    VadSettings,
)
from voxserve.stt.pipeline import decode_blocks
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import SpeechToText, StreamStart

FRAME = SAMPLE_RATE // 10  # 100 ms


class LoudnessEngine:
    """A stand-in engine: one segment per loud stretch, named by its number."""

    model_id = "loudness"
    capabilities = EngineCapabilities(
        languages=frozenset({"en", "fr"}), translation=False, word_timestamps=False,
        logprobs=False, prompt=False, language_detection_seconds=10, window_seconds=10,
    )

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def detect_language(self, samples: np.ndarray) -> DecodeInfo:
        return DecodeInfo("fr", 0.9, (("fr", 0.9), ("en", 0.1)))

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Iterator[Segment]:
        frames = samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME)
        loud = np.sqrt((frames**2).mean(axis=1)) > 0.01
        index, start = 0, None
        for i, is_loud in enumerate([*loud, False]):
            if is_loud and start is None:
                start = i
            elif not is_loud and start is not None:
                yield Segment(id=index, seek=start * 10, start=start / 10, end=i / 10,
                              text=f" stretch {index + 1}.")
                index, start = index + 1, None


@pytest.fixture(scope="module")
def whisper_engine():
    from voxserve.stt.whisper.loader import load_whisper

    settings = Settings(cache_dir=MODEL_CACHE, cpu_threads=2, hf_offline=True)
    return load_whisper(Catalog(settings).spec("whisper-tiny.en"), settings)


@pytest.fixture(params=["whisper", "loudness"])
def engine(request, whisper_engine) -> SpeechToTextEngine:
    return whisper_engine if request.param == "whisper" else LoudnessEngine()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return decode_audio(audio_path("audio_hello_world.mp3").read_bytes())


def test_it_is_an_engine(engine):
    assert isinstance(engine, SpeechToTextEngine)
    assert isinstance(engine.capabilities, EngineCapabilities)


def test_segments_are_ordered_and_within_the_audio(engine, speech):
    segments = list(engine.transcribe(speech, DecodeOptions(language="en")))
    duration = speech.size / SAMPLE_RATE
    assert segments and all(s.text.strip() for s in segments)
    assert all(0 <= s.start <= s.end <= duration + 0.5 for s in segments)
    assert [s.start for s in segments] == sorted(s.start for s in segments)


def test_tokens_are_counted(engine):
    assert engine.count_tokens("") == 0
    assert engine.count_tokens("hello there, world") > 0


def test_the_detected_language_is_one_it_transcribes(engine, speech):
    info = engine.detect_language(speech)
    assert engine.capabilities.transcribes(info.language)
    assert 0 <= info.language_probability <= 1


def test_the_pipeline_makes_times_absolute_across_blocks(engine, speech):
    pause = np.zeros(SAMPLE_RATE, dtype=np.float32)
    first = np.concatenate([speech, pause])
    blocks = [AudioBlock(0, first, last=False), AudioBlock(first.size, speech, last=True)]
    items = list(decode_blocks(engine, blocks, DecodeOptions()))
    assert isinstance(items[0], DecodeInfo) and isinstance(items[-1], DecodeEnd)
    segments = [i for i in items if isinstance(i, Segment)]
    assert [s.id for s in segments] == list(range(len(segments)))
    later = [s for s in segments if s.start >= first.size / SAMPLE_RATE - 0.2]
    assert later, "the second block's segments must be placed after the first block"
    # `seek`: where the window (or speech chunk) it was decoded in starts, in 10 ms frames;
    # a chunk may span the blocks (a block's last chunk is packed with the next block).
    assert [s.seek for s in segments] == sorted(s.seek for s in segments)
    assert all(s.seek <= round(s.start * 100) + 1 for s in segments)
    assert items[-1].duration == pytest.approx((first.size + speech.size) / SAMPLE_RATE)
    text = "".join(s.text for s in segments).strip()
    assert items[-1].output_tokens == engine.count_tokens(text)


def service_for(engine: SpeechToTextEngine) -> tuple[SpeechToText, PublicModel, ModelPool]:
    spec = ModelSpec(engine.model_id, "stt", "dir:/unused", engine="test")
    pool = ModelPool({"stt": lambda _spec: engine})
    scheduler = Scheduler(pool, SchedulerConfig(slots=1))
    public = PublicModel(spec.id, spec, "native", spec.created, spec.owned_by)
    return SpeechToText(Settings(), scheduler), public, pool


def test_the_service_runs_on_any_engine(engine):
    service, model, pool = service_for(engine)
    audio = audio_path("audio_hello_world.mp3").read_bytes()
    req = SpeechToTextRequest(task="transcribe", model=model, audio=audio,
                              response_format="verbose_json")

    async def run():
        items = [item async for item in service.decode(req)]
        return items, await service.transcribe(req)

    try:
        items, transcript = asyncio.run(run())
    finally:
        pool.close()
    assert isinstance(items[0], StreamStart) and isinstance(items[-1], DecodeEnd)
    assert transcript.text and transcript.duration == pytest.approx(items[-1].duration)
    assert transcript.output_tokens == engine.count_tokens(transcript.text)


def test_requests_beyond_an_engines_capabilities_are_refused():
    service, model, pool = service_for(LoudnessEngine())
    audio = audio_path("audio_hello_world.mp3").read_bytes()
    refusals = {
        "translate": dict(task="translate"),
        "language": dict(task="transcribe", language="de"),
        "word timestamps": dict(task="transcribe", response_format="verbose_json",
                                timestamp_granularities=frozenset({"word"})),
        "a prompt": dict(task="transcribe", prompt="Hello"),
    }
    try:
        for what, fields in refusals.items():
            req = SpeechToTextRequest(model=model, audio=audio, **fields)
            with pytest.raises(InvalidInput) as caught:
                asyncio.run(service.transcribe(req))
            assert caught.value.code == "unsupported_value", what
    finally:
        pool.close()


class RecordingEngine(LoudnessEngine):
    """The stand-in engine, recording what the pipeline hands it; the first two calls meet at
    a barrier, which breaks unless they run side by side."""

    capabilities = replace(LoudnessEngine.capabilities, parallel_chunks=3,
                           chunk_options={"knob": "chunk", "other": "chunk"})

    def __init__(self) -> None:
        self.calls: list[tuple[int, DecodeOptions]] = []
        self.met = threading.Barrier(2, timeout=60)
        self._lock = threading.Lock()  # the count is each call's own, whatever the threads do

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Iterator[Segment]:
        with self._lock:
            self.calls.append((samples.size, options))
            number = len(self.calls)
        if number <= 2 and not options.sequential:
            self.met.wait()
        yield from super().transcribe(samples, options)


@pytest.mark.parametrize("sequential", [False, True], ids=["chunked", "sequential"])
def test_the_pipeline_decodes_speech_chunks_side_by_side_or_blocks_whole(sequential):
    joined = join_clips(english_clips()[:6])  # about 40 s with 1.5 s pauses
    samples = decode_audio(joined.wav)
    engine = RecordingEngine()
    vad = VadSettings(silence_duration_ms=300)
    options = DecodeOptions(prompt="Before.", sequential=sequential, chunking=vad,
                            engine_options={"knob": "request"})
    items = list(decode_blocks(engine, [AudioBlock(0, samples, last=True)], options))
    segments = [i for i in items if isinstance(i, Segment)]
    sizes = [size for size, _ in engine.calls]
    if sequential:  # one call on the whole block, the request's options untouched
        assert sizes == [samples.size] and engine.calls[0][1].chunking == vad
        assert engine.calls[0][1].engine_options == {"knob": "request"}
    else:
        window = engine.capabilities.window_seconds * SAMPLE_RATE
        assert len(sizes) >= 4 and max(sizes) <= window
        assert sum(sizes) < samples.size - 6 * SAMPLE_RATE  # the pauses are not decoded
        assert [o.prompt for _, o in engine.calls] == ["Before."] + [None] * (len(sizes) - 1)
        for _, called in engine.calls:  # the request's knobs over the engine's chunk defaults
            assert called.engine_options == {"knob": "request", "other": "chunk"}
            assert called.chunking is None and called.language == "fr"
    assert [s.id for s in segments] == list(range(len(segments)))
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and len(segments) >= 6
    for name, placed in joined.placements:  # every clip heard at its place in the file
        assert any(placed - 0.5 <= s.start <= placed + 1.5 for s in segments), name


def test_whisper_decodes_plain_text_when_no_segment_times_are_read(whisper_engine):
    """Without segment times a stretch within one window comes back as one segment of plain
    text (no timestamp tokens in it), the same words as the timestamped decode."""
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    speech = decode_audio(audio_path("beckett.wav").read_bytes())
    timed = list(whisper_engine.transcribe(speech, DecodeOptions(language="en")))
    plain = list(whisper_engine.transcribe(
        speech, DecodeOptions(language="en", segment_times=False)))
    assert len(plain) == 1 and plain[0].end == pytest.approx(speech.size / SAMPLE_RATE, 0.05)
    special = whisper_engine._model.hf_tokenizer.token_to_id("<|endoftext|>")
    assert plain[0].tokens and all(t < special for t in plain[0].tokens)  # timestamps are above
    assert any(t >= special for s in timed for t in s.tokens)
    assert normalize(plain[0].text) == normalize("".join(s.text for s in timed))


def test_a_plain_decode_that_stops_early_is_done_again_with_timestamps(whisper_engine,
                                                                      monkeypatch):
    speech = decode_audio(audio_path("beckett.wav").read_bytes())
    calls = []
    decode = whisper_engine._decode

    def stopping_early(samples, options, knobs):
        calls.append(knobs.without_timestamps)
        segments = list(decode(samples, options, knobs))
        if knobs.without_timestamps:  # like Whisper now and then: the first word, then EOT
            return iter([replace(segments[0], text=" Ever", tokens=segments[0].tokens[:1])])
        return iter(segments)

    monkeypatch.setattr(whisper_engine, "_decode", stopping_early)
    segments = list(whisper_engine.transcribe(
        speech, DecodeOptions(language="en", segment_times=False)))
    assert calls == [True, False]
    assert len(" ".join(s.text for s in segments).split()) > 5


def test_the_encoder_memo_hands_a_kept_encoding_to_its_next_use_only():
    from voxserve.stt.whisper.encoder_memo import EncoderMemo

    encoded = []
    memo = EncoderMemo(lambda f: encoded.append(f.copy()) or f.sum(), capacity=2)
    a, b, c = (np.full((80, 3000), v, np.float32) for v in (1.0, 2.0, 3.0))
    memo(a)
    memo(a)  # not kept: encoded again
    assert len(encoded) == 2 and memo.hits == 0
    with memo.keeping():
        memo(a)
    assert memo(a.copy()) == a.sum()  # equal bytes, not the same object: the kept output
    assert len(encoded) == 3 and memo.hits == 1
    memo(a)  # used once, forgotten: a later request sending the same audio encodes it
    assert len(encoded) == 4
    with memo.keeping():
        memo(a), memo(b), memo(c)  # a is the oldest of three: forgotten
    memo(a), memo(b), memo(c[:, :1500])  # a different shape is a different window
    assert len(encoded) == 9 and memo.hits == 2


def test_a_short_input_of_unknown_language_is_encoded_once():
    """Detecting the language and decoding the one speech chunk share the chunk's encoding
    (real whisper-base on 12 s of French): the same text as with the language given, for one
    encoder pass instead of two."""
    from voxserve.stt.whisper.loader import load_whisper

    settings = Settings(cache_dir=MODEL_CACHE, cpu_threads=2, hf_offline=True)
    engine = load_whisper(Catalog(settings).spec("whisper-base"), settings)
    memo = engine._model.encode
    encodes = []
    encode = memo._encode
    memo._encode = lambda features: encodes.append(1) or encode(features)
    french = decode_audio(audio_path("audio_french.wav").read_bytes())[: 12 * SAMPLE_RATE]
    options = DecodeOptions(task="translate", segment_times=False)

    def run(language: str | None) -> tuple[str, str]:
        items = list(decode_blocks(engine, [AudioBlock(0, french, last=True)],
                                   replace(options, language=language)))
        info = next(i for i in items if isinstance(i, DecodeInfo))
        return info.language, "".join(i.text for i in items if isinstance(i, Segment))

    detected, text = run(None)
    assert detected == "fr" and len(encodes) == 1 and memo.hits == 1
    assert run("fr") == ("fr", text)
