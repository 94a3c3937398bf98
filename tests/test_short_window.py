"""Short encoder windows (stt/whisper/short_window.py): a live pass encodes its own audio and
5 s of padding instead of a 30 s window, and says (nearly) the same words."""

from __future__ import annotations

import threading
from contextlib import nullcontext

import jiwer
import numpy as np
from conftest import MODEL_CACHE, audio_path
from whisper_normalizer.english import EnglishTextNormalizer

from voxserve.audio.decode import decode_audio
from voxserve.config import Settings
from voxserve.runtime.catalog import Catalog
from voxserve.stt.engine import DecodeOptions
from voxserve.stt.whisper.loader import load_whisper
from voxserve.stt.whisper.short_window import PADDING_FRAMES, ShortWindows, trimmed


def test_the_padding_is_trimmed_to_three_seconds_in_whole_seconds():
    features = np.zeros((1, 80, 3000), np.float32)
    features[..., :432] = 0.5  # 4.32 s of content
    assert trimmed(features).shape == (1, 80, 1000)  # 432 + 500, rounded up to 100s
    assert trimmed(np.ones((80, 3000), np.float32)).shape == (80, 3000)  # a full window
    assert trimmed(np.zeros((80, 3000), np.float32)).shape == (80, 600)  # silence: 1 + 500


def test_only_the_thread_that_asked_gets_short_windows():
    seen: list[int] = []
    windows = ShortWindows(lambda f: seen.append(f.shape[-1]))
    features = np.zeros((80, 3000), np.float32)
    features[:, :100] = 1.0
    with windows.trimming():
        windows(features)
        other = threading.Thread(target=windows, args=(features,))
        other.start()
        other.join()
    windows(features)
    assert seen == [100 + PADDING_FRAMES, 3000, 3000]


def test_a_short_window_pass_says_what_the_full_window_says():
    settings = Settings(cache_dir=MODEL_CACHE)
    spec = Catalog(settings).resolve("whisper-tiny.en").spec
    engine = load_whisper(spec, settings)
    frames: list[int] = []
    windows = engine._model.short_windows
    inner = windows._encode
    windows._encode = lambda f: frames.append(f.shape[-1]) or inner(f)
    samples = decode_audio(audio_path("sense_and_sensibility_01_austen_64kb-0870.wav").read_bytes())
    normalize = EnglishTextNormalizer()
    texts = {}
    options = DecodeOptions(language="en", engine_options={
        "beam_size": 5, "condition_on_previous_text": False})
    for short in (False, True):
        frames.clear()
        with engine.short_windows() if short else nullcontext():
            texts[short] = normalize("".join(
                s.text for s in engine.transcribe(samples, options)))
        assert frames and all(f == (3000 if not short else frames[0]) for f in frames)
    assert frames[0] < 3000  # the short pass encoded fewer frames
    # tiny.en drops the clip's leading "And" in the short window: one word of 22.
    assert jiwer.wer(texts[False], texts[True]) <= 0.05 and "dashwood" in texts[True]


async def test_a_sessions_pass_encodes_short_windows_in_every_thread_it_uses():
    """A live pass through the scheduler (ScheduledPasses, as a session runs it): its speech
    chunks are decoded in threads of the pipeline's own, its language detection in the
    lease's; every encode is short. (A flag set in one thread only once let the chunks
    encode 30 s windows.)"""
    from voxserve.realtime.models import resolve_model
    from voxserve.realtime.transcriber import PassDecoder, PassOptions
    from voxserve.services import build_services

    settings = Settings(cache_dir=MODEL_CACHE, stt_default_model="whisper-base")
    services = build_services(settings)
    try:
        model = resolve_model(services.catalog, settings, "whisper-base")
        engine = await services.pool.acquire(model.spec)
        services.pool.release(model.spec.id)
        frames: list[int] = []
        windows = engine._model.short_windows
        inner = windows._encode
        windows._encode = lambda f: frames.append(f.shape[-1]) or inner(f)

        async def gone() -> bool:
            return False

        samples = decode_audio(audio_path("arctic_a0007.wav").read_bytes())
        decoder = PassDecoder(services.passes, model, "sess_test", gone)
        # Language given (no detection: the chunk thread's own encode) and detected.
        for options in (PassOptions(language="en"), PassOptions()):
            frames.clear()
            result = await decoder.run(samples, options, final=True)
            assert "superlative" in "".join(p.text for p in result.pieces).lower()
            assert frames and max(frames) < 3000, (options, frames)
    finally:
        services.close()
