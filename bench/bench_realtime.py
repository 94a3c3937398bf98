"""Realtime transcription benchmark: live sessions over WebSocket at real-time pace, beside the
file endpoint on the same clips and a naive server (bare faster-whisper transcribing each VAD
turn as a file once it has ended).

    python bench/bench_realtime.py [--model gpt-4o-mini-transcribe whisper-tiny.en]
                                   [--sessions 1 4] [--clips 6] [--threads N] [--url URL]

One server (a subprocess on a loopback port, the default catalog: `gpt-4o-mini-transcribe`
is served by whisper-base unless VOXSERVE_ALIASES says otherwise) serves every model named;
each session asks for its model by name (`transcription.model`, `language=en`). Each session
streams the same speech (English fixture clips joined with 1.5 s pauses) in 100 ms appends on
the clock, with server_vad, as a microphone would. For each model and session count:

* speech end -> `.completed`: per turn, from `speech_stopped` to `.completed`, p50 and p95;
* first delta: from the speech's start (the audio at `audio_start_ms` + the prefix padding
  having been sent) to the turn's first delta, p50;
* live share: the share of turns that got a delta before `speech_stopped`;
* WER live: each session's transcripts joined in order against the clips' reference texts
  joined (so the VAD's cuts do not matter), the mean over sessions; beside it WER file: the
  same clips sent one by one to POST /v1/audio/transcriptions with the same model, joined;
* sustained: p95 speech end -> `.completed` under 2 s and no session told the server cannot
  keep up (`server_overloaded`).

The naive reference, per model: the native model behind the name decoded with bare
faster-whisper (beam 5) on each VAD turn once it has ended, one turn after another; its
latency is the decode time plus the wait behind the previous turn, as a caller at real-time
pace would see it; its WER is of those turns' text joined. It runs after the server has
stopped, so that nothing else uses the cores. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "fixtures" / "audio"
sys.path.insert(0, str(ROOT / "src"))

from bench_stt import Server  # noqa: E402

from voxserve.audio.decode import SAMPLE_RATE, decode_audio  # noqa: E402
from voxserve.config import Settings  # noqa: E402
from voxserve.runtime.catalog import Catalog  # noqa: E402
from voxserve.stt.whisper.loader import resolve_whisper_source  # noqa: E402

CHUNK = 0.1  # seconds per append
PADDING_MS = 300
CLIPS = [
    "sense_and_sensibility_01_austen_64kb-0870.wav", "arctic_a0007.wav",
    "sense_and_sensibility_01_austen_64kb-0890.wav", "goforward.wav",
    "sense_and_sensibility_01_austen_64kb-0920.wav", "arctic_a0009.wav",
    "sense_and_sensibility_01_austen_64kb-0930.wav", "cards_005.wav",
]
DEFAULT_MODELS = ["gpt-4o-mini-transcribe", "whisper-tiny.en"]


def stream_audio(names: list[str]) -> np.ndarray:
    gap = np.zeros(int(1.5 * SAMPLE_RATE), dtype=np.float32)
    pieces = [gap]
    for name in names:
        pieces += [decode_audio((AUDIO / name).read_bytes()), gap]
    return np.concatenate(pieces)


def pcm24(samples: np.ndarray) -> bytes:
    t = np.arange(int(samples.size * 1.5)) / 24_000
    y = np.interp(t, np.arange(samples.size) / SAMPLE_RATE, samples)
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def references(names: list[str]) -> str:
    lines = (AUDIO / "transcripts.tsv").read_text().splitlines()
    texts = dict(line.split("\t", 1) for line in lines if "\t" in line)
    return " ".join(texts[name] for name in names)


def wer(reference: str, hypothesis: str) -> float:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    return round(float(jiwer.wer(normalize(reference), normalize(hypothesis))), 3)


def start_server(threads: int, cache_dir: Path) -> Server:
    # The default catalog: the OpenAI names follow STT_DEFAULT_MODEL (whisper-base) unless
    # VOXSERVE_ALIASES, in this environment, sends them elsewhere.
    return Server(Settings().stt_default_model, threads, port=19000 + os.getpid() % 1000,
                  extra_env={"VOXSERVE_CACHE_DIR": str(cache_dir),
                             "VOXSERVE_REALTIME_MAX_SESSIONS": "64"})


def served_by(model: str) -> str:
    """The native model behind a name, by this machine's settings."""
    public = Catalog(Settings()).resolve(model)
    if public is None:
        raise SystemExit(f"unknown model {model!r}")
    return public.spec.id


