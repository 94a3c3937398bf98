"""The runtime under load: admission (slots, FIFO, 429), deadlines, disconnects, the model pool
(TTL, LRU), /ready, /metrics and access logs — on real models over loopback.

Where a test needs a request to stay in the engine for a while, the engine is wrapped in a
gate (fault injection: "the engine stalls"); everything else is the real server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from conftest import LiveServer, audio_path
from prometheus_client.parser import text_string_to_metric_families

from voxserve.runtime.catalog import ModelSpec
from voxserve.runtime.pool import ModelPool, PoolLimits
from voxserve.runtime.scheduler import Scheduler, SchedulerConfig

HELLO = audio_path("audio_hello_world.mp3").read_bytes()
TINY = "whisper-tiny.en"


def wait_until(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll a condition owned by the server thread (it cannot be awaited across threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def transcribe(base_url: str, data: bytes = HELLO, name: str = "a.mp3", **kw) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/audio/transcriptions", files={"file": (name, data)},
        data={"model": "whisper-1", **kw}, timeout=120,
    )


def metric(base_url: str, name: str, **labels: str) -> float:
    """One sample from /metrics (0 when absent)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


class Gate:
    """Wraps the real Whisper loader so that each engine run waits for `open()` (only runs
    whose audio is longer than `min_seconds`), and counts runs that reached the engine."""

    def __init__(self, live: LiveServer, min_seconds: float = 0.0) -> None:
        self.opened = threading.Event()
        self.min_seconds = min_seconds
        self.runs = 0
        self.waiting = 0
        pool = live.app.state.pool
        real = pool._loaders["stt"]
        pool.add_loader("stt", lambda spec: _GatedEngine(real(spec), self))

    def open(self) -> None:
        self.opened.set()


class _GatedEngine:
    def __init__(self, engine, gate: Gate) -> None:
        self._engine = engine
        self._gate = gate

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def transcribe(self, samples, options):
        gate = self._gate
        gate.runs += 1
        if samples.size / 16_000 > gate.min_seconds:
            gate.waiting += 1
            gate.opened.wait(timeout=120)
            gate.waiting -= 1
        return self._engine.transcribe(samples, options)


def in_thread(fn: Callable, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# ---- admission --------------------------------------------------------------------------


def test_full_queue_answers_429_at_once_with_retry_after():
    live = LiveServer(slots=1, max_queue=1)
    gate = Gate(live)
    with live:
        scheduler = live.app.state.scheduler
        running, running_out = in_thread(transcribe, live.base_url)
        wait_until(lambda: gate.waiting == 1, what="first request in the engine")
        queued, queued_out = in_thread(transcribe, live.base_url)
        wait_until(lambda: scheduler.queued(TINY) == 1, what="second request queued")

        started = time.monotonic()
        with openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="x", max_retries=0) as sdk:
            with pytest.raises(openai.RateLimitError) as caught:
                sdk.audio.transcriptions.create(model="whisper-1", file=("a.mp3", HELLO))
        assert time.monotonic() - started < 5  # refused at once, not after waiting
        error = caught.value
        assert error.status_code == 429
        assert error.code == "rate_limit_exceeded" and error.type == "requests"
        assert "1 requests are queued for model 'whisper-tiny.en'" in error.message
        retry_after = error.response.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        assert error.request_id and error.request_id.startswith("req_")

        gate.open()
        for thread, out in ((running, running_out), (queued, queued_out)):
            thread.join(60)
            assert out["value"].status_code == 200, out
            assert "hello" in out["value"].json()["text"].lower()
        assert metric(live.base_url, "voxserve_rejected_total", model=TINY) == 1
        assert metric(live.base_url, "voxserve_admitted_total", model=TINY) == 2


class _StalledVoice:
    """Fault injection for a speech engine: it speaks only once `opened` is set."""

    def __init__(self, engine, opened: threading.Event) -> None:
        self._engine = engine
        self._opened = opened

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def synthesize(self, sentence, voice):
        self._opened.wait(timeout=60)
        yield from self._engine.synthesize(sentence, voice)


