"""voxserve on a local two-node Ray cluster (`voxserve serve --ray ADDRESS`), through the SDK.

One cluster for the module: a head node and a second `ray start` node process on loopback, one
CPU each, both started here with free ports and torn down here (only these processes, by
process group; never a machine-wide `ray stop`). Deployed by the CLI: whisper-tiny.en with two
replicas (one per node), whisper-base (for the one translation) and Piper, each with a slice
of the CPUs, and the ingress.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from conftest import MODEL_CACHE, audio_path, free_port, reference_texts
from joined_audio import join_clips, wav_bytes
from ray_cluster import LocalRayCluster, loopback_env, start_voxserve, stop_process
from realtime_audio import chunks, pcm24, speech

pytest.importorskip(
    "ray.serve", reason="the Ray cluster tests need the ray extra: pip install 'voxserve[ray]'"
)

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from voxserve.audio.decode import SAMPLE_RATE, decode_audio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# A bound on waiting for the cluster to change state: generous, only so that a broken cluster
# fails the test instead of hanging it.
PATIENCE = 300
WHISPER = "whisper-tiny.en"
# The models the fixture deploys, and how many replicas of each.
REPLICAS = {WHISPER: 2, "whisper-base": 1, "piper": 1}
SENTENCES = [f"This is sentence number {n} of a long text to read aloud." for n in range(60)]


def _wait(condition, what: str, patience: float = PATIENCE):
    end = time.monotonic() + patience
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


class Deployment:
    def __init__(self, cluster: LocalRayCluster, port: int, process: subprocess.Popen) -> None:
        self.cluster = cluster
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = process

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", timeout=60)

    def health(self) -> dict:
        return self.get("/health").json()

    def replicas(self, model: str) -> list[dict]:
        return [r for r in self.health()["replicas"] if r.get("model") == model and "pid" in r]

    def sdk(self, max_retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key="test", max_retries=max_retries, timeout=300
        )


@pytest.fixture(scope="module")
def ray_serve(tmp_path_factory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("ray")
    temp_dir = Path(f"/tmp/vxray{os.getpid()}")  # short: Ray's socket paths have a length limit
    env = loopback_env(**{
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "VOXSERVE_HOST": "127.0.0.1",
        "VOXSERVE_CACHE_DIR": str(MODEL_CACHE),
        "VOXSERVE_HF_OFFLINE": "true",
        "VOXSERVE_STT_DEFAULT_MODEL": WHISPER,
        "VOXSERVE_RAY_MODELS": ",".join(REPLICAS),
        "VOXSERVE_RAY_REPLICAS": ",".join(f"{m}={n}" for m, n in REPLICAS.items()),
        # Two Whisper replicas cannot share a node: 0.5 CPU each, at most one per node.
        "VOXSERVE_RAY_NUM_CPUS": f"{WHISPER}=0.5,*=0.2",
        "VOXSERVE_RAY_MAX_REPLICAS_PER_NODE": "1",
        "VOXSERVE_RAY_INGRESS_NUM_CPUS": "0.1",
        # Small enough for the backpressure test to reach Ray's own limit.
        "VOXSERVE_RAY_MAX_ONGOING_REQUESTS": "2",
        "VOXSERVE_RAY_MAX_QUEUED_REQUESTS": "2",
        # Serve's proxy sends requests to an ingress replica on its own node while there is
        # one; the two-ingress test needs it to spread them over both (as proxies on every
        # node behind a load balancer would, each to its own).
        "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
    })
    cluster = LocalRayCluster(temp_dir, env, base)
    process = None
    try:
        cluster.start()
        port = free_port()
        process = start_voxserve(cluster.address, port, env, base / "serve.log")
        deployment = Deployment(cluster, port, process)

        def ready() -> bool:
            assert process.poll() is None, (base / "serve.log").read_text()[-3000:]
            try:
                return deployment.get("/ready").status_code == 200
            except httpx.HTTPError:
                return False

        _wait(ready, "the deployment to be ready")
        yield deployment
    finally:
        if process is not None:
            stop_process(process)
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _clip(name: str) -> tuple[str, bytes]:
    return name, audio_path(name).read_bytes()


def _words(text: str) -> list[str]:
    return [w.strip(".,!?;:'\"").lower() for w in text.split() if w.strip(".,!?;:'\"")]


def _matches(text: str, reference: str) -> bool:
    """Most of the reference's words, in the transcript (tiny.en is not perfect)."""
    got, want = set(_words(text)), _words(reference)
    return sum(w in got for w in want) >= 0.7 * len(want)


