"""Speech-to-text benchmark: voxserve over HTTP versus bare faster-whisper, in one run.

    python bench/bench_stt.py                         # every workload (long: ~15 min on 2 cores)
    python bench/bench_stt.py --only long short       # a subset; see --only, --engines
    python bench/bench_stt.py --streaming 10 60       # older entry: streamed files only
    python bench/bench_stt.py --soak 1000             # RSS after 100 and after 1000 requests

Workloads (--only): `long` the 16 English clips of ../shared/audio/en joined with 1 s silences
(144 s, WER against transcripts.tsv), and again with three shuffled orders of the clips (4
files, one corpus WER: one file's WER depends on where its chunks are cut), each also with
`chunking_strategy=auto` ("vox auto"); `other` acted Czech (or Dutch) lines of Debian's
fillets-ng-data-cs/-nl joined to --other-minutes (WER against the game's own text); `short` the
16 English clips one at a time; `clients` them twice over from 1 and from --clients clients;
`mixed` 8 short-clip clients with and without a long file decoding at the same time (p95);
`stream` first delta of the streamed long English file; `rss60` peak RSS of a fresh server
streaming a 60-minute file; `translate` --translate-clips acted lines translated to English one
at a time (chrF against the game's English subtitles). The Debian packages are fetched with
`apt-get download` into a temporary directory, never stored. References in the same run,
in-process on one WhisperModel (--engines): `bare` sequential `transcribe` and `batched`
`BatchedInferencePipeline` (VAD, batch 8), both beam 5. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
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

sys.path.insert(0, str(ROOT / "bench"))
from stt_data import (  # noqa: E402
    Clip,
    english_clips,
    fillets_clips,
    join,
    shuffled_joins,
    spread,
)


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
    """`voxserve serve` in a subprocess on a loopback port, started and waited for."""

    def __init__(self, model: str, threads: int, extra_env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        port = port or 18000 + os.getpid() % 1000
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VOXSERVE_CPU_THREADS": str(threads),
               "VOXSERVE_STT_DEFAULT_MODEL": model, "VOXSERVE_LOG_LEVEL": "warning",
               "PYTHONPATH": str(ROOT / "src"), **(extra_env or {})}
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
            elif line.startswith('data: {"type":"error"'):
                raise RuntimeError(f"the stream ended with {line[6:300]}")
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


class BareEngines:
    """In-process references on one shared WhisperModel: its sequential `transcribe` and its
    `BatchedInferencePipeline` (VAD on, batch 8), both beam 5 with Whisper's fallback."""

    def __init__(self, model_dir: str, threads: int) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(model_dir, device="cpu", compute_type="int8",
                                  cpu_threads=threads)
        self.pipeline = BatchedInferencePipeline(self.model)

    def bare(self, clip: Clip, language: str | None, task: str) -> str:
        segments, _ = self.model.transcribe(clip.samples, language=language, task=task,
                                            beam_size=5)
        return " ".join(s.text.strip() for s in segments)

    def batched(self, clip: Clip, language: str | None, task: str) -> str:
        segments, _ = self.pipeline.transcribe(clip.samples, language=language, task=task,
                                               beam_size=5, batch_size=8, vad_filter=True)
        return " ".join(s.text.strip() for s in segments)


def http_text(url: str, clip: Clip, language: str | None, task: str,
              chunking: str | None = None) -> str:
    path = "transcriptions" if task == "transcribe" else "translations"
    fields = {"model": "whisper-1"}
    if chunking:
        fields["chunking_strategy"] = chunking
    if language and task == "transcribe":
        fields["language"] = language
    response = httpx.post(f"{url}/v1/audio/{path}", files={"file": ("a.wav", clip.wav)},
                          data=fields, timeout=7200)
    response.raise_for_status()
    return response.json()["text"]


def timed(fn, clips: list[Clip], clients: int = 1) -> tuple[list[str], dict]:
    """Every clip through `fn(clip) -> text` from `clients` threads; texts in clip order."""
    latencies: list[float] = []

    def one(clip: Clip) -> str:
        t0 = time.perf_counter()
        text = fn(clip)
        latencies.append(time.perf_counter() - t0)
        return text

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        texts = list(pool.map(one, clips))
    wall = time.perf_counter() - started
    audio = sum(c.seconds for c in clips)
    return texts, {"requests": len(clips), "audio_s": round(audio, 1), "wall_s": round(wall, 2),
                   "throughput": round(audio / wall, 2),
                   "p50_s": round(percentile(latencies, 50), 3),
                   "p95_s": round(percentile(latencies, 95), 3)}