def test_speech_waits_in_its_own_lane_and_gets_429_when_it_is_full():
    def speak(text: str = "Hi.") -> httpx.Response:
        return httpx.post(f"{live.base_url}/v1/audio/speech", timeout=60, json={
            "model": "piper", "voice": "alloy", "input": text, "response_format": "pcm"})

    live = LiveServer(slots=1, max_queue=0)
    opened = threading.Event()
    pool = live.app.state.pool
    real = pool._loaders["tts"]
    pool.add_loader("tts", lambda spec: _StalledVoice(real(spec), opened))
    with live:
        piper = live.app.state.catalog.resolve("piper").spec.id
        scheduler = live.app.state.scheduler
        speaking, speaking_out = in_thread(speak, "A first sentence. And a second one.")
        wait_until(lambda: scheduler.busy(piper) == 1, what="the first speech in its slot")

        refused = speak()
        assert refused.status_code == 429, refused.status_code
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert f"model '{piper}'" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        # Transcriptions have a lane of their own: the busy voice does not hold them up.
        assert transcribe(live.base_url).status_code == 200

        opened.set()
        speaking.join(60)
        assert speaking_out["value"].status_code == 200 and speaking_out["value"].content
        wait_until(lambda: scheduler.busy(piper) == 0, what="the speech slot to come back")
        assert speak().status_code == 200
        assert metric(live.base_url, "voxserve_rejected_total", model=piper) == 1
        assert metric(live.base_url, "voxserve_admitted_total", model=piper) == 2


def test_slots_are_granted_in_arrival_order():
    """FIFO across requests: 20 tasks queue behind one slot and run in the order they came."""
    order: list[int] = []
    pool = ModelPool({"stt": lambda spec: object()})
    scheduler = Scheduler(pool, SchedulerConfig(slots=1, max_queue=32))
    spec = ModelSpec("m", "stt", "dir:/x")

    async def one(i: int, release: asyncio.Event) -> None:
        async with scheduler.admit(spec):
            order.append(i)
            await release.wait()

    async def main() -> None:
        release = asyncio.Event()
        first = asyncio.create_task(one(0, release))
        await asyncio.sleep(0)  # let it take the slot
        tasks = []
        for i in range(1, 21):
            tasks.append(asyncio.create_task(one(i, release)))
            await asyncio.sleep(0)  # enqueue in this order
        assert scheduler.queued("m") == 20
        release.set()
        await asyncio.gather(first, *tasks)

    asyncio.run(main())
    assert order == list(range(21))


def test_a_long_file_holds_one_slot_and_short_requests_pass_it():
    live = LiveServer(slots=2, max_queue=8)
    # Only the long file (44 s) stalls in the engine: its speech chunks are over 5 s (and
    # decode side by side), the short clip is 2 s.
    gate = Gate(live, min_seconds=5)
    with live:
        long_data = audio_path("two_cities.wav").read_bytes()
        long_thread, long_out = in_thread(transcribe, live.base_url, long_data, "long.wav")
        wait_until(lambda: gate.waiting >= 1, what="long file in the engine")
        for _ in range(4):
            response = transcribe(live.base_url)
            assert response.status_code == 200 and "hello" in response.json()["text"].lower()
        assert long_thread.is_alive()  # the long file is still running beside them
        gate.open()
        long_thread.join(300)
        assert long_out["value"].status_code == 200


def test_burst_of_100_ends_in_results_or_429_and_health_answers_throughout():
    live = LiveServer(slots=2, max_queue=16)
    with live:
        assert transcribe(live.base_url).status_code == 200  # model loaded
        health_codes: list[int] = []
        done = threading.Event()

        def watch_health():
            while not done.is_set():
                health_codes.append(httpx.get(f"{live.base_url}/health", timeout=5).status_code)

        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()
        with ThreadPoolExecutor(100) as executor:
            responses = list(executor.map(lambda _: transcribe(live.base_url), range(100)))
        done.set()
        watcher.join(10)
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 429}, codes
        assert codes.count(200) >= 18  # 2 running + 16 queued at the peak, at least
        for r in responses:
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "rate_limit_exceeded"
            else:
                assert "hello" in r.json()["text"].lower()
        assert len(health_codes) >= 3 and set(health_codes) == {200}