# --- the OpenAI surface through the cluster --------------------------------------------------


def test_models_list_what_the_cluster_serves(ray_serve):
    with ray_serve.sdk() as client:
        ids = {m.id for m in client.models.list()}
        assert {WHISPER, "whisper-base", "piper", "whisper-1", "tts-1"} <= ids
        assert "kokoro" not in ids  # installed, but not deployed
        with pytest.raises(openai.NotFoundError) as err:
            client.audio.speech.create(model="kokoro", voice="alloy", input="Hello.")
    assert err.value.body["code"] == "model_not_found"


def test_transcription(ray_serve):
    name = "sense_and_sensibility_01_austen_64kb-0870.wav"
    with ray_serve.sdk() as client:
        result = client.audio.transcriptions.create(model="whisper-1", file=_clip(name))
    assert _matches(result.text, reference_texts()[name])


def test_translation_with_a_multilingual_model(ray_serve):
    french = decode_audio(audio_path("audio_french.wav").read_bytes())[: 12 * SAMPLE_RATE]
    with ray_serve.sdk() as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # translations are deprecated upstream
        result = client.audio.translations.create(
            model="whisper-base", file=("fr.wav", wav_bytes(french))
        )
    words = _words(result.text)
    assert len(words) >= 5
    assert not {"le", "la", "les", "est", "des", "une", "nous"} & set(words)


def test_streamed_transcription_leaves_before_the_work_is_done(ray_serve):
    names = [n for n in reference_texts() if n.startswith("sense_and")]
    joined = join_clips(names * 4)  # about two minutes: seconds of decoding after the first
    replicas = _two_whisper_replicas(ray_serve)
    with ray_serve.sdk() as client:
        stream = client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("long.wav", joined.wav), stream=True
        )
        events = iter(stream)
        first = next(events)
        # The first delta is here while a Whisper replica is still decoding the file.
        _computing_replica(replicas)
        rest = list(events)
    deltas = [first, *rest[:-1]]
    done = rest[-1]
    # (json streams decode each speech chunk as one plain segment: a delta per chunk)
    assert all(d.type == "transcript.text.delta" for d in deltas) and len(deltas) >= 2
    assert done.type == "transcript.text.done"
    assert "".join(d.delta for d in deltas) == done.text
    # The usage is counted on the replica; it crosses with the stream's last item.
    assert done.usage.output_tokens > 10 and done.usage.input_tokens > 0


def test_speech_streams_and_round_trips(ray_serve):
    # Enough sentences that the replica is still speaking when /health reaches it (speech is
    # made ahead of the client's reading, and /health asks the Whisper replicas first).
    text = " ".join(SENTENCES[:30])
    with ray_serve.sdk() as client:
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format="wav"
        ) as response:
            assert response.headers["content-type"] == "audio/wav"
            chunks = response.iter_bytes()
            first = next(chunks)
            # The first audio is here while the Piper replica is still speaking the rest.
            _wait(lambda: _busy_replica(ray_serve, "piper"), "a busy Piper replica", patience=30)
            audio = first + b"".join(chunks)
        heard = client.audio.transcriptions.create(model=WHISPER, file=("s.wav", audio)).text
    assert _matches(heard, text)


def test_speech_sse_usage_counts_the_remote_audio(ray_serve):
    body = {"model": "piper", "voice": "alloy", "input": "Hello there. How are you?",
            "stream_format": "sse"}
    response = httpx.post(f"{ray_serve.base_url}/v1/audio/speech", json=body, timeout=120)
    events = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert events[0]["type"] == "speech.audio.delta"
    assert events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["output_tokens"] > 10


