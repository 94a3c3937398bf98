"""Batching across requests: concurrent requests share engine calls, and each still gets
exactly the result it would have had alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import LiveServer, audio_path
from test_runtime import metric

from voxserve.stt.whisper.batching import BatchingWhisper
from voxserve.stt.whisper.layout import EngineLayout, engine_layout

CLIPS = ["cards_001.wav", "cards_002.wav", "cards_003.wav", "arctic_a0007.wav",
         "arctic_a0009.wav", "goforward.wav", "audio_hello_world.mp3", "beckett.wav"]
TINY = "whisper-tiny.en"


def verbose(base_url: str, name: str) -> dict:
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": (name, audio_path(name).read_bytes())},
        data={"model": TINY, "response_format": "verbose_json",
              "timestamp_granularities[]": ["word", "segment"]},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def alone() -> dict[str, dict]:
    """Every clip transcribed one at a time by a server that never batches."""
    with LiveServer(max_batch_size=1) as live:
        return {name: verbose(live.base_url, name) for name in CLIPS}


def test_a_batched_result_equals_the_unbatched_result(alone):
    # A long window so that the eight concurrent requests really meet.
    with LiveServer(max_batch_size=8, batch_window_ms=500) as live:
        with ThreadPoolExecutor(len(CLIPS)) as pool:
            together = dict(zip(CLIPS, pool.map(lambda n: verbose(live.base_url, n), CLIPS),
                                strict=True))
        batches = metric(live.base_url, "voxserve_batch_size_count", model=TINY)
        calls = metric(live.base_url, "voxserve_batch_size_sum", model=TINY)
    assert calls > batches, "no engine call was shared: nothing was batched"
    for name in CLIPS:
        assert together[name]["text"] == alone[name]["text"], name
        assert together[name]["segments"] == alone[name]["segments"], name
        assert together[name]["words"] == alone[name]["words"], name


def _text(base_url: str, name: str, response_format: str) -> str:
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": (name, audio_path(name).read_bytes())},
        data={"model": TINY, "response_format": response_format}, timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()["text"]


def test_plain_text_and_timestamped_decodes_arriving_together_each_get_their_own_result():
    # json decodes without timestamp tokens (one task token more after <|startoftranscript|>),
    # verbose_json with them: CTranslate2 refuses to merge the two kinds into one call.
    requests = list(zip(CLIPS, ["json", "verbose_json"] * (len(CLIPS) // 2), strict=True))
    with LiveServer(max_batch_size=8, batch_window_ms=500) as live:
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda r: _text(live.base_url, *r), requests))
        alone = [_text(live.base_url, *r) for r in requests]
    assert together == alone


class _DoublingModel:
    """Stands in for CTranslate2 in the merge logic's unit tests: doubles its input and
    records the batch sizes it saw."""

    device = "cpu"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def encode(self, features, to_cpu=False):
        import ctranslate2

        self.batch_sizes.append(features.shape[0])
        return ctranslate2.StorageView.from_array(np.asarray(features) * 2)


def _features(value: float):
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.full((1, 2, 3), value, dtype=np.float32))


def test_a_lone_decode_never_waits_for_the_window():
    model = _DoublingModel()
    batcher = BatchingWhisper(model, window=5.0, max_batch=8, sot_token=0)
    started = time.monotonic()
    with batcher.decoding():
        out = batcher.encode(_features(1.5))
    assert time.monotonic() - started < 1.0  # the 5 s window was not waited for
    assert np.asarray(out).tolist() == np.full((1, 2, 3), 3.0).tolist()


def test_concurrent_callers_share_a_call_and_get_their_own_rows():
    model = _DoublingModel()
    batcher = BatchingWhisper(model, window=2.0, max_batch=4, sot_token=0)
    barrier = threading.Barrier(6)
    results: dict[int, list] = {}

    def call(i: int) -> None:
        with batcher.decoding():
            barrier.wait()
            results[i] = np.asarray(batcher.encode(_features(float(i)))).tolist()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(model.batch_sizes) == [2, 4]  # max_batch bounds a batch; the rest follow
    for i in range(6):
        assert results[i] == np.full((1, 2, 3), 2.0 * i).tolist()


def test_an_engine_failure_reaches_every_caller_of_the_batch():
    class Failing(_DoublingModel):
        def encode(self, features, to_cpu=False):
            raise RuntimeError("injected engine failure")

    batcher = BatchingWhisper(Failing(), window=2.0, max_batch=4, sot_token=0)
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def call() -> None:
        with batcher.decoding():
            barrier.wait()
            try:
                batcher.encode(_features(1.0))
            except RuntimeError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(errors) == 3


@pytest.mark.parametrize(
    ("device", "cores", "overrides", "expected"),
    [
        # 2 cores: a solo engine with both, two shared replicas of one thread, no merging.
        ("cpu", 2, {}, EngineLayout(slots=8, workers=2, threads=1, max_batch=1, solo_threads=2)),
        ("cpu", 16, {}, EngineLayout(slots=16, workers=4, threads=4, max_batch=1,
                                     solo_threads=16)),
        ("cpu", 2, {"max_batch_size": 8},
         EngineLayout(slots=16, workers=2, threads=1, max_batch=8, solo_threads=2)),
        ("cpu", 8, {"cpu_threads": 1}, EngineLayout(slots=2, workers=2, threads=1, max_batch=1)),
        ("cpu", 2, {"slots": 3}, EngineLayout(slots=3, workers=2, threads=1, max_batch=1,
                                              solo_threads=2)),
        ("cuda", 4, {}, EngineLayout(slots=16, workers=2, threads=4, max_batch=8)),
        ("cuda", 4, {"max_batch_size": 1}, EngineLayout(slots=2, workers=1, threads=4,
                                                        max_batch=1)),
    ],
)
def test_layout_sizes_engines_and_slots_from_the_machine(device, cores, overrides, expected):
    from voxserve.config import Settings

    assert engine_layout(Settings(**overrides), device, cores=cores) == expected


class _RecordingModel(_DoublingModel):
    """A stand-in engine that logs when each call starts and ends, and can be held."""

    def __init__(self, name: str, log: list, hold: threading.Event | None = None) -> None:
        super().__init__()
        self.name, self.log, self.hold = name, log, hold

    def encode(self, features, to_cpu=False):
        self.log.append((self.name, "start", float(np.asarray(features).flat[0])))
        if self.hold is not None:
            self.hold.wait(timeout=30)
        out = super().encode(features, to_cpu)
        self.log.append((self.name, "end", float(np.asarray(features).flat[0])))
        return out

    def generate(self, features, prompts, **options):
        self.log.append((self.name, "generate", float(np.asarray(features).flat[0])))
        return [f"{self.name} decoded {prompt}" for prompt in prompts]


def test_a_lone_call_takes_the_solo_engine_and_concurrent_ones_never_overlap_it():
    log: list = []
    release_solo = threading.Event()
    solo = _RecordingModel("solo", log, hold=release_solo)
    shared = _RecordingModel("shared", log)
    batcher = BatchingWhisper(solo, window=0.0, max_batch=1, sot_token=0, shared=shared,
                              shared_replicas=2)
    first_done = threading.Event()

    def first() -> None:
        with batcher.decoding():
            batcher.encode(_features(1.0))
            first_done.wait(timeout=30)  # still decoding: the second is not alone

    def second() -> None:
        with batcher.decoding():
            batcher.encode(_features(2.0))

    a = threading.Thread(target=first)
    a.start()
    deadline = time.monotonic() + 10
    while not log:  # the first call is inside the solo engine
        assert time.monotonic() < deadline
        time.sleep(0.01)
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.2)  # the second call has arrived and must be waiting, not running
    assert log == [("solo", "start", 1.0)]
    release_solo.set()
    b.join(timeout=30)
    first_done.set()
    a.join(timeout=30)
    assert log == [("solo", "start", 1.0), ("solo", "end", 1.0),
                   ("shared", "start", 2.0), ("shared", "end", 2.0)]


def test_a_lone_encode_takes_the_solo_engine_and_a_lone_generate_a_shared_replica():
    # Beam search is faster on one thread than on two (batching.py), the encoder slower.
    log: list = []
    batcher = BatchingWhisper(_RecordingModel("solo", log), window=0.0, max_batch=1,
                              sot_token=0, shared=_RecordingModel("shared", log),
                              shared_replicas=2)
    with batcher.decoding():
        batcher.encode(_features(1.0))
        result = batcher.generate(_features(2.0), [[0, 7]], beam_size=5)
    assert result == ["shared decoded [0, 7]"]
    assert log == [("solo", "start", 1.0), ("solo", "end", 1.0), ("shared", "generate", 2.0)]
