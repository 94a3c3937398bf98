"""Long inputs: bounded blocks, chunking strategies, absolute timestamps, no lost or doubled
words at boundaries, no invented text on non-speech, language detection past silence."""

from __future__ import annotations

import tracemalloc

import httpx
import jiwer
import numpy as np
import pytest
from conftest import LiveServer, audio_path, reference_texts
from joined_audio import english_clips, join_clips, wav_bytes
from whisper_normalizer.english import EnglishTextNormalizer

from voxserve.audio.blocks import cut_blocks
from voxserve.audio.decode import SAMPLE_RATE, decode_audio, open_audio

normalize = EnglishTextNormalizer()


@pytest.fixture(scope="module")
def short_blocks_server():
    """Blocks of 60 s, so a few minutes of audio crosses several block boundaries."""
    with LiveServer(block_seconds=60) as live:
        yield live


@pytest.fixture(scope="module")
def joined():
    # Twice through the clips: about 2.5 minutes, so at least two block boundaries.
    return join_clips(english_clips() * 2)


def transcribe(base_url: str, data: bytes, **fields) -> dict:
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("audio.wav", data)},
        data={"model": "whisper-1", "language": "en", "response_format": "verbose_json",
              "timestamp_granularities[]": ["word", "segment"], **fields},
        timeout=600,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def clips_alone(short_blocks_server) -> dict[str, dict]:
    """Each clip transcribed on its own: the baseline for WER and first-word offsets."""
    return {n: transcribe(short_blocks_server.base_url, audio_path(n).read_bytes())
            for n in english_clips()}


@pytest.fixture(scope="module")
def clip_by_clip_wer(clips_alone):
    references = [normalize(reference_texts()[n]) for n in clips_alone]
    return jiwer.wer(references, [normalize(body["text"]) for body in clips_alone.values()])


def joined_reference(joined) -> str:
    return normalize(" ".join(reference_texts()[name] for name, _ in joined.placements))


def misplaced_clips(body: dict, joined, clips_alone, tolerance: float = 1.0) -> list[str]:
    """Clips whose first word, in the joined file, does not start within `tolerance` of where
    the clip was placed (plus the clip's own lead-in, as measured on the clip alone). Under
    the 1.5 s gap between clips: a clip placed in the wrong chunk or block is off by seconds,
    while Whisper's word times in context move by up to about 0.8 s (cards_002 at 36.52 s
    for 36.01; beckett at 139.46 for 140.23 when a hotter retry decoded its window)."""
    words = body["words"]
    misplaced = []
    for name, placed in joined.placements:
        expected = placed + clips_alone[name]["words"][0]["start"]
        # The clip's words: from its placement on (a word may start a little before it),
        # never the previous clip's last word, 1.5 s of silence earlier.
        following = [w for w in words if w["start"] >= placed - 0.3]
        if not following or abs(following[0]["start"] - expected) > tolerance:
            got = following[0]["start"] if following else None
            misplaced.append(f"{name}: expected {expected:.2f}, got {got}")
    return misplaced


@pytest.mark.parametrize(
    "fields",
    [{}, {"decoding": "sequential"}, {"chunking_strategy": "auto"},
     {"chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "500"},
     {"chunking_strategy": "auto", "decoding": "sequential"}],
    ids=["chunked", "sequential", "auto", "server_vad", "auto_sequential"],
)
def test_joined_clips_lose_and_double_nothing(
    short_blocks_server, joined, clips_alone, clip_by_clip_wer, fields
):
    body = transcribe(short_blocks_server.base_url, joined.wav, **fields)
    wer = jiwer.wer(joined_reference(joined), normalize(body["text"]))
    print(f"{fields}: joined WER {wer:.4f} vs clip by clip {clip_by_clip_wer:.4f}")
    assert wer <= clip_by_clip_wer + 0.02
    assert body["duration"] == pytest.approx(joined.duration, abs=0.01)
    assert misplaced_clips(body, joined, clips_alone) == []
    ends = [s["end"] for s in body["segments"]]
    assert ends == sorted(ends) and ends[-1] <= joined.duration + 0.1
    seeks = [s["seek"] for s in body["segments"]]
    assert seeks == sorted(seeks) and seeks[-1] > 60 * 100  # absolute 10 ms frames


def test_vad_filter_extension_keeps_absolute_times(short_blocks_server, joined, clips_alone):
    body = transcribe(short_blocks_server.base_url, joined.wav, vad_filter="true")
    assert misplaced_clips(body, joined, clips_alone) == []


def test_blocks_keep_memory_bounded_for_an_hour():
    """An hour of audio is never held whole as float32 (that alone would be 230 MB)."""
    seconds = 3600
    rate = 8_000
    tone = (np.sin(np.arange(seconds * rate) * 0.3) * 3000).astype("<i2")
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone.tobytes())
    data = buffer.getvalue()
    del tone, buffer
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    total = 0
    for block in cut_blocks(open_audio(data).chunks(), 600 * SAMPLE_RATE, 10 * SAMPLE_RATE):
        total += block.samples.size
    peak = tracemalloc.get_traced_memory()[1] - baseline
    tracemalloc.stop()
    assert total == seconds * SAMPLE_RATE
    assert peak < 120 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_block_cuts_fall_in_pauses():
    names = english_clips()[:8]
    joined = join_clips(names, gap_seconds=1.0)
    samples = decode_audio(joined.wav)
    # The inserted silences: from each clip's end to the next clip's start.
    lengths = [decode_audio(audio_path(n).read_bytes()).size / SAMPLE_RATE for n in names]
    pairs = zip(joined.placements, lengths, joined.placements[1:], strict=False)
    gaps = [(placed + length, nxt) for (_, placed), length, (_, nxt) in pairs]
    # The search region (8 s) is longer than any clip, so it always holds a pause.
    blocks = list(cut_blocks([samples], 16 * SAMPLE_RATE, 8 * SAMPLE_RATE))
    assert len(blocks) >= 3
    assert sum(b.samples.size for b in blocks) == samples.size
    for block in blocks[:-1]:
        cut = (block.start + block.samples.size) / SAMPLE_RATE
        assert any(start <= cut <= end for start, end in gaps), cut