def test_errors_from_a_replica_keep_openai_envelope(ray_serve):
    with ray_serve.sdk() as client, pytest.raises(openai.BadRequestError) as err, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client.audio.translations.create(model=WHISPER, file=_clip("cards_001.wav"))
    assert err.value.body["code"] == "unsupported_value"
    assert err.value.body["param"] == "model"
    assert "English-only" in err.value.body["message"]


def test_health_and_metrics_cover_the_deployments(ray_serve):
    health = ray_serve.health()
    assert {"ingress", "model-whisper-tiny_en", "model-whisper-base", "model-piper"} <= set(
        health["deployments"]
    )
    assert all(d["status"] == "HEALTHY" for d in health["deployments"].values())
    assert {r["model"] for r in health["replicas"]} == {WHISPER, "whisper-base", "piper"}
    labels = _samples(ray_serve, "voxserve_model_loaded")
    loaded = {(lab["deployment"], lab["model"]) for lab, value in labels if value == 1}
    assert {(WHISPER, WHISPER), ("whisper-base", "whisper-base"), ("piper", "piper")} <= loaded
    requests = _samples(ray_serve, "voxserve_requests")
    assert {lab["deployment"] for lab, _ in requests} == {"ingress"}  # HTTP is the ingress's


# --- live sessions: the session in the ingress, its decode passes and speech on replicas --------


def _admitted(deployment: Deployment, model: str) -> float:
    return sum(_per_replica(deployment, "voxserve_admitted", model).values())


def _ingress_admitted(deployment: Deployment) -> float:
    return sum(value for labels, value in _samples(deployment, "voxserve_admitted")
               if labels.get("deployment") == "ingress")


async def _live(deployment: Deployment, session):
    """Runs `session(client)` with the async SDK, bounded so that a broken cluster fails the
    test instead of hanging it."""
    import asyncio

    client = openai.AsyncOpenAI(base_url=f"{deployment.base_url}/v1", api_key="test",
                                max_retries=0)
    async with client:
        return await asyncio.wait_for(session(client), PATIENCE)


def test_realtime_transcription_through_the_ingress(ray_serve):
    import asyncio

    clips = ["sense_and_sensibility_01_austen_64kb-0870.wav", "arctic_a0007.wav"]
    audio = pcm24(speech(*clips, gap=1.5))
    before, ingress_before = _admitted(ray_serve, WHISPER), _ingress_admitted(ray_serve)

    async def session(client: openai.AsyncOpenAI) -> list:
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"model": "whisper-1", "language": "en"}}}})
            assert (await conn.recv()).type == "session.updated"
            for piece in chunks(audio, 48_000):
                await conn.input_audio_buffer.append(audio=piece)
            events = []
            while sum(e.type == "conversation.item.done" for e in events) < len(clips):
                events.append(await conn.recv())
            return events

    events = asyncio.run(_live(ray_serve, session))
    completed = [e for e in events
                 if e.type == "conversation.item.input_audio_transcription.completed"]
    assert len(completed) == len(clips)
    for name, event in zip(clips, completed, strict=True):
        assert _matches(event.transcript, reference_texts()[name]), (name, event.transcript)
        deltas = [e.delta for e in events
                  if e.type.endswith(".delta") and e.item_id == event.item_id]
        assert "".join(deltas) == event.transcript
    # Every pass (at least the final one per item) was admitted by a Whisper replica; the
    # ingress, which has no model, admitted none.
    assert _admitted(ray_serve, WHISPER) - before >= len(clips)
    assert _ingress_admitted(ray_serve) == ingress_before == 0


