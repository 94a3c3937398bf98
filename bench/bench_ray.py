"""The cost of going through Ray: one and two Whisper replicas on a local two-node Ray cluster
against the single-process server at the same total CPU.

    python bench/bench_ray.py [--model whisper-tiny.en] [--repeat 2] [--concurrency 4]
                              [--sessions 1 4] [--live-clips 4] [--no-uploads]

Workload: the English clips of tests/fixtures/audio (one request each, `--repeat` times).
Rows:
- local, 1 thread, one client at a time: the per-request latency baseline;
- local, 2 threads (the whole machine), `--concurrency` clients: throughput baseline;
- Ray, 1 replica (1 CPU, 1 thread), one client at a time: the latency through the ingress
  and a deployment handle (p50 overhead = this p50 minus the local 1-thread p50);
- Ray, 1 replica, `--concurrency` clients: one node's CPU;
- Ray, 2 replicas (one per node, 1 CPU each), `--concurrency` clients: both nodes, the same
  total CPU as the 2-thread local server.
Live sessions, same run (`--sessions N ...`: a row per count on each side; `--sessions` with
no count: none): N realtime transcription sessions at once (bench/bench_realtime.py's
client: the first `--live-clips` English clips joined
with 1.5 s pauses, 100 ms appends at real-time pace, server VAD, starts staggered by 0.37 s)
against the local server at 2 threads and against the cluster's 2 replicas through the
ingress (the session, its VAD and turns in the ingress replica; every decode pass one handle
call to a Whisper replica). Per turn, `speech_stopped` -> `.completed`: p50 and p95; the
first delta's p50 from the speech's start; the share of turns with text before their end.
The cluster is two `ray start` nodes on loopback with one CPU each (tests/ray_cluster.py),
deployed by `voxserve serve --ray`. Prints the tables and, last, one JSON line.
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

from bench_realtime import CLIPS, pcm24, references, run_level, stream_audio  # noqa: E402
from bench_stt import Server, run_http  # noqa: E402
from ray_cluster import (  # noqa: E402
    LocalRayCluster,
    free_ports,
    loopback_env,
    start_voxserve,
    stop_process,
)

from voxserve.audio.decode import SAMPLE_RATE, decode_audio  # noqa: E402

AUDIO = ROOT / "tests" / "fixtures" / "audio"
LIVE_ENV = {"VOXSERVE_REALTIME_MAX_SESSIONS": "64"}


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


def live_rows(setup: str, url: str, args) -> list[dict]:
    """Each of `args.sessions` (a count of live sessions at once), after one unpaced session
    that warms the live passes (no measured turn pays for a first call)."""
    import asyncio

    from bench_realtime import one_session

    names = CLIPS[:args.live_clips]
    audio = pcm24(stream_audio(names))
    asyncio.run(one_session(url, pcm24(stream_audio(names[:1])), time.monotonic(), args.model,
                            paced=False))
    return [{"setup": setup, **asyncio.run(run_level(url, audio, n, args.model,
                                                     references(names)))}
            for n in args.sessions]


def local_rows(args, jobs) -> tuple[list[dict], list[dict]]:
    rows, live = [], []
    levels = ((1, 1), (2, args.concurrency)) if jobs else ((2, 0),)
    for threads, concurrency in levels:
        server = Server(args.model, threads, extra_env=LIVE_ENV)
        try:
            if jobs:
                run_http(server.url, jobs[:2], 1)  # load the model
                result = run_http(server.url, jobs, concurrency)
                rows.append({"setup": f"local, {threads} thread(s)",
                             "concurrency": concurrency, **result})
            if threads == 2 and args.sessions:
                live += live_rows("local, 2 threads", server.url, args)
        finally:
            server.close()
    return rows, live


def ray_rows(args, jobs) -> tuple[list[dict], list[dict]]:
    rows, live = [], []
    logs = Path(tempfile.mkdtemp(prefix="bench_ray"))
    port = free_ports(1)[0]
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
        **LIVE_ENV,
    })
    cluster = LocalRayCluster(Path(f"/tmp/vxb{os.getpid()}"), env, logs)
    process = None
    try:
        cluster.start()
        for replicas in (1, 2) if jobs else (2,):
            if process is not None:
                stop_process(process)  # the deployment stays; the next command updates it
            env["VOXSERVE_RAY_REPLICAS"] = str(replicas)
            process = start_voxserve(cluster.address, port, env, logs / f"serve{replicas}.log")
            wait_for(lambda n=replicas: whisper_replicas(url, args.model) == n,
                     f"{replicas} running replica(s)")
            if jobs:
                run_http(url, jobs[:2], 1)
                levels = (1, args.concurrency) if replicas == 1 else (args.concurrency,)
                for concurrency in levels:
                    result = run_http(url, jobs, concurrency)
                    rows.append({"setup": f"Ray, {replicas} replica(s)",
                                 "concurrency": concurrency, **result})
            if replicas == 2 and args.sessions:
                live += live_rows("Ray, 2 replicas", url, args)
    finally:
        if process is not None:
            stop_process(process)
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return rows, live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sessions", type=int, nargs="*", default=[1, 4],
                        help="live sessions at once, each count a row on each side (none: 0)")
    parser.add_argument("--live-clips", type=int, default=4, help="clips per session stream")
    parser.add_argument("--no-uploads", action="store_true",
                        help="live sessions only (no file-endpoint rows)")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    jobs = [] if args.no_uploads else english_clips() * args.repeat

    local, local_live = local_rows(args, jobs)
    remote, remote_live = ray_rows(args, jobs)
    rows, live = local + remote, local_live + remote_live
    overhead = None
    if rows:
        base = next(r for r in rows if r["setup"].startswith("local, 1") and r["concurrency"] == 1)
        through = next(r for r in rows if r["setup"].startswith("Ray, 1") and r["concurrency"] == 1)
        overhead = round(through["p50_s"] - base["p50_s"], 3)
        print(f"{'setup':<22}{'clients':>8}{'audio s/s':>11}{'p50 s':>8}{'p95 s':>8}"
              f"{'errors':>8}")
        for row in rows:
            print(f"{row['setup']:<22}{row['concurrency']:>8}{row['throughput']:>11}"
                  f"{row['p50_s']:>8}{row['p95_s']:>8}{row['errors']:>8}")
        print(f"p50 overhead per request through Ray: {overhead * 1000:.0f} ms")
    if live:
        print(f"live sessions ({args.model}, {args.live_clips} clips each, real-time pace):")
        print(f"{'setup':<22}{'sessions':>9}{'turns':>7}{'done p50':>10}{'done p95':>10}"
              f"{'1st delta':>11}{'live share':>12}{'WER live':>10}{'overload':>10}")
        for r in live:
            print(f"{r['setup']:<22}{r['sessions']:>9}{r['turns']:>7}"
                  f"{r['completed_p50_s']!s:>10}{r['completed_p95_s']!s:>10}"
                  f"{r['first_delta_p50_s']!s:>11}{r['live_share']!s:>12}{r['wer_live']!s:>10}"
                  f"{r['overloaded']!s:>10}")
    print(json.dumps({"model": args.model, "rows": rows, "p50_overhead_s": overhead,
                      "live": live}))


if __name__ == "__main__":
    main()
