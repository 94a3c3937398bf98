"""A local Ray cluster of two nodes on loopback, for the Ray tests and bench/bench_ray.py:
`ray start --block` processes (the head, then a second node), each with a slice of the CPU,
free ports and a process group of its own, so that stopping it ends exactly these processes
and what they started (never a machine-wide `ray stop`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on loopback. The sockets stay bound until all are chosen:
    ports chosen one at a time can repeat (two agents of one node once got the same port, and
    the node refused to start)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# The ports every node binds: two nodes on one machine must not share Ray's fixed defaults.
NODE_PORT_OPTIONS = (
    "--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
    "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port",
)
NODE_START_ATTEMPTS = 3


def loopback_env(**extra: str) -> dict[str, str]:
    """The environment for the nodes (their workers inherit it) and the driver."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Loopback only: no tokens to share between the nodes.
        "RAY_AUTH_MODE": "disabled",
        # Ray's Python side then takes loopback as this machine's address (its agents bind it).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        **extra,
    }


# `ray start`, with two adjustments for one busy machine (test and benchmark harness only):
# - Ray keeps loopback addresses only while it believes it is single-node
#   (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; otherwise it rewrites 127.0.0.1 to the machine's
#   outward address and binds its agents there), and then its CLI refuses to add a node: the
#   refusal is lifted in the CLI's own view of the flag only.
# - A raylet gives up (and aborts) when its dashboard agent has not reported its HTTP port
#   within a fixed 15 s, which a loaded machine misses; the port is given to the raylet
#   up front instead, as the other agent ports are by their `ray start` options.
_NODE_START = """
import sys, types
import ray._private.ray_constants as constants
import ray._private.services as services
import ray.scripts.scripts as cli

cli.ray_constants = types.SimpleNamespace(**{**vars(constants), "ENABLE_RAY_CLUSTER": True})
listen = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--dashboard-agent-listen-port="))
start_ray_process = services.start_ray_process

def start_with_listen_port(command, process_type, *args, **kwargs):
    if process_type == constants.PROCESS_TYPE_RAYLET:
        command = [*command, f"--dashboard_agent_listen_port={listen}"]
    return start_ray_process(command, process_type, *args, **kwargs)

services.start_ray_process = start_with_listen_port
sys.argv = ["ray", *sys.argv[1:]]
cli.main()
"""


class LocalRayCluster:
    """`ray start --block` processes (head, then a second node) on 127.0.0.1, each in a
    process group of its own so that teardown ends exactly them and what they started."""

    def __init__(
        self, temp_dir: Path, env: dict[str, str], logs: Path, cpus_per_node: int = 1
    ) -> None:
        self.address = ""  # the head's GCS, host:port, once it has started
        self.temp_dir = temp_dir
        self.env = env
        self.logs = logs
        self.cpus = cpus_per_node
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        # One node at a time: a node whose agents start slowly (a busy machine) is given up
        # by its raylet after a fixed wait.
        self._start_node("head", ["--head", "--include-dashboard=false"],
                         own_ports=("--port", "--ray-client-server-port"))
        self._start_node("node2", [f"--address={self.address}"])

    def _start_node(self, name: str, args: list[str], own_ports: tuple[str, ...] = ()) -> None:
        """Starts a node, again with new ports when it does not come up (its raylet's wait
        for the agents can still run out on a very busy machine)."""
        for attempt in range(NODE_START_ATTEMPTS):
            options = (*own_ports, *NODE_PORT_OPTIONS)
            ports = dict(zip(options, free_ports(len(options)), strict=True))
            if "--port" in ports:
                self.address = f"127.0.0.1:{ports['--port']}"
            log_name = f"{name}-{attempt}.log"
            log = open(self.logs / log_name, "wb")  # noqa: SIM115 (open while the node runs)
            self.processes.append(subprocess.Popen(
                [sys.executable, "-c", _NODE_START, "start", *args, "--block",
                 "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                 "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
                 *(f"{option}={port}" for option, port in ports.items())],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))
            try:
                return self._wait_started(log_name)
            except RuntimeError:
                _signal_sessions({self.processes[-1].pid}, signal.SIGKILL)
                if attempt == NODE_START_ATTEMPTS - 1:
                    raise

    def _wait_started(self, log_name: str) -> None:
        end = time.monotonic() + 180
        log = self.logs / log_name
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if time.monotonic() > end or self.processes[-1].poll() is not None:
                raise RuntimeError(f"a Ray node did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Ends every process of the nodes' sessions: Ray's workers start process groups of
        their own, but stay in the session of the `ray start` that launched them."""
        sessions = {process.pid for process in self.processes}
        _signal_sessions(sessions, signal.SIGTERM)
        end = time.monotonic() + 20
        while _session_members(sessions) and time.monotonic() < end:
            time.sleep(0.2)
        _signal_sessions(sessions, signal.SIGKILL)
        for process in self.processes:
            process.wait(timeout=10)


def _session_members(sessions: set[int]) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state, ppid, pgrp, session. Zombies are gone already.
        if int(fields[3]) in sessions and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _signal_sessions(sessions: set[int], sig: signal.Signals) -> None:
    for pid in _session_members(sessions):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def start_voxserve(address: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`voxserve serve --ray ADDRESS`: deploys, then stays until it is stopped."""
    return subprocess.Popen(
        [sys.executable, "-m", "voxserve", "serve", "--ray", address, "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


# A driver that deploys a second ingress application beside voxserve's, onto the same model
# deployments (their handles): the deploy step's own `ingress_application`, with its own
# replica count, application name and route prefix. `delete` removes it again.
_SECOND_INGRESS = """
import sys
import ray
from ray import serve
from voxserve.cluster.deploy import ingress_application
from voxserve.cluster.served import deployment_name
from voxserve.config import Settings

address, app, prefix, replicas = sys.argv[1:5]
ray.init(address=address, _node_ip_address="127.0.0.1", include_dashboard=False)
if prefix == "delete":
    serve.delete(app)
    sys.exit(0)
settings = Settings()
ray_settings = settings.ray.model_copy(update={
    "ingress_replicas": int(replicas), "ingress_num_cpus": 0.05, "app_name": app})
settings = settings.model_copy(update={"ray": ray_settings})
handles = {m: serve.get_deployment_handle(deployment_name(m), app_name="voxserve")
           for m in settings.ray.models}
serve.run(ingress_application(settings, handles), name=app, route_prefix=prefix)
"""


def run_ingress_driver(address: str, env: dict[str, str], app: str, prefix: str,
                       replicas: int = 2, timeout: float = 300) -> None:
    """Deploys (or, with prefix "delete", deletes) a second ingress application; returns once
    Serve reports it running."""
    done = subprocess.run(
        [sys.executable, "-c", _SECOND_INGRESS, address, app, prefix, str(replicas)],
        env=env, capture_output=True, timeout=timeout, start_new_session=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the ingress driver failed: {done.stderr.decode()[-3000:]}")