def test_realtime_translation_through_the_ingress(ray_serve):
    import asyncio

    import numpy as np

    french = decode_audio(audio_path("audio_french.wav").read_bytes())[: 12 * SAMPLE_RATE]
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = pcm24(np.concatenate([silence, french, silence]))
    before = {m: _admitted(ray_serve, m) for m in ("whisper-base", "piper")}

    async def session(client: openai.AsyncOpenAI) -> list:
        async with client.realtime.translations.connect(model="whisper-base>piper") as conn:
            events = [await conn.recv()]
            assert events[0].type == "session.created"
            for piece in chunks(audio, 9600):
                await conn.session.input_audio_buffer.append(audio=piece)
            await conn.session.close()
            async for event in conn:
                events.append(event)
            return events

    events = asyncio.run(_live(ray_serve, session))
    assert events[-1].type == "session.closed", events[-1]
    english = "".join(e.delta for e in events if e.type == "session.output_transcript.delta")
    words = _words(english)
    assert len(words) >= 5, english
    assert not {"le", "la", "les", "est", "des", "une", "nous"} & set(words), english
    pcm = b"".join(base64.b64decode(e.delta) for e in events
                   if e.type == "session.output_audio.delta")
    assert len(pcm) / 2 / 24_000 > 1  # seconds of speech
    # Translated by the whisper-base replica, spoken by the Piper replica.
    assert all(_admitted(ray_serve, m) > before[m] for m in before)


def test_realtime_diarization_through_the_ingress(ray_serve):
    """A diarization model in a live session: each item is diarized on a Whisper replica
    (the packaged diarizer, in its own lane there), with the session's earlier voices as known
    speakers, so OpenAI's two-speaker meeting, twice, keeps its two labels across the four
    items (the agent; the customer, then the agent; the same again)."""
    import asyncio

    audio = pcm24(speech("audio_meeting.wav", "audio_meeting.wav", gap=1.5))

    async def session(client: openai.AsyncOpenAI) -> list:
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"model": "gpt-4o-transcribe-diarize", "language": "en"}}}})
            updated = await conn.recv()
            assert updated.type == "session.updated", updated
            for piece in chunks(audio, 48_000):
                await conn.input_audio_buffer.append(audio=piece)
            events = []
            while sum(e.type == "conversation.item.done" for e in events) < 4:
                events.append(await conn.recv())
            return events

    events = asyncio.run(_live(ray_serve, session))
    assert not [e for e in events if e.type == "error"]
    completed = [e for e in events
                 if e.type == "conversation.item.input_audio_transcription.completed"]
    assert len(completed) == 4
    speakers = []
    for item in completed:
        segments = [e for e in events if e.type.endswith(".segment") and e.item_id == item.item_id]
        assert segments and "".join(s.text for s in segments) == item.transcript
        speakers.append([s.speaker for s in segments])
    agent, customer = speakers[0][0], speakers[1][0]
    assert agent != customer
    assert speakers[1] == [customer, agent]
    assert speakers[2] == speakers[0] and speakers[3] == speakers[1]

    # The diarizer ran on the Whisper replicas, once per item at least.
    def diarized() -> float:
        return sum(value for labels, value in _samples(ray_serve, "voxserve_admitted")
                   if labels.get("model") == "senko-diarizer"
                   and labels.get("deployment") == WHISPER)

    _wait(lambda: diarized() >= 4, "the Whisper replicas' diarizer counts", patience=60)


