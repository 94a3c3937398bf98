"""Realtime translation benchmark: the 42 s French clip through a live translation session
(whisper-base translating, Piper speaking), against the file endpoint on the same clip.

    python bench/bench_realtime_translation.py [--model whisper-base>piper] [--url URL]

Two sessions over WebSocket:

* *live*: the clip in 100 ms appends on the clock, as a microphone would send it. Per phrase:
  the time from the end of its speech to the first translated audio byte. A phrase's
  `elapsed_ms` is where its turn ended (rounded up to 200 ms); its speech ended the VAD's
  500 ms of silence before that, so latency is counted from `elapsed_ms - 500` (an
  overestimate by up to 0.2 s).
* *fast*: the whole clip sent at once, then `session.close`: the real-time factor of the
  whole loop (VAD, Whisper translate, Piper) is the time to `session.closed` over the audio's
  length.

Quality: the translated speech of the live session, transcribed back by Whisper
(`/v1/audio/transcriptions`, whisper-base, English), scored by chrF (0-1, sacrebleu) against
the text `/v1/audio/translations` returns for the same file; and both, with the live text
transcript, against OpenAI's whisper-1 translation of the clip (shared recordings). So that
the file path is judged as the live one is, its text is also spoken by the same voice
(`/v1/audio/speech`) and heard back: `chrf_file_roundtrip_vs_openai` against
`chrf_roundtrip_vs_openai` is what the live path loses (synthesis and recognition lose as
much on both). With `--source`, the source transcript deltas are scored against
`/v1/audio/transcriptions`.

Every pass over the clip is at a gain of its own (`varied`): the server's encoder memo (and any
cache) must not replay an earlier pass's work; identical audio made the second session's loop
look twice as fast and a repeated clip's phrases come out in 1.2 s.

With `--minutes M` instead: the clip repeated (1 s pauses) for M minutes through one live
session at real-time pace, to see whether a long input keeps up: first-audio latency over all
phrases and over the last ten (a session falling behind drifts upwards), the lag from the last
append to `session.closed`, and the server's overload errors.
The server runs as a subprocess (bench_realtime.start_server) unless `--url` is given. Prints a
table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import sys
import time
import wave
from pathlib import Path

import httpx
import numpy as np
from bench_realtime import AUDIO, ROOT, pcm24, pct, start_server
from sacrebleu.metrics import CHRF
from stt_data import wav_bytes

from voxserve.audio.decode import SAMPLE_RATE, decode_audio

CHUNK = 0.1  # seconds per append in the live session
SILENCE_MS = 500  # server_vad's silence_duration_ms: a turn ends this long after its speech
CLIP = AUDIO / "audio_french.wav"
OPENAI_TRANSLATION = Path("/work/shared/openai/translation_french.json")


def chrf(hypothesis: str, reference: str) -> float:
    return round(CHRF().sentence_score(hypothesis, [reference]).score / 100, 3)


async def session(url: str, model: str, audio: bytes, paced: bool, source: bool) -> dict:
    import websockets

    ws_url = url.replace("http://", "ws://") + f"/v1/realtime/translations?model={model}"
    first_audio: dict[int, float] = {}
    first_text: dict[int, float] = {}
    english, source_text, pcm, errors = [], [], [], []
    size = int(24_000 * 2 * CHUNK)
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.recv()  # session.created
        if source:
            await ws.send(json.dumps({"type": "session.update", "session": {"audio": {
                "input": {"transcription": {"model": model.split(">")[0]}}}}}))
        start = time.monotonic()

        async def send() -> None:
            for i in range(0, len(audio), size):
                if paced:
                    await asyncio.sleep(max(0.0, start + i / size * CHUNK - time.monotonic()))
                await ws.send(json.dumps({"type": "session.input_audio_buffer.append",
                                          "audio": base64.b64encode(audio[i:i + size]).decode()}))
            await ws.send(json.dumps({"type": "session.close"}))

        sender = asyncio.create_task(send())
        async for message in ws:
            event, now = json.loads(message), time.monotonic()
            kind = event["type"]
            if kind == "session.output_audio.delta":
                first_audio.setdefault(event["elapsed_ms"], now)
                pcm.append(base64.b64decode(event["delta"]))
            elif kind == "session.output_transcript.delta":
                first_text.setdefault(event["elapsed_ms"], now)
                english.append(event["delta"])
            elif kind == "session.input_transcript.delta":
                source_text.append(event["delta"])
            elif kind == "error":
                errors.append(event["error"]["message"])
            elif kind == "session.closed":
                break
        await sender
        wall = time.monotonic() - start
    def after_speech(firsts: dict[int, float]) -> list[float]:
        return [at - (start + (ms - SILENCE_MS) / 1000) for ms, at in firsts.items()]

    latencies, text_latencies = after_speech(first_audio), after_speech(first_text)
    return {"wall": wall, "latencies": latencies, "text_latencies": text_latencies,
            "english": "".join(english), "source": "".join(source_text), "pcm": b"".join(pcm), "errors": errors}


def varied(samples: np.ndarray, k: int) -> np.ndarray:
    """Pass `k` over a clip: the same speech at a gain of its own (pass 0 as it is)."""
    return samples * np.float32(1.0 - 0.04 * (k % 10))


def wav24(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24_000)
        w.writeframes(pcm)
    return out.getvalue()


def file_text(url: str, path: str, data: bytes, name: str, **fields: str) -> str:
    response = httpx.post(f"{url}/v1/audio/{path}", files={"file": (name, data)},
                          data={"model": "whisper-base", **fields}, timeout=600)
    response.raise_for_status()
    return response.json()["text"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base>piper")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--url", help="a running voxserve instead of starting one")
    parser.add_argument("--source", action="store_true",
                        help="also ask for the source transcript (more work per phrase)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "models")
    parser.add_argument("--minutes", type=float,
                        help="instead: the clip repeated for this long, one live session")
    args = parser.parse_args()
    server = None if args.url else start_server(args.threads, args.cache_dir)
    url = args.url or server.url
    if args.minutes:
        try:
            long_main(args, url)
        finally:
            if server is not None:
                server.close()
        return
    try:
        clip = CLIP.read_bytes()
        seconds = decode_audio(clip).size / SAMPLE_RATE
        samples = np.concatenate([decode_audio(clip), np.zeros(SAMPLE_RATE, np.float32)])
        # The file endpoints first: references, and both models loaded before any session.
        reference = file_text(url, "translations", clip, CLIP.name)
        started = time.monotonic()
        file_text(url, "translations", wav_bytes(varied(samples, 1)), CLIP.name)
        file_rtf = (time.monotonic() - started) / seconds  # this machine's speed, right now
        source_reference = file_text(url, "transcriptions", clip, CLIP.name)
        httpx.post(f"{url}/v1/audio/speech", json={"model": args.model.split(">")[1],
                   "input": "Ready.", "voice": "alloy"}, timeout=120).raise_for_status()
        live = asyncio.run(session(url, args.model, pcm24(samples), paced=True,
                                   source=args.source))
        fast = asyncio.run(session(url, args.model, pcm24(varied(samples, 2)), paced=False,
                                   source=args.source))
        spoken = file_text(url, "transcriptions", wav24(live["pcm"]), "live.wav", language="en")
        file_speech = httpx.post(f"{url}/v1/audio/speech", json={
            "model": args.model.split(">")[1], "input": reference, "voice": "alloy",
            "response_format": "wav"}, timeout=600)
        file_speech.raise_for_status()
        file_spoken = file_text(url, "transcriptions", file_speech.content, "file.wav",
                                language="en")
    finally:
        if server is not None:
            server.close()
    openai_text = json.loads(OPENAI_TRANSLATION.read_text())["text"].strip()
    result = {
        "model": args.model, "threads": args.threads, "input_seconds": round(seconds, 1),
        "phrases": len(live["latencies"]),
        "first_audio_p50_s": _round(pct(live["latencies"], 50)),
        "first_audio_p95_s": _round(pct(live["latencies"], 95)),
        "first_text_p50_s": _round(pct(live["text_latencies"], 50)),
        "first_audio_s": [_round(x) for x in live["latencies"]],
        "first_text_s": [_round(x) for x in live["text_latencies"]],
        "loop_rtf": round(fast["wall"] / seconds, 3),
        "file_translation_rtf": round(file_rtf, 3),
        "live_wall_s": round(live["wall"], 1),
        "output_audio_s": round(len(live["pcm"]) / 48_000, 1),
        "chrf_roundtrip_vs_file": chrf(spoken, reference),
        "chrf_text_vs_file": chrf(live["english"], reference),
        "chrf_file_vs_openai": chrf(reference, openai_text),
        "chrf_roundtrip_vs_openai": chrf(spoken, openai_text),
        "chrf_file_roundtrip_vs_openai": chrf(file_spoken, openai_text),
        "chrf_text_vs_openai": chrf(live["english"], openai_text),
        "errors": live["errors"],
        # Expected: the fast session sends 42 s at once, more than the server keeps up with.
        "fast_session_errors": fast["errors"],
    }
    if args.source:
        result["chrf_source_vs_file"] = chrf(live["source"], source_reference)
    print(f"{'measure':<28}value")
    for key, value in result.items():
        if not key.endswith("errors"):
            print(f"{key:<28}{value}")
    print(f"{'file translation':<28}{reference.strip()[:100]}...")
    print(f"{'live text':<28}{live['english'][:100]}...")
    print(f"{'live speech, heard back':<28}{spoken.strip()[:100]}...")
    print(json.dumps(result))


def long_main(args, url: str) -> None:
    clip = decode_audio(CLIP.read_bytes())
    pause = np.zeros(SAMPLE_RATE, np.float32)
    repeats = max(1, round(args.minutes * 60 / (clip.size / SAMPLE_RATE + 1)))
    samples = np.concatenate([part for k in range(repeats) for part in (varied(clip, k), pause)])
    seconds = samples.size / SAMPLE_RATE
    file_text(url, "translations", CLIP.read_bytes(), CLIP.name)  # models loaded first
    httpx.post(f"{url}/v1/audio/speech", json={"model": args.model.split(">")[1],
               "input": "Ready.", "voice": "alloy"}, timeout=120).raise_for_status()
    live = asyncio.run(session(url, args.model, pcm24(samples), paced=True, source=args.source))
    latencies = live["latencies"]
    result = {
        "model": args.model, "threads": args.threads, "input_seconds": round(seconds, 1),
        "phrases": len(latencies),
        "first_audio_p50_s": _round(pct(latencies, 50)),
        "first_audio_p95_s": _round(pct(latencies, 95)),
        "first_text_p50_s": _round(pct(live["text_latencies"], 50)),
        "last10_first_audio_p50_s": _round(pct(latencies[-10:], 50)),
        "lag_after_input_s": round(live["wall"] - seconds, 1),
        "output_audio_s": round(len(live["pcm"]) / 48_000, 1),
        "errors": live["errors"],
    }
    print(f"{'measure':<28}value")
    for key, value in result.items():
        print(f"{key:<28}{value}")
    print(json.dumps(result))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


if __name__ == "__main__":
    sys.exit(main())