async def one_session(url: str, audio: bytes, start_at: float, model: str,
                      paced: bool = True) -> dict:
    import websockets

    turns: dict[str, dict] = {}
    overloaded = False
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    async with websockets.connect(ws_url, max_size=None, compression=None) as ws:
        await ws.recv()  # session.created
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"transcription": {
                "model": model, "language": "en"}}}}}))
        size = int(24_000 * 2 * CHUNK)

        async def send() -> None:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            for i in range(0, len(audio), size):
                if paced:
                    await asyncio.sleep(max(0.0, start_at + i / size * CHUNK - time.monotonic()))
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(audio[i:i + size]).decode()}))
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))

        sender = asyncio.create_task(send())
        cleared = False
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 600))
            now, kind = time.monotonic(), event["type"]
            turn = turns.setdefault(event.get("item_id", ""), {"deltas": []})
            if kind == "input_audio_buffer.speech_started":
                turn["speech_at"] = start_at + (event["audio_start_ms"] + PADDING_MS) / 1000
            elif kind == "input_audio_buffer.speech_stopped":
                turn["stopped"] = now
            elif kind.endswith("transcription.delta"):
                turn["deltas"].append(now)
            elif kind.endswith("transcription.completed"):
                turn["completed"] = now
                turn["text"] = event["transcript"]
            elif kind.endswith("transcription.failed"):
                raise RuntimeError(f"a turn failed: {event['error']}")
            elif kind == "error" and event["error"]["code"] == "server_overloaded":
                overloaded = True
            elif kind == "error":
                raise RuntimeError(f"the session got an error: {event['error']}")
            elif kind == "input_audio_buffer.cleared":
                cleared = True
            done = [t for t in turns.values() if "stopped" in t]
            if cleared and all("completed" in t for t in done):
                break
        await sender
    return {"turns": [t for t in turns.values() if "stopped" in t], "overloaded": overloaded}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, q)), 3)


async def run_level(url: str, audio: bytes, sessions: int, model: str, reference: str) -> dict:
    # Staggered starts, as real callers arrive: turns do not all end at the same instant.
    start = time.monotonic() + 0.5
    results = await asyncio.gather(*[
        one_session(url, audio, start + i * 0.37, model) for i in range(sessions)])
    turns = [t for r in results for t in r["turns"]]
    final = [t["completed"] - t["stopped"] for t in turns]
    first = [t["deltas"][0] - t["speech_at"] for t in turns if t["deltas"] and "speech_at" in t]
    live = [t for t in turns if t["deltas"] and t["deltas"][0] < t["stopped"]]
    cadence = [b - a for t in turns for a, b in zip(t["deltas"], t["deltas"][1:], strict=False)
               if b < t["stopped"]]
    wers = [wer(reference, " ".join(t.get("text", "") for t in r["turns"])) for r in results]
    if os.environ.get("BENCH_SHOW_TEXT"):  # what the sessions heard, to read the errors
        for r in results:
            print(" | ".join(t.get("text", "") for t in r["turns"]), file=sys.stderr)
    overloaded = any(r["overloaded"] for r in results)
    p95 = pct(final, 95)
    return {
        "sessions": sessions, "turns": len(turns),
        "completed_p50_s": pct(final, 50), "completed_p95_s": p95,
        "first_delta_p50_s": pct(first, 50),
        "live_turns": len(live),
        "live_share": round(len(live) / len(turns), 3) if turns else None,
        "delta_cadence_p50_s": pct(cadence, 50),
        "wer_live": round(float(np.mean(wers)), 3) if wers else None,
        "overloaded": overloaded,
        "sustained": bool(p95 is not None and p95 <= 2.0 and not overloaded),
    }


def file_wer(url: str, model: str, names: list[str]) -> float:
    """The file endpoint on the same clips, same model: each clip on its own, joined."""
    texts = []
    for name in names:
        response = httpx.post(f"{url}/v1/audio/transcriptions", timeout=600,
                              files={"file": (name, (AUDIO / name).read_bytes())},
                              data={"model": model, "language": "en"})
        response.raise_for_status()
        texts.append(response.json()["text"])
    return wer(references(names), " ".join(texts))