# ---- deadlines and disconnects ------------------------------------------------------------


def test_deadline_ends_running_and_queued_requests_with_504():
    live = LiveServer(slots=1, max_queue=4, request_timeout=1.5)
    gate = Gate(live)
    with live:
        scheduler = live.app.state.scheduler
        running, running_out = in_thread(transcribe, live.base_url)
        wait_until(lambda: gate.waiting == 1, what="first request in the engine")
        queued = transcribe(live.base_url)  # waits behind it until the deadline
        running.join(30)
        first = running_out["value"]
        for response, should_retry in ((first, "false"), (queued, "true")):
            assert response.status_code == 504, response.text
            error = response.json()["error"]
            assert error["code"] == "timeout" and error["type"] == "server_error"
            assert "1.5 seconds" in error["message"]
            assert response.headers["x-should-retry"] == should_retry
        assert "while the model was working" in first.json()["error"]["message"]
        assert "in the queue" in queued.json()["error"]["message"]
        # The stalled engine still holds the slot: it is freed when the worker really stops.
        assert scheduler.busy(TINY) == 1
        gate.open()
        wait_until(lambda: scheduler.busy(TINY) == 0, what="slot freed")
        assert metric(live.base_url, "voxserve_dropped_total", model=TINY, reason="deadline") == 2
        assert transcribe(live.base_url).status_code == 200


def test_a_client_that_leaves_while_queued_never_reaches_the_engine():
    live = LiveServer(slots=1, max_queue=4)
    gate = Gate(live)
    with live:
        scheduler = live.app.state.scheduler
        running, running_out = in_thread(transcribe, live.base_url)
        wait_until(lambda: gate.waiting == 1, what="first request in the engine")

        # The second client sends a whole request by hand, waits until it is queued, and hangs up.
        request = httpx.Request(
            "POST", f"{live.base_url}/v1/audio/transcriptions",
            files={"file": ("a.mp3", HELLO)}, data={"model": "whisper-1"},
        )
        body = request.read()
        head = ["POST /v1/audio/transcriptions HTTP/1.1", "Host: 127.0.0.1"]
        head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
        sock = socket.create_connection(("127.0.0.1", live.settings.port))
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        wait_until(lambda: scheduler.queued(TINY) == 1, what="second request queued")
        sock.close()

        gate.open()
        running.join(60)
        assert running_out["value"].status_code == 200
        wait_until(
            lambda: metric(live.base_url, "voxserve_dropped_total", model=TINY,
                           reason="disconnected") == 1,
            what="the abandoned request dropped",
        )
        assert gate.runs == 1  # the engine ran the first request only
        assert metric(live.base_url, "voxserve_admitted_total", model=TINY) == 1
        assert scheduler.busy(TINY) == 0 and scheduler.queued(TINY) == 0


# ---- model pool ------------------------------------------------------------------------------


def test_ttl_zero_unloads_after_each_use_and_reloads_on_demand():
    with LiveServer(stt_model_ttl=0) as live:
        pool = live.app.state.pool
        for expected_loads in (1, 2):
            assert transcribe(live.base_url).status_code == 200
            wait_until(lambda: not pool.is_loaded(TINY), what="model unloaded")
            assert metric(live.base_url, "voxserve_model_loads_total", model=TINY) == expected_loads
        assert metric(live.base_url, "voxserve_model_unloads_total", model=TINY, reason="ttl") == 2
        assert metric(live.base_url, "voxserve_model_loaded", model=TINY, kind="stt") == 0


def test_ttl_unloads_an_idle_model_after_its_idle_time():
    # Long enough that a stalled test thread still finds the model loaded after its request.
    with LiveServer(stt_model_ttl=3) as live:
        pool = live.app.state.pool
        assert transcribe(live.base_url).status_code == 200
        assert pool.is_loaded(TINY)
        wait_until(lambda: not pool.is_loaded(TINY), timeout=20, what="idle unload")