def test_two_ingress_replicas_accept_one_client_secret(ray_serve):
    """A second ingress application with two replicas, deployed by the deploy step's own
    `ingress_application` onto the same model deployments: every client secret made through
    it opens a session through it, whichever replica made it and whichever accepts the
    socket (with secrets kept per process, each connect had one chance in two of a 401)."""
    import asyncio

    from ray_cluster import run_ingress_driver

    app, prefix = "voxserve-two", "/two"
    base = f"{ray_serve.base_url}{prefix}"
    env = ray_serve.cluster.env
    run_ingress_driver(ray_serve.cluster.address, env, app, prefix, replicas=2)
    try:
        # Both replicas answer (Serve's proxy spreads requests over them).
        def two_answer() -> bool:
            pids = {httpx.get(f"{base}/health", timeout=60).json()["ingress"]["pid"]
                    for _ in range(12)}
            return len(pids) == 2

        _wait(two_answer, "two ingress replicas to answer", patience=60)
        secrets = []
        with openai.OpenAI(base_url=f"{base}/v1", api_key="test", max_retries=0) as sdk:
            for _ in range(8):
                secrets.append(sdk.realtime.client_secrets.create(session={
                    "type": "transcription", "audio": {"input": {
                        "transcription": {"model": "whisper-1", "language": "en"}}}}).value)

        async def connect_with(secret: str) -> str:
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
            async with client, client.realtime.connect(extra_query={"intent": "transcription"}) \
                    as conn:
                event = await asyncio.wait_for(conn.recv(), 60)
                return event.type if event.type != "error" else event.error.code

        async def all_of_them() -> list[str]:
            return [await connect_with(secret) for secret in secrets]

        assert asyncio.run(all_of_them()) == ["session.created"] * len(secrets)
    finally:
        run_ingress_driver(ray_serve.cluster.address, env, app, "delete")


# --- scale-out, backpressure, cancellation ----------------------------------------------------