def naive_reference(native: str, threads: int, audio16: np.ndarray, cache_dir: Path,
                    reference: str) -> dict:
    """The naive server for one caller: bare faster-whisper decodes each VAD turn as a file
    (beam 5) once it has ended, one turn after another. Each turn's decode time is measured;
    its latency is then what a caller streaming at real-time pace would see: the wait for the
    previous turn's decode, if still running, plus its own."""
    from faster_whisper import WhisperModel
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    settings = Settings(cache_dir=cache_dir)
    spec = Catalog(settings).spec(native)
    source, _ = resolve_whisper_source(spec.source, settings.cache_dir)
    bare = WhisperModel(str(source), device="cpu", compute_type="int8", cpu_threads=threads)
    options = VadOptions(min_silence_duration_ms=500, speech_pad_ms=300)
    latencies, decodes, texts, busy_until = [], [], [], 0.0
    for region in get_speech_timestamps(audio16, options):
        turn = audio16[region["start"]:region["end"]]
        ended = region["end"] / SAMPLE_RATE + 0.5  # the 500 ms of silence that ends it
        started = time.perf_counter()
        segments, _ = bare.transcribe(turn, language="en", beam_size=5,
                                      condition_on_previous_text=False)
        texts.append("".join(s.text for s in segments))
        decode = time.perf_counter() - started
        begin = max(ended, busy_until)
        busy_until = begin + decode
        decodes.append(decode)
        latencies.append(busy_until - ended)
    return {"turns": len(latencies), "completed_p50_s": pct(latencies, 50),
            "completed_p95_s": pct(latencies, 95), "decode_p50_s": pct(decodes, 50),
            "wer": wer(reference, " ".join(texts))}


def bench_model(url: str, model: str, sessions: list[int], names: list[str],
                audio: bytes) -> dict:
    reference = references(names)
    # The file endpoint first: it loads the model and warms its decode; then one unpaced
    # session warms the live passes, so that no measured turn also pays for a first call.
    wer_file = file_wer(url, model, names)
    asyncio.run(one_session(url, pcm24(stream_audio(names[:1])), time.monotonic(), model,
                            paced=False))
    levels = [asyncio.run(run_level(url, audio, n, model, reference)) for n in sessions]
    return {"model": model, "served_by": served_by(model), "file_wer": wer_file,
            "levels": levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=DEFAULT_MODELS,
                        help="names sessions ask for (OpenAI names or native ids)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--clips", type=int, default=6, help="clips per session stream")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--url", help="a running voxserve instead of starting one")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "models",
                        help="where assembled weights live (whisper-base)")
    args = parser.parse_args()

    names = CLIPS[:args.clips]
    audio16 = stream_audio(names)
    audio = pcm24(audio16)
    server = None if args.url else start_server(args.threads, args.cache_dir)
    url = args.url or server.url
    try:
        results = [bench_model(url, model, args.sessions, names, audio) for model in args.model]
    finally:
        if server is not None:
            server.close()
    reference = references(names)
    for result in results:
        result["naive"] = naive_reference(result["served_by"], args.threads, audio16,
                                          args.cache_dir, reference)
        one = next((r for r in result["levels"] if r["sessions"] == 1), None)
        naive_p50 = result["naive"]["completed_p50_s"]
        result["ratio_vs_naive_p50"] = (round(one["completed_p50_s"] / naive_p50, 2)
                                        if one and one["completed_p50_s"] and naive_p50 else None)
        result["sustained_sessions"] = max(
            [r["sessions"] for r in result["levels"] if r["sustained"]], default=0)

    print(f"int8, {args.threads} threads, {os.cpu_count()} cores, {len(names)} clips, "
          f"{audio16.size / SAMPLE_RATE:.0f} s of speech per session at real-time pace")
    print(f"{'model':<40}{'sessions':>8}{'turns':>7}{'done p50':>10}{'done p95':>10}"
          f"{'1st delta':>11}{'live share':>12}{'WER live':>10}{'WER file':>10}"
          f"{'overload':>10}{'sustained':>11}")
    for result in results:
        label = f"{result['model']} ({result['served_by']})"
        for r in result["levels"]:
            print(f"{label:<40}{r['sessions']:>8}{r['turns']:>7}{r['completed_p50_s']!s:>10}"
                  f"{r['completed_p95_s']!s:>10}{r['first_delta_p50_s']!s:>11}"
                  f"{r['live_share']!s:>12}{r['wer_live']!s:>10}{result['file_wer']!s:>10}"
                  f"{r['overloaded']!s:>10}{r['sustained']!s:>11}")
    for result in results:
        naive = result["naive"]
        print(f"naive {result['served_by']} (bare faster-whisper per turn, one caller): "
              f"completed p50 {naive['completed_p50_s']} s, p95 {naive['completed_p95_s']} s "
              f"over {naive['turns']} turns (a turn's decode alone: p50 "
              f"{naive['decode_p50_s']} s), WER {naive['wer']}; one session of "
              f"{result['model']} vs naive, completed p50: {result['ratio_vs_naive_p50']}x")
    print(json.dumps({"threads": args.threads, "cores": os.cpu_count(), "clips": len(names),
                      "speech_seconds": round(audio16.size / SAMPLE_RATE, 1),
                      "models": results}))


if __name__ == "__main__":
    main()
