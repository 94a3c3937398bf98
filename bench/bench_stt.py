"""Speech-to-text benchmark: voxserve over HTTP versus bare faster-whisper.

    python bench/bench_stt.py [--model whisper-base] [--concurrency 1 4 16] [--long-minutes 5]
    python bench/bench_stt.py --streaming 10 60      # long-input entry: streamed files
    python bench/bench_stt.py --soak 1000            # RSS after 100 and after 1000 requests

Workloads: the short English clips of tests/fixtures/audio (one request each), and one long
file made by joining them with silences. The references run in-process on bare
faster-whisper with the same decoding options: its sequential `WhisperModel.transcribe` and
its `BatchedInferencePipeline` (one clip after another, batch size 16). The server runs as a subprocess on a loopback port;
its peak RSS is read from /proc. With --streaming, each long file is sent with stream=true to
a fresh server (first-delta latency, real-time factor, peak RSS) and given to bare
faster-whisper in a process of its own (time, peak RSS). Prints a table and, last, one JSON
line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
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
from voxserve.stt.whisper.loader import resolve_whisper_source  # noqa: E402


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


def to_opus(wav: bytes) -> bytes:
    """The file as Ogg/Opus at 32 kb/s (the server's own speech encoder): an hour fits the
    25 MB upload limit, as a client's real recording would have to."""
    from voxserve.audio.encode import AudioEncoder

    encoder = AudioEncoder("opus", SAMPLE_RATE)
    try:
        return encoder.encode(decode_audio(wav)) + encoder.finish()
    finally:
        encoder.close()


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
        return proc_status_mb(self.process.pid, "VmHWM")

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


def run_bare_batched(model_dir: str, jobs: list[tuple[str, bytes, float]], threads: int) -> dict:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
    pipeline = BatchedInferencePipeline(model)
    latencies = []
    started = time.perf_counter()
    for _, data, _ in jobs:
        t0 = time.perf_counter()
        segments, _ = pipeline.transcribe(decode_audio(data), language="en", beam_size=5,
                                          batch_size=16)
        list(segments)
        latencies.append(time.perf_counter() - t0)
    return summarize(jobs, latencies, time.perf_counter() - started, 0)


def proc_status_mb(pid: int, field: str) -> float:
    """A memory figure of a process from /proc (VmRSS: now, VmHWM: peak), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak_main(args) -> None:
    """Mixed requests (every clip, every response format, some streamed) from 8 clients;
    the server's RSS after the first 100 and after all of them."""
    clips = short_clips()
    formats = ["json", "text", "srt", "vtt", "verbose_json"]
    server = Server(args.model, args.threads)
    rss: dict[str, float] = {}
    errors = 0

    def one(i: int) -> int:
        name, data, _ = clips[i % len(clips)]
        fields = {"model": "whisper-1", "response_format": formats[i % len(formats)]}
        if i % 7 == 0:
            fields = {"model": "gpt-4o-transcribe", "stream": "true"}
        response = httpx.post(f"{server.url}/v1/audio/transcriptions",
                              files={"file": (name, data)}, data=fields, timeout=600)
        return response.status_code

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            done = 0
            for mark in (100, args.soak):
                statuses = list(pool.map(one, range(done, mark)))
                errors += sum(status != 200 for status in statuses)
                done = mark
                rss[str(mark)] = round(proc_status_mb(server.process.pid, "VmRSS"))
        wall = time.perf_counter() - started
        peak = round(server.peak_rss_mb())
    finally:
        server.close()
    growth = rss[str(args.soak)] - rss["100"]
    print(f"model {args.model}, int8, {args.threads} threads, {os.cpu_count()} cores, "
          f"{args.soak} mixed requests from 8 clients in {wall:.0f} s")
    print(f"{'after':>8}{'RSS MB':>9}")
    for mark, value in rss.items():
        print(f"{mark:>8}{value:>9}")
    print(f"growth from 100 to {args.soak}: {growth:+.0f} MB; peak {peak} MB; errors {errors}")
    print(json.dumps({"model": args.model, "requests": args.soak, "rss_mb": rss,
                      "growth_mb": growth, "peak_rss_mb": peak, "errors": errors,
                      "wall_s": round(wall, 1)}))


def summarize(jobs, latencies, wall, errors) -> dict:
    audio = sum(seconds for _, _, seconds in jobs)
    return {
        "requests": len(jobs), "audio_s": round(audio, 1), "wall_s": round(wall, 2),
        "throughput": round(audio / wall, 2), "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3), "errors": errors,
    }


BARE_SCRIPT = """
import resource, sys, time
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]))
started = time.perf_counter()
segments, _ = model.transcribe(sys.argv[2], language="en", beam_size=5)
words = sum(len(s.text.split()) for s in segments)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, words)
"""


def run_bare_process(model_dir: str, path: Path, threads: int) -> dict:
    """Bare faster-whisper on a file, in its own process so its peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, "-c", BARE_SCRIPT, model_dir, str(path), str(threads)],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return {"wall_s": round(float(out[0]), 2), "peak_rss_mb": round(float(out[1])), "words": int(out[2])}


def run_streaming(server: Server, model: str, data: bytes) -> dict:
    """One streamed transcription: seconds to the first delta and to the end."""
    started = time.perf_counter()
    first = None
    deltas = 0
    with httpx.stream("POST", f"{server.url}/v1/audio/transcriptions",
                      files={"file": ("long.wav", data)},
                      data={"model": model, "language": "en", "stream": "true"},
                      timeout=7200) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if line.startswith('data: {"type":"transcript.text.delta"'):
                deltas += 1
                first = first or time.perf_counter() - started
    return {"first_delta_s": round(first or float("nan"), 2),
            "wall_s": round(time.perf_counter() - started, 2), "deltas": deltas}


def streaming_main(args, model_dir: str) -> None:
    rows = {}
    tmp = ROOT / ".cache" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    for minutes in args.streaming:
        wav, seconds = long_file(minutes)
        data = to_opus(wav)
        path = tmp / f"long_{minutes:g}min.ogg"
        path.write_bytes(data)
        bare = {"wall_s": float("nan"), "peak_rss_mb": float("nan")}
        if not args.no_bare:
            bare = run_bare_process(model_dir, path, args.threads)
        server = Server(args.model, args.threads)
        try:
            run_http(server.url, short_clips()[:1], 1)  # load the model before timing
            ours = run_streaming(server, args.model, data)
            ours["peak_rss_mb"] = round(server.peak_rss_mb())
        finally:
            server.close()
        rows[f"{minutes:g} min"] = {
            "audio_s": round(seconds, 1), "upload_mb": round(len(data) / 2**20, 1),
            "voxserve": {**ours, "rtf": round(ours["wall_s"] / seconds, 4)},
            "bare": {**bare, "rtf": round(bare["wall_s"] / seconds, 4)},
        }
    print(f"model {args.model}, int8, {args.threads} threads, beam 5, {os.cpu_count()} cores")
    print(f"{'input':<10}{'audio s':>9}{'RTF':>8}{'bare RTF':>10}{'first delta s':>15}"
          f"{'RSS MB':>8}{'bare RSS':>10}")
    for name, r in rows.items():
        print(f"{name:<10}{r['audio_s']:>9}{r['voxserve']['rtf']:>8}{r['bare']['rtf']:>10}"
              f"{r['voxserve']['first_delta_s']:>15}{r['voxserve']['peak_rss_mb']:>8}"
              f"{r['bare']['peak_rss_mb']:>10}")
    print(json.dumps({"model": args.model, "threads": args.threads, "streaming": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--long-minutes", type=float, default=5.0)
    parser.add_argument("--streaming", type=float, nargs="*", metavar="MINUTES",
                        help="instead: stream long files of these lengths (e.g. 10 60), "
                        "sent as Ogg/Opus")
    parser.add_argument("--no-bare", action="store_true",
                        help="with --streaming: skip the bare faster-whisper reference")
    parser.add_argument("--soak", type=int, metavar="N",
                        help="instead: N mixed requests, RSS after 100 and after N")
    args = parser.parse_args()
    if args.soak:
        soak_main(args)
        return

    settings = Settings()
    model_dir, _ = resolve_whisper_source(Catalog(settings).spec(args.model).source, settings.cache_dir)
    if args.streaming:
        streaming_main(args, model_dir)
        return
    clips = short_clips()
    long_data, long_seconds = long_file(args.long_minutes)
    long_job = [("long.wav", long_data, long_seconds)]

    results: dict[str, dict] = {}
    results["bare short c=1"] = run_bare(model_dir, clips, args.threads)
    results["bare batched short"] = run_bare_batched(model_dir, clips, args.threads)
    results["bare long"] = run_bare(model_dir, long_job, args.threads)
    server = Server(args.model, args.threads)
    try:
        run_http(server.url, clips[:1], 1)  # load the model before timing
        # The same 32 requests at every concurrency, so the throughputs compare.
        jobs = (clips * 8)[:32]
        for c in args.concurrency:
            results[f"voxserve short c={c}"] = run_http(server.url, jobs, c)
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
    short = {c: results[f"voxserve short c={c}"]["throughput"] for c in args.concurrency}
    ratio_short = short[args.concurrency[0]] / results["bare short c=1"]["throughput"]
    top = max(args.concurrency)
    ratio_load = short[top] / short[args.concurrency[0]]
    print(f"server peak RSS {peak:.0f} MB; long file speed vs bare {ratio_long:.2f}x; "
          f"short clips c={args.concurrency[0]} vs bare {ratio_short:.2f}x; "
          f"c={top} vs c={args.concurrency[0]} {ratio_load:.2f}x")
    print(json.dumps({"model": args.model, "threads": args.threads, "results": results,
                      "server_peak_rss_mb": round(peak), "long_vs_bare": round(ratio_long, 3),
                      "short_c1_vs_bare": round(ratio_short, 3),
                      f"short_c{top}_vs_c1": round(ratio_load, 3)}))


if __name__ == "__main__":
    main()