def _all_samples(deployment: Deployment) -> list[tuple[str, dict, float]]:
    """(family, labels, value) of every sample of one /metrics answer."""
    text = deployment.get("/metrics").text
    return [(family.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if not s.name.endswith("_created")]


def _samples(deployment: Deployment, family_name: str) -> list[tuple[dict, float]]:
    return [(labels, value) for family, labels, value in _all_samples(deployment)
            if family == family_name]


def _per_replica(deployment: Deployment, family_name: str, model: str) -> dict[str, float]:
    """Each of the model's replicas' sample. /metrics reaches replicas through Ray's router,
    a few calls each, and can miss one: asked again until every replica has answered."""
    def every_replica() -> dict[str, float] | None:
        answered: set[str] = set()  # a replica that has not counted anything yet answers too
        values: dict[str, float] = {}
        for family, labels, value in _all_samples(deployment):
            if labels.get("deployment") != model:
                continue
            answered.add(labels["replica"])
            if family == family_name and labels.get("model") == model:
                values[labels["replica"]] = value
        if len(answered) < REPLICAS[model]:
            return None
        return {replica: values.get(replica, 0.0) for replica in answered}

    return _wait(every_replica, f"{family_name} of every {model} replica")


def _all_idle(deployment: Deployment, model: str) -> bool:
    """Every replica of `model` reports no work: each must have answered (/health passes over
    a replica Ray's router counts as busier than another)."""
    replicas = deployment.replicas(model)
    return len(replicas) == REPLICAS[model] and all(
        r["busy_slots"] == 0 and r["queued"] == 0 for r in replicas
    )


def _two_whisper_replicas(deployment: Deployment) -> list[dict]:
    def two() -> list[dict] | None:
        try:
            replicas = deployment.replicas(WHISPER)
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return replicas if len(replicas) == 2 else None

    return _wait(two, "two running Whisper replicas")


def test_two_whisper_replicas_on_two_nodes_serve_concurrent_requests(ray_serve):
    replicas = _two_whisper_replicas(ray_serve)
    assert len({r["node"] for r in replicas}) == 2  # one per node
    # A pass of the realtime tests before may still hold a slot (a session's end cancels the
    # call, the replica finishes the decode in flight): four requests fit only in idle slots.
    _wait(lambda: _all_idle(ray_serve, WHISPER), "the Whisper replicas to be idle")
    before = _per_replica(ray_serve, "voxserve_admitted", WHISPER)
    # As many as the two replicas take at once (2 each here). Ray's router may still count a
    # request of an earlier test as ongoing for a moment after the replica freed its slot (a
    # CI run got a 429 here once): the client retries a 429 after its Retry-After, as the
    # SDK does by default.
    names = [n for n in reference_texts() if n.startswith("sense_and")][:4]
    with ray_serve.sdk(max_retries=4) as client, ThreadPoolExecutor(len(names)) as pool:
        texts = list(pool.map(
            lambda n: client.audio.transcriptions.create(model=WHISPER, file=_clip(n)).text, names
        ))
    for name, text in zip(names, texts, strict=True):  # each request got its own result
        assert _matches(text, reference_texts()[name]), (name, text)
    after = _per_replica(ray_serve, "voxserve_admitted", WHISPER)
    served = {r for r, n in after.items() if n > before.get(r, 0)}
    assert served == {r["replica"] for r in replicas}


async def _hold_speech_streams(base_url: str, count: int, body: dict) -> list[tuple]:
    """`count` speech requests at once; each admitted one reads its first audio, then all leave
    together without reading the rest."""
    import asyncio

    release = asyncio.Event()
    started = 0

    async def one(http: httpx.AsyncClient):
        nonlocal started
        async with http.stream("POST", f"{base_url}/v1/audio/speech", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code, response.headers, response.json()
            async for _ in response.aiter_bytes():
                break
            started += 1
            await release.wait()
            return 200, response.headers, None

    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        tasks = [asyncio.create_task(one(http)) for _ in range(count)]
        # Two stream and the refused come back at once; the queued wait for the streams.
        end = time.monotonic() + PATIENCE
        while not (started >= 2 and any(t.done() for t in tasks)):
            assert time.monotonic() < end, "gave up waiting for streams and refusals"
            await asyncio.sleep(0.1)
        release.set()
        return list(await asyncio.gather(*tasks))


def test_full_cluster_answers_429_and_leaving_clients_cancel_the_work(ray_serve):
    import asyncio

    audio_before = sum(_per_replica(ray_serve, "voxserve_audio_seconds", "piper").values())
    body = {"model": "piper", "voice": "alloy", "input": " ".join(SENTENCES),
            "response_format": "pcm"}
    # One Piper replica takes 2 at once and Ray's router queues 2 more: 4 of 8 are refused.
    results = asyncio.run(_hold_speech_streams(ray_serve.base_url, 8, body))
    refused = [(headers, envelope) for status, headers, envelope in results if status == 429]
    assert len(refused) >= 1 and sum(status == 200 for status, *_ in results) >= 2
    for headers, envelope in refused:
        assert int(headers["retry-after"]) >= 1
        assert envelope["error"]["code"] == "rate_limit_exceeded"
        assert envelope["error"]["type"] == "requests"
    # Every stream was left after its first audio: the replica stops each one (its slots free
    # up) and none of them ran to the end (a finished one would count its audio seconds).
    _wait(lambda: _all_idle(ray_serve, "piper"), "the Piper replica to stop the abandoned streams")
    audio_after = sum(_per_replica(ray_serve, "voxserve_audio_seconds", "piper").values())
    assert audio_after == audio_before


def test_an_upload_whose_client_left_is_cancelled_on_the_replica(ray_serve):
    """A non-streamed transcription whose client leaves while a Whisper replica decodes it:
    the call is cancelled there (the replica frees its slot at once and never finishes the
    transcript, which would count its audio seconds), as on one machine."""
    import asyncio

    replicas = _two_whisper_replicas(ray_serve)
    _wait(lambda: _all_idle(ray_serve, WHISPER), "the Whisper replicas to be idle")
    audio_before = sum(_per_replica(ray_serve, "voxserve_audio_seconds", WHISPER).values())
    joined = _joined(("sense_and",), 4)  # two minutes: far longer to decode than the test waits

    async def leave_mid_decode() -> None:
        async with httpx.AsyncClient(timeout=PATIENCE) as http:
            upload = asyncio.create_task(http.post(
                f"{ray_serve.base_url}/v1/audio/transcriptions", data={"model": WHISPER},
                files={"file": ("long.wav", joined.wav)}))
            await asyncio.to_thread(_computing_replica, replicas)
            upload.cancel()  # the client goes: its connection closes
            with pytest.raises(asyncio.CancelledError):
                await upload

    asyncio.run(leave_mid_decode())
    _wait(lambda: _all_idle(ray_serve, WHISPER), "the replica to drop the abandoned upload",
          patience=30)
    audio_after = sum(_per_replica(ray_serve, "voxserve_audio_seconds", WHISPER).values())
    assert audio_after == audio_before


# --- faults -----------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _computing_replica(replicas: list[dict], window: float = 0.5) -> dict:
    """The replica whose process is decoding (using a core), told apart by the CPU time its
    process spends, not by /health: /health reaches replicas through Ray's router, which sends
    each call to the replica with the fewest requests, so a busy one beside an idle one is
    rarely asked."""

    def computing() -> dict | None:
        before = {r["pid"]: _cpu_seconds(r["pid"]) for r in replicas}
        time.sleep(window)
        used = {r["pid"]: _cpu_seconds(r["pid"]) - before[r["pid"]] for r in replicas}
        busiest = max(replicas, key=lambda r: used[r["pid"]])
        # An idle replica's process spends about 1 % of a core; a decoding one most of one.
        return busiest if used[busiest["pid"]] > 0.3 * window else None

    return _wait(computing, "a Whisper replica to decode", patience=30)


def _busy_replica(deployment: Deployment, model: str) -> dict | None:
    try:
        busy = [r for r in deployment.replicas(model) if r["busy_slots"] > 0]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return busy[0] if busy else None


def _joined(prefixes: tuple[str, ...], times: int):
    return join_clips([n for n in reference_texts() if n.startswith(prefixes)] * times)


def _all_clips_heard(text: str, joined) -> bool:
    return all(_matches(text, reference_texts()[name]) for name, _ in joined.placements)


def test_killed_whisper_replica_mid_session_is_survived(ray_serve):
    """A Whisper replica killed while a live session's passes run on it: a pass whose replica
    died is made again on the other one (nothing had been sent), so every turn still ends;
    the session is left without hanging, however it goes."""
    import asyncio

    replicas = _two_whisper_replicas(ray_serve)
    clips = ["sense_and_sensibility_01_austen_64kb-0870.wav", "arctic_a0007.wav",
             "sense_and_sensibility_01_austen_64kb-0890.wav", "goforward.wav"]
    audio = pcm24(speech(*clips, gap=1.5))
    killed: list[int] = []

    async def session(client: openai.AsyncOpenAI) -> list:
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"model": WHISPER, "language": "en"}}}})
            for piece in chunks(audio, 48_000):
                await conn.input_audio_buffer.append(audio=piece)
            victim = await asyncio.to_thread(_computing_replica, replicas)
            os.kill(victim["pid"], signal.SIGKILL)
            killed.append(victim["pid"])
            events = []
            ended = ("conversation.item.input_audio_transcription.completed",
                     "conversation.item.input_audio_transcription.failed")
            while sum(e.type in ended for e in events) < len(clips):
                event = await asyncio.wait_for(conn.recv(), 120)  # nothing hangs
                events.append(event)
                if event.type == "error" and event.error.type == "server_error":
                    break  # the session ended with an error event: allowed, not hung
            return events

    events = asyncio.run(_live(ray_serve, session))
    completed = [e for e in events
                 if e.type == "conversation.item.input_audio_transcription.completed"]
    failed = [e for e in events if e.type == "conversation.item.input_audio_transcription.failed"]
    errors = [e for e in events if e.type == "error"]
    assert killed
    print(f"replica killed mid-session: {len(completed)} turns completed, {len(failed)} failed, "
          f"{len(errors)} error events")  # -rP shows which way it went
    if errors:  # the session ended with an error event (allowed): a server error, not a hang
        assert errors[-1].error.type == "server_error", errors
    else:  # it survived: every turn ended, almost always with its transcript (retried passes)
        assert len(completed) + len(failed) == len(clips)
        assert all(e.error.code == "replica_unavailable" for e in failed), failed
        assert len(completed) >= len(clips) - 1, failed
        texts = [reference_texts()[name] for name in clips]
        for event in completed:
            assert any(_matches(event.transcript, text) for text in texts), event.transcript
    pids = {r["pid"] for r in _two_whisper_replicas(ray_serve)}  # Ray started a new one
    assert killed[0] not in pids


