"""Realtime transcription benchmark: live sessions over WebSocket at real-time pace, versus a
naive server (bare faster-whisper transcribing each VAD turn as a file once it has ended).

    python bench/bench_realtime.py [--model whisper-tiny.en] [--sessions 1 4 8] [--clips 6]

Each session streams the same speech (English fixture clips joined with 1.5 s pauses) in
100 ms appends on the clock, with server_vad, as a microphone would. Per turn it records the
time from `speech_stopped` to `.completed`, from the speech's start (the audio at
`audio_start_ms` + the prefix padding having been sent) to the first delta, and the gaps
between deltas. A session count is *sustained* when its p95 stopped->completed stays under
2 s and no session was told the server cannot keep up. The naive reference decodes each turn
(the audio the server committed, cut the same way) with bare faster-whisper, beam 5, after
the turn ended: its latency is that decode time. The server runs as a subprocess on a
loopback port. Prints a table and, last, one JSON line.
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


def stream_audio(count: int) -> np.ndarray:
    gap = np.zeros(int(1.5 * SAMPLE_RATE), dtype=np.float32)
    pieces = [gap]
    for name in CLIPS[:count]:
        pieces += [decode_audio((AUDIO / name).read_bytes()), gap]
    return np.concatenate(pieces)


def pcm24(samples: np.ndarray) -> bytes:
    t = np.arange(int(samples.size * 1.5)) / 24_000
    y = np.interp(t, np.arange(samples.size) / SAMPLE_RATE, samples)
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def start_server(model: str, threads: int, cache_dir: Path) -> Server:
    return Server(model, threads, port=19000 + os.getpid() % 1000, extra_env={
        "VOXSERVE_CACHE_DIR": str(cache_dir), "VOXSERVE_REALTIME_MAX_SESSIONS": "64",
    })


async def one_session(url: str, audio: bytes, start_at: float) -> dict:
    import websockets

    turns: dict[str, dict] = {}
    overloaded = False
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.recv()  # session.created
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"transcription": {
                "model": "whisper-1", "language": "en"}}}}}))
        size = int(24_000 * 2 * CHUNK)

        async def send() -> None:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            for i in range(0, len(audio), size):
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
            elif kind == "error" and event["error"]["code"] == "server_overloaded":
                overloaded = True
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


async def run_level(url: str, audio: bytes, sessions: int) -> dict:
    # Staggered starts, as real callers arrive: turns do not all end at the same instant.
    start = time.monotonic() + 0.5
    results = await asyncio.gather(*[
        one_session(url, audio, start + i * 0.37) for i in range(sessions)])
    turns = [t for r in results for t in r["turns"]]
    final = [t["completed"] - t["stopped"] for t in turns]
    first = [t["deltas"][0] - t["speech_at"] for t in turns if t["deltas"] and "speech_at" in t]
    live = [t for t in turns if t["deltas"] and t["deltas"][0] < t["stopped"]]
    cadence = [b - a for t in turns for a, b in zip(t["deltas"], t["deltas"][1:], strict=False)
               if b < t["stopped"]]
    overloaded = any(r["overloaded"] for r in results)
    p95 = pct(final, 95)
    return {
        "sessions": sessions, "turns": len(turns),
        "completed_p50_s": pct(final, 50), "completed_p95_s": p95,
        "first_delta_p50_s": pct(first, 50),
        "live_turns": len(live),
        "delta_cadence_p50_s": pct(cadence, 50),
        "overloaded": overloaded,
        "sustained": bool(p95 is not None and p95 <= 2.0 and not overloaded),
    }


def naive_reference(model: str, threads: int, audio16: np.ndarray, cache_dir: Path) -> dict:
    """The naive server for one caller: bare faster-whisper decodes each VAD turn as a file
    (beam 5) once it has ended, one turn after another. Each turn's decode time is measured;
    its latency is then what a caller streaming at real-time pace would see: the wait for the
    previous turn's decode, if still running, plus its own."""
    from faster_whisper import WhisperModel
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    settings = Settings(cache_dir=cache_dir)
    spec = Catalog(settings).spec(model)
    source, _ = resolve_whisper_source(spec.source, settings.cache_dir)
    bare = WhisperModel(str(source), device="cpu", compute_type="int8", cpu_threads=threads)
    options = VadOptions(min_silence_duration_ms=500, speech_pad_ms=300)
    latencies, decodes, busy_until = [], [], 0.0
    for region in get_speech_timestamps(audio16, options):
        turn = audio16[region["start"]:region["end"]]
        ended = region["end"] / SAMPLE_RATE + 0.5  # the 500 ms of silence that ends it
        started = time.perf_counter()
        segments, _ = bare.transcribe(turn, language="en", beam_size=5,
                                      condition_on_previous_text=False)
        "".join(s.text for s in segments)
        decode = time.perf_counter() - started
        begin = max(ended, busy_until)
        busy_until = begin + decode
        decodes.append(decode)
        latencies.append(busy_until - ended)
    return {"turns": len(latencies), "completed_p50_s": pct(latencies, 50),
            "completed_p95_s": pct(latencies, 95), "decode_p50_s": pct(decodes, 50)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--clips", type=int, default=6, help="clips per session stream")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--url", help="a running voxserve instead of starting one")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "models",
                        help="where assembled weights live (whisper-base)")
    args = parser.parse_args()

    audio16 = stream_audio(args.clips)
    audio = pcm24(audio16)
    server = None if args.url else start_server(args.model, args.threads, args.cache_dir)
    url = args.url or server.url
    try:
        asyncio.run(run_level(url, audio, 1))  # warm-up: the model loads
        levels = [asyncio.run(run_level(url, audio, n)) for n in args.sessions]
    finally:
        if server is not None:
            server.close()
    naive = naive_reference(args.model, args.threads, audio16, args.cache_dir)

    print(f"model {args.model}, int8, {args.threads} threads, {os.cpu_count()} cores, "
          f"{audio16.size / SAMPLE_RATE:.0f} s of speech per session at real-time pace")
    print(f"{'sessions':>8}{'turns':>7}{'done p50':>10}{'done p95':>10}{'1st delta':>11}"
          f"{'live turns':>12}{'cadence':>9}{'overload':>10}{'sustained':>11}")
    for r in levels:
        print(f"{r['sessions']:>8}{r['turns']:>7}{r['completed_p50_s']!s:>10}"
              f"{r['completed_p95_s']!s:>10}{r['first_delta_p50_s']!s:>11}"
              f"{r['live_turns']:>12}{r['delta_cadence_p50_s']!s:>9}{r['overloaded']!s:>10}"
              f"{r['sustained']!s:>11}")
    print(f"naive (bare faster-whisper per turn, one caller): completed p50 "
          f"{naive['completed_p50_s']} s, p95 {naive['completed_p95_s']} s over "
          f"{naive['turns']} turns (a turn's decode alone: p50 {naive['decode_p50_s']} s)")
    one = next((r for r in levels if r["sessions"] == 1), None)
    ratio = None
    if one and one["completed_p50_s"] and naive["completed_p50_s"]:
        ratio = round(one["completed_p50_s"] / naive["completed_p50_s"], 2)
        print(f"one session vs naive, completed p50: {ratio}x")
    sustained = max([r["sessions"] for r in levels if r["sustained"]], default=0)
    print(json.dumps({"model": args.model, "threads": args.threads, "levels": levels,
                      "naive": naive, "ratio_vs_naive_p50": ratio,
                      "sustained_sessions": sustained}))


if __name__ == "__main__":
    main()