def test_lru_keeps_at_most_one_model_when_two_alternate():
    with LiveServer(max_models=1) as live:
        pool = live.app.state.pool
        for model in ("whisper-tiny.en", "whisper-base", "whisper-tiny.en", "whisper-base"):
            response = httpx.post(
                f"{live.base_url}/v1/audio/transcriptions",
                files={"file": ("a.mp3", HELLO)}, data={"model": model, "language": "en"},
                timeout=120,
            )
            assert response.status_code == 200 and "hello" in response.json()["text"].lower()
            wait_until(lambda m=model: pool.loaded_ids() == [m], what=f"only {model} loaded")
        evicted = metric(live.base_url, "voxserve_model_unloads_total", model=TINY, reason="evicted")
        assert evicted == 2


def test_pool_evicts_the_least_recently_used_idle_model_and_never_one_in_use():
    pool = ModelPool({"stt": lambda spec: np.zeros(1)}, PoolLimits(max_models=2))
    a, b, c = (ModelSpec(name, "stt", "dir:/x") for name in "abc")

    async def main() -> None:
        async with pool.use(a):
            async with pool.use(b):
                pass
            async with pool.use(c):  # b is the least recently used idle one; a is in use
                assert sorted(pool.loaded_ids()) == ["a", "c"]
        async with pool.use(b):  # c was let go before a, so c goes
            pass
        assert sorted(pool.loaded_ids()) == ["a", "b"]

    asyncio.run(main())


# ---- readiness, metrics, logs -------------------------------------------------------------


def test_ready_is_503_until_preloaded_models_are_loaded():
    loading = threading.Event()
    live = LiveServer(preload=["whisper-1"])
    pool = live.app.state.pool
    real = pool._loaders["stt"]

    def slow_loader(spec):  # fault injection: the load takes until the test lets it finish
        loading.wait(timeout=60)
        return real(spec)

    pool.add_loader("stt", slow_loader)
    with live:
        assert httpx.get(f"{live.base_url}/health").status_code == 200
        response = httpx.get(f"{live.base_url}/ready")
        assert response.status_code == 503
        assert response.json() == {"error": {
            "message": "Not ready: still loading whisper-tiny.en.", "type": "server_error",
            "param": None, "code": "not_ready"}}
        loading.set()
        wait_until(lambda: httpx.get(f"{live.base_url}/ready").status_code == 200,
                   what="ready after preload")
        assert httpx.get(f"{live.base_url}/ready").json()["loaded_models"] == [TINY]


def test_ready_stays_503_when_a_preloaded_model_fails(tmp_path):
    with LiveServer(models={"broken": str(tmp_path)}, preload=["broken"]) as live:
        wait_until(lambda: live.app.state.pool.load_failure("broken") is not None,
                   what="preload failure")
        response = httpx.get(f"{live.base_url}/ready")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "not_ready" and "broken" in error["message"]
        assert "model.bin" in error["message"]


def test_ready_without_preload_is_200():
    with LiveServer() as live:
        assert httpx.get(f"{live.base_url}/ready").status_code == 200


def test_metrics_expose_requests_queue_batches_audio_latency_and_models():
    with LiveServer() as live:
        assert transcribe(live.base_url).status_code == 200
        assert httpx.get(f"{live.base_url}/v1/models/nope").status_code == 404
        response = httpx.get(f"{live.base_url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        for name in ("voxserve_requests", "voxserve_request_duration_seconds",
                     "voxserve_queue_depth", "voxserve_batch_size", "voxserve_audio_seconds",
                     "voxserve_real_time_factor", "voxserve_model_loaded",
                     "voxserve_queue_wait_seconds", "voxserve_model_load_seconds"):
            assert name in families, name
        base = live.base_url
        route = "/v1/audio/transcriptions"
        assert metric(base, "voxserve_requests_total", route=route, model=TINY, status="200") == 1
        assert metric(base, "voxserve_requests_total", route="/v1/models/{model_id:path}",
                      status="404") == 1
        # One request: its engine calls (encode, generate) each ran alone, in batches of one.
        calls = metric(base, "voxserve_batch_size_count", model=TINY)
        assert calls >= 2
        assert metric(base, "voxserve_batch_size_bucket", model=TINY, le="1.0") == calls
        assert 1.0 < metric(base, "voxserve_audio_seconds_total", model=TINY) < 3.0
        assert metric(base, "voxserve_real_time_factor_count", model=TINY) == 1
        assert metric(base, "voxserve_request_duration_seconds_count", route=route) == 1
        assert metric(base, "voxserve_model_loaded", model=TINY, kind="stt") == 1
        assert metric(base, "voxserve_queue_depth", model=TINY) == 0


