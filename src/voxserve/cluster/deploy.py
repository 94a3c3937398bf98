"""The Serve application for the settings, and `serve_on_ray` behind `voxserve serve --ray`:
connect to a cluster (or start a local one), deploy, and serve HTTP through Serve's proxy."""

from __future__ import annotations

import logging
import time

import ray
from ray import serve
from ray.serve import Application

from voxserve.cluster.ingress import IngressServer
from voxserve.cluster.proxy_errors import CALLBACK, CALLBACK_ENV
from voxserve.cluster.replica import ModelServer
from voxserve.cluster.served import deployment_name, served_models
from voxserve.config import Settings
from voxserve.realtime.hub import EphemeralSecrets
from voxserve.runtime.catalog import ModelSpec
from voxserve.services import build_services

log = logging.getLogger("voxserve.cluster")

INGRESS_NAME = "ingress"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def replica_settings(settings: Settings, model_id: str) -> Settings:
    """A model replica's settings: on CPU its engine uses the cores Ray gives it, not the
    machine's (several replicas share a node)."""
    ray_settings = settings.ray
    if settings.cpu_threads or ray_settings.per_model("num_gpus", model_id) > 0:
        return settings
    threads = max(1, round(ray_settings.per_model("num_cpus", model_id, 1.0)))
    return settings.model_copy(update={"cpu_threads": threads})


def model_deployment_options(settings: Settings, spec: ModelSpec) -> dict:
    ray_settings = settings.ray
    model_id = spec.id
    max_ongoing = ray_settings.max_ongoing_requests
    if not max_ongoing:  # what the replica's own scheduler takes: its slots and its queue
        local = build_services(replica_settings(settings, model_id))
        max_ongoing = local.scheduler.config.slots_for(spec) + settings.max_queue
        local.close()
    options: dict = {
        "name": deployment_name(model_id),
        "ray_actor_options": {
            "num_cpus": ray_settings.per_model("num_cpus", model_id, 1.0),
            "num_gpus": ray_settings.per_model("num_gpus", model_id, 0.0),
        },
        "max_ongoing_requests": max_ongoing,
        "max_queued_requests": ray_settings.max_queued_requests,
    }
    replicas = int(ray_settings.per_model("replicas", model_id, 1))
    low = int(ray_settings.per_model("min_replicas", model_id, replicas))
    high = int(ray_settings.per_model("max_replicas", model_id, low))
    if high > low:
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "initial_replicas": min(max(replicas, low), high),
            "target_ongoing_requests": ray_settings.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = replicas
    if ray_settings.max_replicas_per_node:
        options["max_replicas_per_node"] = ray_settings.max_replicas_per_node
    return options


def build_application(settings: Settings) -> Application:
    """One deployment per served model and the ingress bound to their handles."""
    local = build_services(settings)
    catalog = local.catalog
    local.close()
    handles = {}
    for model_id in served_models(settings, catalog):
        spec = catalog.spec(model_id)
        assert spec is not None
        deployment = serve.deployment(ModelServer).options(
            **model_deployment_options(settings, spec)
        )
        handles[model_id] = deployment.bind(replica_settings(settings, model_id), model_id)
    return ingress_application(settings, handles)


def ingress_application(settings: Settings, handles: dict, name: str = INGRESS_NAME
                        ) -> Application:
    """The ingress deployment bound to the model deployments' handles (bound deployments, or
    handles of deployments already running). One key for the realtime client secrets is
    drawn here, once per deployment, and given to every ingress replica: a secret made by
    one replica is accepted by all (`realtime.hub.EphemeralSecrets`). Replicas Serve starts
    again get the same key; a new deployment draws a new one (outstanding secrets, at most
    two hours long, then fail with 401)."""
    ray_settings = settings.ray
    ingress = serve.deployment(serve.ingress()(IngressServer)).options(
        name=name,
        num_replicas=ray_settings.ingress_replicas,
        ray_actor_options={"num_cpus": ray_settings.ingress_num_cpus},
        max_ongoing_requests=ray_settings.ingress_max_ongoing_requests,
    )
    return ingress.bind(settings, handles, EphemeralSecrets.new_key())


def app_builder(args: dict) -> Application:
    """For Serve's `import_path` (a KubeRay RayService's serveConfigV2, `serve run`): settings
    from the environment of the cluster's pods, with the config's `args` on top."""
    return build_application(Settings(**args))


def deploy(settings: Settings) -> None:
    """Start Serve's HTTP proxy on the settings' host and port and deploy (Ray connected).

    The proxies inherit the controller's environment, which names the middleware that gives
    the proxies' own answers OpenAI's envelope (cluster/proxy_errors.py). Like the host and
    port, it only applies when this call starts Serve; a running Serve keeps its proxies."""
    serve.start(
        proxy_location=settings.ray.proxy_location,
        http_options={"host": settings.host, "port": settings.port},
        controller_options={"runtime_env": {"env_vars": {CALLBACK_ENV: CALLBACK}}},
    )
    serve.run(build_application(settings), name=settings.ray.app_name, route_prefix="/")


def serve_on_ray(settings: Settings, address: str | None) -> None:
    """`voxserve serve --ray [ADDRESS]`: an address connects to that cluster ("auto": the one
    running on this machine); none starts a local cluster that lives as long as this command.
    On a cluster the deployment outlives the command (`serve shutdown` removes it)."""
    local = address is None
    options: dict = {}
    # On loopback this process must be a loopback node too, or Ray would register it under
    # the machine's outward address, which a loopback cluster does not reach.
    host = settings.host if local else address.rsplit(":", 1)[0]
    if host in LOOPBACK:
        options["_node_ip_address"] = "127.0.0.1"
    if local:
        ray.init(include_dashboard=False, **options)
    else:
        ray.init(address=address, **options)
    deploy(settings)
    log.info("voxserve serving on Ray at http://%s:%d", settings.host, settings.port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if local:
            serve.shutdown()
            ray.shutdown()