def test_the_first_block_is_shorter_so_streams_start_early():
    samples = decode_audio(join_clips(english_clips()[:8], gap_seconds=1.0).wav)
    blocks = list(cut_blocks([samples], 20 * SAMPLE_RATE, 8 * SAMPLE_RATE, 10 * SAMPLE_RATE))
    assert blocks[0].samples.size <= 10 * SAMPLE_RATE
    assert max(b.samples.size for b in blocks[1:]) > 10 * SAMPLE_RATE
    assert all(b.samples.size <= 20 * SAMPLE_RATE for b in blocks)
    assert sum(b.samples.size for b in blocks) == samples.size


@pytest.mark.parametrize("kind", ["silence", "noise", "tone"])
def test_no_invented_text_on_non_speech(base_url, kind):
    n = 60 * SAMPLE_RATE
    rng = np.random.default_rng(7)
    signal = {
        "silence": np.zeros(n, dtype=np.float32),
        "noise": (rng.standard_normal(n) * 0.05).astype(np.float32),
        "tone": (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / SAMPLE_RATE)).astype(np.float32),
    }[kind]
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": (f"{kind}.wav", wav_bytes(signal))},
        data={"model": "whisper-1", "response_format": "verbose_json"}, timeout=600,
    )
    body = response.json()
    assert len(body["text"].split()) <= 1, body["text"]


def test_language_detected_after_a_silent_minute(base_url):
    french = decode_audio(audio_path("audio_french.wav").read_bytes())[: 20 * SAMPLE_RATE]
    padded = np.concatenate([np.zeros(40 * SAMPLE_RATE, dtype=np.float32), french])
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("late.wav", wav_bytes(padded))},
        data={"model": "whisper-base", "response_format": "verbose_json",
              "include[]": "language_probabilities"},
        timeout=600,
    )
    body = response.json()
    assert body["language"] == "french"
    candidates = body["language_probabilities"]
    assert candidates[0]["language"] == "fr" and candidates[0]["probability"] > 0.5
    assert body["segments"][0]["start"] >= 39.0  # times stay absolute


@pytest.mark.parametrize(
    "field, value",
    [("beam_size", "0"), ("beam_size", "2.5"), ("no_speech_threshold", "1.5"),
     ("hallucination_silence_threshold", "-1"), ("vad_filter", "sometimes"),
     ("condition_on_previous_text", "perhaps"), ("hotwords", "x" * 1001),
     ("decoding", "parallel")],
)
def test_decoder_extensions_are_validated(base_url, field, value):
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("a.mp3", audio_path("audio_hello_world.mp3").read_bytes())},
        data={"model": "whisper-1", field: value}, timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field


def test_decoder_extensions_are_applied(base_url):
    fields = {"beam_size": "1", "condition_on_previous_text": "false", "no_speech_threshold": "0.5",
              "hallucination_silence_threshold": "2", "hotwords": "Dashwood"}
    body = transcribe(base_url, audio_path("sense_and_sensibility_01_austen_64kb-0870.wav").read_bytes(),
                      **fields)
    assert "dashwood" in body["text"].lower()
    assert body["words"]  # hallucination_silence_threshold works from word times
