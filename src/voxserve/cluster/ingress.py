"""The ingress deployment: the whole OpenAI HTTP surface, built by `create_app`, with its
speech services replaced by proxies onto the model deployments and `/health`, `/ready` and
`/metrics` answering for the whole cluster."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import anyio
import ray
from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.responses import Response

from voxserve.api.errors import error_response
from voxserve.app import create_app
from voxserve.cluster.calls import RemoteModel
from voxserve.cluster.metrics import merge_expositions
from voxserve.cluster.proxies import (
    RemoteDecodePasses,
    RemoteModels,
    RemoteSpeechToText,
    RemoteTextToSpeech,
)
from voxserve.cluster.served import ServedCatalog, deployment_name
from voxserve.config import Settings
from voxserve.diarize.wiring import DIARIZER_ID, SUFFIX
from voxserve.errors import ServiceError, Unavailable
from voxserve.realtime.hub import EphemeralSecrets
from voxserve.runtime.catalog import Catalog
from voxserve.runtime.metrics import CONTENT_TYPE
from voxserve.services import build_services

log = logging.getLogger("voxserve.cluster")

# /health and /metrics ask a deployment up to this many times per replica to reach each one.
SAMPLES_PER_REPLICA = 4


class IngressServer:
    """Serve builds the ASGI app on the replica (`serve.ingress()` with no app), from the
    handles of the model deployments."""

    def __init__(
        self, settings: Settings, handles: dict[str, DeploymentHandle],
        secret_key: bytes | None = None,
    ) -> None:
        self._settings = settings
        self._handles = handles
        self._secret_key = secret_key

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_ingress_app(self._settings, self._handles, self._secret_key)


def build_ingress_app(
    settings: Settings, handles: dict[str, DeploymentHandle], secret_key: bytes | None = None
) -> FastAPI:
    """The ingress's app. `secret_key` signs the realtime client secrets: the deploy step
    draws one per deployment and gives it to every ingress replica, so that a secret made by
    one replica opens a session on any other (None: a key of this replica's own)."""
    # Models are loaded by their deployments, never here.
    local = build_services(settings.model_copy(update={"preload": []}))
    remote = {m: RemoteModel(m, h, settings.ray.retries) for m, h in handles.items()}
    models = RemoteModels(remote)
    stt = RemoteSpeechToText(models, local.transcriber_for)
    diarize_on = live_diarization_model(local.catalog, list(remote))
    services = replace(
        local, stt=stt, diarized_stt=stt, tts=RemoteTextToSpeech(models),
        catalog=ServedCatalog(local.catalog, list(remote),
                              helpers=(DIARIZER_ID,) if diarize_on else ()),
        passes=RemoteDecodePasses(models, {m: initial_replicas(settings, m) for m in remote},
                                  diarize_on=diarize_on),
    )
    app = create_app(services=services)
    app.state.realtime.secrets = EphemeralSecrets(secret_key)
    app.state.cluster = ClusterView(settings.ray.app_name, remote)
    _replace_route(app, "/health", cluster_health)
    _replace_route(app, "/ready", cluster_ready)
    _replace_route(app, "/metrics", cluster_metrics)
    return app


def live_diarization_model(catalog: Catalog, served: list[str]) -> str | None:
    """The deployment whose replicas diarize live sessions' items: the first served model
    with a `<whisper>+diarize` id (its replicas run that id's uploads, diarizer included);
    None when there is none (a diarization model is then refused in a live session)."""
    if catalog.spec(DIARIZER_ID) is None:
        return None
    return next((m for m in served if catalog.spec(f"{m}{SUFFIX}") is not None), None)


def initial_replicas(settings: Settings, model_id: str) -> int:
    """The replicas a model's deployment starts with (autoscaled: its lower bound)."""
    ray_settings = settings.ray
    replicas = int(ray_settings.per_model("replicas", model_id, 1))
    return max(1, int(ray_settings.per_model("min_replicas", model_id, replicas)))


def _replace_route(app: FastAPI, path: str, endpoint) -> None:
    """Put a route for `path` ahead of the one `create_app` included (routes match in order;
    included routers cannot be edited in place)."""
    app.add_api_route(path, endpoint, methods=["GET"], response_model=None)
    app.router.routes.insert(0, app.router.routes.pop())


class ClusterView:
    """What the ingress can learn about the model deployments."""

    def __init__(self, app_name: str, models: dict[str, RemoteModel]) -> None:
        self.app_name = app_name
        self.models = models

    async def deployments(self) -> dict[str, dict]:
        """Serve's view of each deployment: its status and replicas by state."""
        status = await anyio.to_thread.run_sync(serve.status)
        app = status.applications.get(self.app_name)
        if app is None:
            return {}
        return {
            name: {
                "status": str(getattr(d.status, "value", d.status)),
                "replicas": {str(getattr(k, "value", k)): n for k, n in d.replica_states.items()},
            }
            for name, d in app.deployments.items()
        }

    async def each_replica(self, method: str, replicas: dict[str, int]) -> list[dict]:
        """`method`'s answer from every running replica of every model, as far as the router
        lets us reach them (a replica cannot be addressed).

        The router sends each call to the replica with the fewest requests, so a busy replica
        beside an idle one may never be asked: the model then gets an `unreached` count
        instead of a silent gap."""
        answers: dict[str, dict] = {}
        for model_id, remote in self.models.items():
            wanted = max(1, replicas.get(model_id, 1))
            seen: set[str] = set()
            for _ in range(wanted * SAMPLES_PER_REPLICA):
                try:
                    answer = await remote.call(method)
                except ServiceError as exc:
                    answers[f"{model_id}:error"] = {"model": model_id, "error": exc.message}
                    break
                seen.add(answer["replica"])
                answers[answer["replica"]] = {"model": model_id, **answer}
                if len(seen) >= wanted:
                    break
            else:
                answers[f"{model_id}:unreached"] = {"model": model_id,
                                                    "unreached": wanted - len(seen)}
        return list(answers.values())

    async def running_replicas(self) -> tuple[dict[str, dict], dict[str, int]]:
        deployments = await self.deployments()
        counts = {
            m: int(deployments.get(deployment_name(m), {}).get("replicas", {}).get("RUNNING", 0))
            for m in self.models
        }
        return deployments, counts


async def cluster_health(request: Request) -> dict:
    cluster: ClusterView = request.app.state.cluster
    deployments, counts = await cluster.running_replicas()
    replicas = await cluster.each_replica("health", counts)
    context = serve.get_replica_context()
    ingress = {"replica": context.replica_id.unique_id if context else "local",
               "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
               "in_flight": {m: remote.in_flight for m, remote in cluster.models.items()}}
    return {"status": "ok", "ingress": ingress, "deployments": deployments,
            "replicas": replicas}


async def cluster_ready(request: Request) -> Response | dict:
    """200 once every model deployment has a running replica; 503 until then."""
    cluster: ClusterView = request.app.state.cluster
    deployments, counts = await cluster.running_replicas()
    missing = [m for m, n in counts.items() if n == 0]
    if not missing:
        return {"status": "ready", "deployments": deployments}
    return error_response(
        Unavailable(f"Not ready: no running replica for {', '.join(missing)}.", code="not_ready")
    )


async def cluster_metrics(request: Request) -> Response:
    cluster: ClusterView = request.app.state.cluster
    _, counts = await cluster.running_replicas()
    context = serve.get_replica_context()
    ingress = context.replica_id.unique_id if context else "local"
    parts = [({"deployment": "ingress", "replica": ingress},
              request.app.state.metrics.exposition())]
    for answer in await cluster.each_replica("metrics", counts):
        if "exposition" in answer:
            parts.append(({"deployment": answer["model"], "replica": answer["replica"]},
                          answer["exposition"]))
    return Response(merge_expositions(parts), media_type=CONTENT_TYPE)
