"""The cost of going through Ray: one and two Whisper replicas on a local two-node Ray cluster
against the single-process server at the same total CPU.

    python bench/bench_ray.py [--model whisper-tiny.en] [--repeat 2] [--concurrency 4]

Workload: the English clips of tests/fixtures/audio (one request each, `--repeat` times).
Rows:
- local, 1 thread, one client at a time: the per-request latency baseline;
- local, 2 threads (the whole machine), `--concurrency` clients: throughput baseline;
- Ray, 1 replica (1 CPU, 1 thread), one client at a time: the latency through the ingress
  and a deployment handle (p50 overhead = this p50 minus the local 1-thread p50);
- Ray, 1 replica, `--concurrency` clients: one node's CPU;
- Ray, 2 replicas (one per node, 1 CPU each), `--concurrency` clients: both nodes, the same
  total CPU as the 2-thread local server.
The cluster is two `ray start` nodes on loopback with one CPU each (tests/ray_cluster.py),
deployed by `voxserve serve --ray`. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "bench")]

from bench_stt import Server, run_http  # noqa: E402
from ray_cluster import (  # noqa: E402
    LocalRayCluster,
    free_port,
    loopback_env,
    start_voxserve,
    stop_process,
)

from voxserve.audio.decode import SAMPLE_RATE, decode_audio  # noqa: E402

AUDIO = ROOT / "tests" / "fixtures" / "audio"


def english_clips() -> list[tuple[str, bytes, float]]:
    lines = (AUDIO / "transcripts.tsv").read_text().splitlines()
    names = [line.split("\t", 1)[0] for line in lines if "\t" in line]
    clips = []
    for name in names:
        if name.startswith(("phone_call", "two_cities")):
            continue
        data = (AUDIO / name).read_bytes()
        clips.append((name, data, decode_audio(data).size / SAMPLE_RATE))
    return clips


def wait_for(condition, what: str, patience: float = 600) -> None:
    end = time.monotonic() + patience
    while not condition():
        if time.monotonic() > end:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.5)


def whisper_replicas(url: str, model: str) -> int:
    try:
        health = httpx.get(f"{url}/health", timeout=30).json()
    except (httpx.HTTPError, ValueError):
        return 0
    for name, deployment in health.get("deployments", {}).items():
        if name.endswith(model.replace(".", "_")):
            return int(deployment["replicas"].get("RUNNING", 0))
    return 0


def local_rows(args, jobs) -> list[dict]:
    rows = []
    for threads, concurrency in ((1, 1), (2, args.concurrency)):
        server = Server(args.model, threads)
        try:
            run_http(server.url, jobs[:2], 1)  # load the model
            result = run_http(server.url, jobs, concurrency)
        finally:
            server.close()
        rows.append({"setup": f"local, {threads} thread(s)", "concurrency": concurrency, **result})
    return rows


def ray_rows(args, jobs) -> list[dict]:
    rows = []
    logs = Path(tempfile.mkdtemp(prefix="bench_ray"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = loopback_env(**{
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "VOXSERVE_HOST": "127.0.0.1",
        "VOXSERVE_STT_DEFAULT_MODEL": args.model,
        "VOXSERVE_HF_OFFLINE": "true",
        "VOXSERVE_RAY_MODELS": args.model,
        "VOXSERVE_RAY_NUM_CPUS": "1",
        "VOXSERVE_RAY_MAX_REPLICAS_PER_NODE": "1",
        "VOXSERVE_RAY_INGRESS_NUM_CPUS": "0",
    })
    cluster = LocalRayCluster(Path(f"/tmp/vxb{os.getpid()}"), env, logs)
    process = None
    try:
        cluster.start()
        for replicas in (1, 2):
            if process is not None:
                stop_process(process)  # the deployment stays; the next command updates it
            env["VOXSERVE_RAY_REPLICAS"] = str(replicas)
            process = start_voxserve(cluster.address, port, env, logs / f"serve{replicas}.log")
            wait_for(lambda n=replicas: whisper_replicas(url, args.model) == n,
                     f"{replicas} running replica(s)")
            run_http(url, jobs[:2], 1)
            levels = (1, args.concurrency) if replicas == 1 else (args.concurrency,)
            for concurrency in levels:
                result = run_http(url, jobs, concurrency)
                rows.append({"setup": f"Ray, {replicas} replica(s)", "concurrency": concurrency,
                             **result})
    finally:
        if process is not None:
            stop_process(process)
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    jobs = english_clips() * args.repeat

    rows = local_rows(args, jobs) + ray_rows(args, jobs)
    base = next(r for r in rows if r["setup"].startswith("local, 1") and r["concurrency"] == 1)
    through = next(r for r in rows if r["setup"].startswith("Ray, 1") and r["concurrency"] == 1)
    overhead = round(through["p50_s"] - base["p50_s"], 3)

    print(f"{'setup':<22}{'clients':>8}{'audio s/s':>11}{'p50 s':>8}{'p95 s':>8}{'errors':>8}")
    for row in rows:
        print(f"{row['setup']:<22}{row['concurrency']:>8}{row['throughput']:>11}"
              f"{row['p50_s']:>8}{row['p95_s']:>8}{row['errors']:>8}")
    print(f"p50 overhead per request through Ray: {overhead * 1000:.0f} ms")
    print(json.dumps({"model": args.model, "rows": rows, "p50_overhead_s": overhead}))


if __name__ == "__main__":
    main()