def wer(clips: list[Clip], texts: list[str], language: str) -> float:
    import jiwer
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer() if language == "en" else BasicTextNormalizer()
    return round(jiwer.wer([normalize(c.reference) for c in clips],
                           [normalize(t) or "-" for t in texts]), 4)


def chrf(clips: list[Clip], texts: list[str]) -> float:
    import sacrebleu

    return round(sacrebleu.corpus_chrf(texts, [[c.translation for c in clips]]).score, 2)


def table_main(args, model_dir: str) -> None:
    only, engines = set(args.only), args.engines
    rows: list[dict] = []
    english = english_clips()
    long_en = join(english, "long-en")
    other: list[Clip] = []
    if only & {"other", "translate"}:
        other = fillets_clips(args.other_lang, args.fillets_cache)
    bare = BareEngines(model_dir, args.threads) if {"bare", "batched"} & set(engines) else None

    def row(workload: str, engine: str, stats: dict, texts: list[str] | None = None,
            **extra) -> None:
        if args.texts and texts is not None:
            with args.texts.open("a") as out:
                out.write(json.dumps({"workload": workload, "engine": engine,
                                      "texts": texts}) + "\n")
        rows.append({"workload": workload, "engine": engine, **stats, **extra})
        r = rows[-1]
        print(f"  {workload:<24}{engine:<10}{r['audio_s']:>8}{r['wall_s']:>8}"
              f"{r['throughput']:>7}{r['p95_s']:>8}  {extra}", flush=True)

    def references(workload: str, clips: list[Clip], language: str | None, task: str,
                   score) -> None:
        for name in ("bare", "batched"):
            if name in engines and bare is not None:
                fn = getattr(bare, name)
                texts, stats = timed(lambda c, fn=fn: fn(c, language, task), clips)
                row(workload, name, stats, texts, **score(texts))

    en_wer = lambda clips: lambda texts: {"wer": wer(clips, texts, "en")}  # noqa: E731
    workloads = []
    if "long" in only:
        workloads.append(("long en 1 request", [long_en], "en", "transcribe", en_wer([long_en])))
        orders = [long_en, *shuffled_joins(english)]
        workloads.append(("long en 4 orders", orders, "en", "transcribe", en_wer(orders)))
    if "other" in only:
        long_other = join(other, f"long-{args.other_lang}", gap_seconds=0.5,
                          min_seconds=args.other_minutes * 60)
        workloads.append((f"long {args.other_lang} 1 request", [long_other], args.other_lang,
                          "transcribe",
                          lambda t, c=long_other: {"wer": wer([c], t, args.other_lang)}))
    if "short" in only:
        workloads.append(("short en 1 client", english, "en", "transcribe", en_wer(english)))
    if "translate" in only:
        picked = spread(other, args.translate_clips)
        workloads.append((f"{args.other_lang} clips translate", picked, None, "translate",
                          lambda t, c=picked: {"chrf": chrf(c, t)}))
    for workload, clips, language, task, score in workloads:
        references(workload, clips, language, task, score)
    print(f"{'':2}{'workload':<24}{'engine':<10}{'audio s':>8}{'wall s':>8}{'x RT':>7}"
          f"{'p95 s':>8}")

    peak = float("nan")
    if "voxserve" in engines and only - {"rss60"}:
        server = Server(args.model, args.threads)
        try:
            http_text(server.url, english[0], "en", "transcribe")  # load before timing
            for workload, clips, language, task, score in workloads:
                texts, stats = timed(lambda c, la=language, ta=task: http_text(
                    server.url, c, la, ta), clips)
                row(workload, "voxserve", stats, texts, **score(texts))
                if workload.startswith("long en"):  # OpenAI's `auto` VAD cut, for the WER goal
                    texts, stats = timed(lambda c: http_text(
                        server.url, c, "en", "transcribe", chunking="auto"), clips)
                    row(workload, "vox auto", stats, texts, **score(texts))
            short = lambda c: http_text(server.url, c, "en", "transcribe")  # noqa: E731
            if "clients" in only:
                jobs = english * 2
                for clients in (1, args.clients):
                    texts, stats = timed(short, jobs, clients)
                    row(f"short en {clients} clients", "voxserve", stats,
                        wer=wer(jobs, texts, "en"))
            if "mixed" in only:
                jobs = english * 2
                _, alone = timed(short, jobs, 8)
                row("short en 8 clients", "voxserve", alone)
                long_twice = join(english, "long-en-x2", min_seconds=2 * long_en.seconds)
                with ThreadPoolExecutor(1) as pool:
                    started = time.perf_counter()
                    future = pool.submit(http_text, server.url, long_twice, "en", "transcribe")
                    time.sleep(1.0)  # the long file is being decoded when the clips arrive
                    _, mixed = timed(short, jobs, 8)
                    future.result()
                    long_wall = time.perf_counter() - started
                row("short en 8 + long file", "voxserve", mixed,
                    p95_vs_alone=round(mixed["p95_s"] / alone["p95_s"], 2),
                    long_wall_s=round(long_wall, 1))
            if "long" in only and only & {"clients", "mixed"}:
                # The same long file again, now that the server has served concurrent
                # requests (docs/benchmarks.md: "faster after load").
                texts, stats = timed(lambda c: http_text(server.url, c, "en", "transcribe"),
                                     [long_en])
                row("long en after load", "voxserve", stats, texts, wer=wer([long_en], texts,
                                                                            "en"))
            if "stream" in only:
                streamed = run_streaming(server, args.model, long_en.wav)
                rows.append({"workload": "long en streamed", "engine": "voxserve",
                             "audio_s": round(long_en.seconds, 1), **streamed})
                print(f"  long en streamed: {streamed}", flush=True)
            peak = server.peak_rss_mb()
        finally:
            server.close()
    if "rss60" in only:
        rss = rss60(args, model_dir, english, "bare" in engines)
        rows.append({"workload": "60 min streamed", "engine": "voxserve", **rss})
        print(f"  60 min streamed: {rss}", flush=True)
    print_table(args, rows, peak)


