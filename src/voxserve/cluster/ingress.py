"""The ingress deployment: the whole OpenAI HTTP surface, built by `create_app`, with its
speech services replaced by proxies onto the model deployments and `/health`, `/ready` and
`/metrics` answering for the whole cluster."""

from __future__ import annotations

import asyncio
import logging

import anyio
from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.responses import Response
from starlette.routing import Route

from voxserve.api.errors import error_response
from voxserve.app import create_app
from voxserve.cluster.calls import RemoteModel
from voxserve.cluster.metrics import merge_expositions
from voxserve.cluster.proxies import RemoteModels, RemoteSpeechToText, RemoteTextToSpeech
from voxserve.cluster.served import ServedCatalog, deployment_name
from voxserve.config import Settings
from voxserve.errors import APIError
from voxserve.runtime.metrics import CONTENT_TYPE

log = logging.getLogger("voxserve.cluster")

# /metrics asks a deployment this many times per replica to reach each one (the router
# picks replicas at random, and a replica cannot be addressed by name).
METRICS_TRIES_PER_REPLICA = 4


class IngressServer:
    """Serve builds the ASGI app on the replica (`serve.ingress()` with no app), from the
    handles of the model deployments."""

    def __init__(self, settings: Settings, handles: dict[str, DeploymentHandle]) -> None:
        self._settings = settings
        self._handles = handles

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_ingress_app(self._settings, self._handles)


def build_ingress_app(settings: Settings, handles: dict[str, DeploymentHandle]) -> FastAPI:
    # Models are loaded by their deployments, never here.
    app = create_app(settings.model_copy(update={"preload": []}))
    remote = {m: RemoteModel(m, h, settings.ray.retries) for m, h in handles.items()}
    models = RemoteModels(remote)
    app.state.catalog = ServedCatalog(app.state.catalog, list(remote))
    app.state.stt = RemoteSpeechToText(models)
    app.state.diarized_stt = RemoteSpeechToText(models, diarized=True)
    app.state.tts = RemoteTextToSpeech(models)
    app.state.cluster = ClusterView(settings.ray.app_name, remote)
    _replace_route(app, "/health", cluster_health)
    _replace_route(app, "/ready", cluster_ready)
    _replace_route(app, "/metrics", cluster_metrics)
    return app


def _replace_route(app: FastAPI, path: str, endpoint) -> None:
    app.router.routes[:] = [
        r for r in app.router.routes if not (isinstance(r, Route) and r.path == path)
    ]
    app.add_api_route(path, endpoint, methods=["GET"], response_model=None)


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
            name: {"status": str(d.status.value), "replicas": dict(d.replica_states)}
            for name, d in app.deployments.items()
        }

    async def replica_health(self) -> list[dict]:
        """One replica's own report per model (the router picks which)."""
        async def one(remote: RemoteModel) -> dict:
            try:
                return await remote.call("health")
            except APIError as exc:
                return {"model": remote.model_id, "error": exc.message}
        return list(await asyncio.gather(*(one(r) for r in self.models.values())))

    async def replica_metrics(self, replicas: dict[str, int]) -> list[tuple[dict, bytes]]:
        parts: dict[str, tuple[dict, bytes]] = {}
        for model_id, remote in self.models.items():
            wanted = max(1, replicas.get(model_id, 1))
            seen: set[str] = set()
            for _ in range(wanted * METRICS_TRIES_PER_REPLICA):
                try:
                    replica, text = await remote.call("metrics")
                except APIError:
                    break
                seen.add(replica)
                parts[replica] = ({"deployment": model_id, "replica": replica}, text)
                if len(seen) >= wanted:
                    break
        return list(parts.values())


def _running(deployment: dict) -> int:
    return int(deployment["replicas"].get("RUNNING", 0))


async def cluster_health(request: Request) -> dict:
    cluster: ClusterView = request.app.state.cluster
    deployments, replicas = await asyncio.gather(
        cluster.deployments(), cluster.replica_health()
    )
    return {"status": "ok", "deployments": deployments, "replicas": replicas}


async def cluster_ready(request: Request) -> Response | dict:
    """200 once every model deployment has a running replica; 503 until then."""
    cluster: ClusterView = request.app.state.cluster
    deployments = await cluster.deployments()
    missing = [m for m in cluster.models
               if _running(deployments.get(deployment_name(m), {"replicas": {}})) == 0]
    if not missing:
        return {"status": "ready", "deployments": deployments}
    return error_response(
        APIError(f"Not ready: no running replica for {', '.join(missing)}.", status=503,
                 type="server_error", code="not_ready", headers={"retry-after": "1"})
    )


async def cluster_metrics(request: Request) -> Response:
    cluster: ClusterView = request.app.state.cluster
    deployments = await cluster.deployments()
    counts = {m: _running(deployments.get(deployment_name(m), {"replicas": {}}))
              for m in cluster.models}
    context = serve.get_replica_context()
    ingress = context.replica_id.unique_id if context else "local"
    parts = [({"deployment": "ingress", "replica": ingress},
              request.app.state.metrics.exposition())]
    parts += await cluster.replica_metrics(counts)
    return Response(merge_expositions(parts), media_type=CONTENT_TYPE)