def test_killed_whisper_replica_is_retried_and_restarted(ray_serve):
    replicas = _two_whisper_replicas(ray_serve)
    old = {r["pid"] for r in replicas}
    # Clips that never repeat: a chunk saying the same thing twice fails Whisper's
    # repeated-text test and is decoded again by sampling, whose text varies.
    long_a, long_b = _joined(("sense_and",), 1), _joined(("arctic", "beckett", "goforward"), 1)
    with ray_serve.sdk() as client, ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(client.audio.transcriptions.create, model=WHISPER, file=(n, a.wav))
            for n, a in (("a.wav", long_a), ("b.wav", long_b))
        ]
        victim = _computing_replica(replicas)
        os.kill(victim["pid"], signal.SIGKILL)
        # Nothing had been sent: the ingress made the call again, on a live replica. Each
        # request still gets its own transcript.
        text_a, text_b = (f.result(timeout=PATIENCE).text for f in futures)
    assert _all_clips_heard(text_a, long_a), text_a
    assert _all_clips_heard(text_b, long_b), text_b
    # Ray starts a new replica in the killed one's place.
    pids = {r["pid"] for r in _two_whisper_replicas(ray_serve)}
    assert victim["pid"] not in pids and len(pids & old) == 1


def test_killed_whisper_replica_mid_stream_ends_it_with_a_5xx_envelope(ray_serve):
    replicas = _two_whisper_replicas(ray_serve)
    joined = _joined(("sense_and",), 4)  # over two minutes: the stream is killed well before its end
    with ray_serve.sdk() as client:
        stream = client.audio.transcriptions.create(
            model=WHISPER, file=("long.wav", joined.wav), stream=True
        )
        events = iter(stream)
        assert next(events).type == "transcript.text.delta"
        victim = _computing_replica(replicas)
        os.kill(victim["pid"], signal.SIGKILL)
        with pytest.raises(openai.APIError) as err:
            for _ in events:
                pass
    assert err.value.body["code"] == "replica_unavailable"
    assert err.value.body["type"] == "server_error"
    _two_whisper_replicas(ray_serve)