def rss60(args, model_dir: str, english: list[Clip], with_bare: bool) -> dict:
    """A 60-minute file (the English clips repeated, as Ogg/Opus) streamed to a fresh server:
    its peak RSS; optionally bare faster-whisper's in a process of its own."""
    long = join(english, "long-60", min_seconds=3600)
    data = to_opus(long.wav)
    tmp = Path(tempfile.mkdtemp(prefix="voxserve-bench-"))
    path = tmp / "long60.ogg"
    path.write_bytes(data)
    # An hour can take longer than the default 600 s deadline on a loaded machine.
    server = Server(args.model, args.threads, {"VOXSERVE_REQUEST_TIMEOUT": "0"})
    try:
        http_text(server.url, english[0], "en", "transcribe")
        streamed = run_streaming(server, args.model, data)
        out = {"audio_s": round(long.seconds, 1), **streamed,
               "peak_rss_mb": round(server.peak_rss_mb())}
    finally:
        server.close()
    if with_bare:
        out["bare"] = run_bare_process(model_dir, path, args.threads)
    return out


def print_table(args, rows: list[dict], peak: float) -> None:
    print(f"\nmodel {args.model}, int8, {args.threads} threads, beam 5, {os.cpu_count()} cores; "
          f"server peak RSS {peak:.0f} MB")
    print(f"{'workload':<26}{'engine':<10}{'audio s':>8}{'wall s':>8}{'x RT':>7}{'p95 s':>8}"
          f"  quality / other")
    skip = {"workload", "engine", "audio_s", "wall_s", "throughput", "p95_s", "p50_s",
            "requests"}
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in skip}
        print(f"{r['workload']:<26}{r['engine']:<10}{r.get('audio_s', ''):>8}"
              f"{r.get('wall_s', ''):>8}{r.get('throughput', ''):>7}{r.get('p95_s', ''):>8}"
              f"  {json.dumps(extra)}")
    print(json.dumps({"model": args.model, "threads": args.threads,
                      "server_peak_rss_mb": round(peak) if peak == peak else None,
                      "rows": rows}))


ROWS = ("long", "other", "short", "clients", "mixed", "stream", "rss60", "translate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--only", nargs="+", choices=ROWS, default=list(ROWS),
                        help="run only these workloads (default: all)")
    parser.add_argument("--engines", nargs="+", choices=("voxserve", "bare", "batched"),
                        default=["voxserve", "bare", "batched"])
    parser.add_argument("--other-lang", choices=("cs", "nl"), default="cs")
    parser.add_argument("--other-minutes", type=float, default=10.0)
    parser.add_argument("--translate-clips", type=int, default=40)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--texts", type=Path, default=None,
                        help="append every row's output texts to this JSON-lines file")
    parser.add_argument("--fillets-cache", type=Path, default=None,
                        help="where the Debian packages are unpacked (default: a temp dir)")
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
    model_dir, _ = resolve_whisper_source(Catalog(settings).spec(args.model).source,
                                          settings.cache_dir)
    if args.streaming:
        streaming_main(args, model_dir)
        return
    table_main(args, model_dir)


if __name__ == "__main__":
    main()