def test_docs_openapi_and_root_are_named_routes_in_metrics():
    with LiveServer() as live:
        base = live.base_url
        for path in ("/docs", "/openapi.json", "/"):
            assert httpx.get(f"{base}{path}").status_code == 200, path
        assert httpx.get(f"{base}/no-such-page").status_code == 404
        for path in ("/docs", "/openapi.json", "/"):
            assert metric(base, "voxserve_requests_total", route=path, status="200") == 1, path
        assert metric(base, "voxserve_requests_total", route="unmatched", status="404") == 1


def test_access_log_line_carries_the_request_id(caplog):
    with LiveServer() as live, caplog.at_level(logging.INFO, logger="voxserve.access"):
        response = transcribe(live.base_url)
        wait_until(lambda: any(r.name == "voxserve.access" for r in caplog.records),
                   what="access log")
    request_id = response.headers["x-request-id"]
    record = next(r for r in caplog.records if r.name == "voxserve.access")
    message = record.getMessage()
    assert f"request_id={request_id}" in message
    assert "status=200" in message and f"model={TINY}" in message and "queue_ms=" in message
    assert record.request_id == request_id and record.status == 200


# ---- GPU ---------------------------------------------------------------------------------------


def _cuda_devices() -> int:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count()
    except Exception:
        return 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() == 0, reason="ctranslate2.get_cuda_device_count() == 0")
def test_cuda_float16_transcribes_through_the_scheduler():
    with LiveServer(device="cuda", compute_type="float16") as live:
        response = transcribe(live.base_url)
        assert response.status_code == 200, response.text
        assert "hello" in response.json()["text"].lower()
        assert metric(live.base_url, "voxserve_admitted_total", model=TINY) == 1


# ---- soak --------------------------------------------------------------------------------------


def test_soak_hundreds_of_small_requests_lose_nothing():
    """150 requests of three different clips from 10 clients against 2 slots and a queue of 6.
    Clients retry a 429 twice after its Retry-After, as the SDK does. Every request ends with
    its own clip's transcript or a clean 429 (nothing hangs, nothing else fails), and the
    server's counters add up to what the clients saw."""
    clips = {name: audio_path(name).read_bytes()
             for name in ("audio_hello_world.mp3", "cards_001.wav", "cards_003.wav")}
    with LiveServer(slots=2, max_queue=6) as live:
        expected = {name: transcribe(live.base_url, data, name).json()["text"]
                    for name, data in clips.items()}
        jobs = [list(clips)[i % len(clips)] for i in range(150)]

        def one(name: str) -> tuple[str, list[httpx.Response]]:
            responses = []
            for _ in range(3):
                responses.append(transcribe(live.base_url, clips[name], name))
                if responses[-1].status_code != 429:
                    break
                time.sleep(int(responses[-1].headers["retry-after"]))  # what the SDK does
            return name, responses

        with ThreadPoolExecutor(10) as executor:
            results = list(executor.map(one, jobs))

        assert len(results) == len(jobs)
        refused = succeeded = 0
        for name, responses in results:
            for response in responses:
                assert response.status_code in (200, 429), response.text
                if response.status_code == 200:
                    assert response.json()["text"] == expected[name]  # no cross-talk
                    succeeded += 1
                else:
                    assert response.json()["error"]["code"] == "rate_limit_exceeded"
                    refused += 1
        assert succeeded >= len(jobs) * 0.8, (succeeded, refused)
        base, route = live.base_url, "/v1/audio/transcriptions"
        assert metric(base, "voxserve_admitted_total", model=TINY) == succeeded + len(clips)
        assert metric(base, "voxserve_rejected_total", model=TINY) == refused
        assert metric(base, "voxserve_requests_total", route=route, model=TINY,
                      status="429") == refused
        scheduler = live.app.state.scheduler
        wait_until(lambda: scheduler.busy(TINY) == 0, what="slots freed")
        assert scheduler.queued(TINY) == 0
