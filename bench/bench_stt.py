"""Speech-to-text benchmark: voxserve over HTTP versus bare faster-whisper in-process.

    python bench/bench_stt.py [--model whisper-base] [--concurrency 1 4] [--long-minutes 5]

Workloads: the short English clips of tests/fixtures/audio (one request each), and one long
file made by joining them with silences. The server runs as a subprocess on a loopback port;
its peak RSS is read from /proc. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "fixtures" / "audio"
sys.path.insert(0, str(ROOT / "src"))

from voxserve.audio.decode import SAMPLE_RATE, decode_audio  # noqa: E402
from voxserve.config import Settings  # noqa: E402
from voxserve.runtime.catalog import Catalog  # noqa: E402
from voxserve.runtime.store import resolve_whisper_source  # noqa: E402


def short_clips() -> list[tuple[str, bytes, float]]:
    clips = []
    for path in sorted(AUDIO.glob("*.wav")):
        if path.name.startswith(("phone_call", "audio_french", "two_cities")):
            continue
        data = path.read_bytes()
        clips.append((path.name, data, decode_audio(data).size / SAMPLE_RATE))
    return clips


def long_file(minutes: float) -> tuple[bytes, float]:
    pieces, total = [], 0
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    clips = [decode_audio(d) for _, d, _ in short_clips()]
    while total < minutes * 60 * SAMPLE_RATE:
        for clip in clips:
            pieces += [clip, silence]
            total += clip.size + silence.size
    samples = np.concatenate(pieces)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue(), samples.size / SAMPLE_RATE


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Server:
    def __init__(self, model: str, threads: int) -> None:
        port = 18000 + os.getpid() % 1000
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VOXSERVE_CPU_THREADS": str(threads),
               "VOXSERVE_STT_DEFAULT_MODEL": model, "VOXSERVE_LOG_LEVEL": "warning"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voxserve", "serve", "--port", str(port)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.2)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_http(url: str, jobs: list[tuple[str, bytes, float]], concurrency: int) -> dict:
    latencies, errors = [], 0

    def one(job):
        name, data, _ = job
        started = time.perf_counter()
        response = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (name, data)},
                              data={"model": "whisper-1", "language": "en"}, timeout=3600)
        return time.perf_counter() - started, response.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for latency, status in pool.map(one, jobs):
            latencies.append(latency)
            errors += status != 200
    wall = time.perf_counter() - started
    return summarize(jobs, latencies, wall, errors)


def run_bare(model_dir: str, jobs: list[tuple[str, bytes, float]], threads: int) -> dict:
    from faster_whisper import WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
    latencies = []
    started = time.perf_counter()
    for _, data, _ in jobs:
        t0 = time.perf_counter()
        segments, _ = model.transcribe(decode_audio(data), language="en", beam_size=5)
        list(segments)
        latencies.append(time.perf_counter() - t0)
    return summarize(jobs, latencies, time.perf_counter() - started, 0)


def summarize(jobs, latencies, wall, errors) -> dict:
    audio = sum(seconds for _, _, seconds in jobs)
    return {
        "requests": len(jobs), "audio_s": round(audio, 1), "wall_s": round(wall, 2),
        "throughput": round(audio / wall, 2), "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3), "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--long-minutes", type=float, default=5.0)
    args = parser.parse_args()

    settings = Settings()
    model_dir, _ = resolve_whisper_source(Catalog(settings).spec(args.model).source, settings.cache_dir)
    clips = short_clips()
    long_data, long_seconds = long_file(args.long_minutes)
    long_job = [("long.wav", long_data, long_seconds)]

    results: dict[str, dict] = {}
    results["bare short c=1"] = run_bare(model_dir, clips, args.threads)
    results["bare long"] = run_bare(model_dir, long_job, args.threads)
    server = Server(args.model, args.threads)
    try:
        run_http(server.url, clips[:1], 1)  # load the model before timing
        for c in args.concurrency:
            results[f"voxserve short c={c}"] = run_http(server.url, clips * max(1, c // 2), c)
        results["voxserve long"] = run_http(server.url, long_job, 1)
        peak = server.peak_rss_mb()
    finally:
        server.close()

    header = f"{'workload':<22}{'req':>5}{'audio s':>9}{'wall s':>8}{'x RT':>7}{'p50 s':>8}{'p95 s':>8}{'err':>5}"
    print(f"model {args.model}, int8, {args.threads} threads, beam 5, {os.cpu_count()} cores")
    print(header)
    for name, r in results.items():
        print(f"{name:<22}{r['requests']:>5}{r['audio_s']:>9}{r['wall_s']:>8}{r['throughput']:>7}"
              f"{r['p50_s']:>8}{r['p95_s']:>8}{r['errors']:>5}")
    ratio_long = results["bare long"]["wall_s"] / results["voxserve long"]["wall_s"]
    ratio_short = results["voxserve short c=1"]["throughput"] / results["bare short c=1"]["throughput"]
    print(f"server peak RSS {peak:.0f} MB; long file speed vs bare {ratio_long:.2f}x; "
          f"short clips c=1 throughput vs bare {ratio_short:.2f}x")
    print(json.dumps({"model": args.model, "threads": args.threads, "results": results,
                      "server_peak_rss_mb": round(peak), "long_vs_bare": round(ratio_long, 3),
                      "short_c1_vs_bare": round(ratio_short, 3)}))


if __name__ == "__main__":
    main()