def test_killed_ingress_is_survived(ray_serve):
    ingress_pid = ray_serve.health()["ingress"]["pid"]
    name = "sense_and_sensibility_01_austen_64kb-0920.wav"
    # A minute of clips that never repeat: seconds of decoding for each request.
    joined = _joined(("sense_and", "arctic", "beckett", "goforward"), 1)

    def sent_to_whisper() -> int:  # the ingress's own count: Ray's router cannot hide it
        return ray_serve.health()["ingress"]["in_flight"][WHISPER]

    # Two requests are in flight when the ingress dies. The proxy answers both in OpenAI's
    # envelope: a client that does not retry sees it, the SDK's retries get the transcript.
    with ray_serve.sdk() as once, ray_serve.sdk(max_retries=8) as retrying, \
            ThreadPoolExecutor(2) as pool:
        failing, retried = (
            pool.submit(client.audio.transcriptions.create, model=WHISPER, file=(n, joined.wav))
            for client, n in ((once, "a.wav"), (retrying, "b.wav"))
        )
        _wait(lambda: sent_to_whisper() >= 2, "both requests to reach Whisper")
        os.kill(ingress_pid, signal.SIGKILL)
        with pytest.raises(openai.InternalServerError) as err:
            failing.result(timeout=PATIENCE)
        assert _all_clips_heard(retried.result(timeout=PATIENCE).text, joined)
        after = retrying.audio.transcriptions.create(model=WHISPER, file=_clip(name)).text
    assert err.value.status_code == 503
    assert err.value.body["code"] == "replica_unavailable"
    assert err.value.body["type"] == "server_error"
    assert _matches(after, reference_texts()[name])
    assert ray_serve.health()["ingress"]["pid"] != ingress_pid
