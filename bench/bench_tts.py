"""Time to first byte and real-time factor of POST /v1/audio/speech, per engine and format.

    python bench/bench_tts.py                      # starts voxserve in-process on loopback
    python bench/bench_tts.py --base-url http://127.0.0.1:8000

RTF here is wall time of the whole response / seconds of audio produced (lower is faster;
1/RTF is "times faster than real time"). Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import threading
import time

import av
import httpx

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back into the forest."
FORMATS = ("pcm", "wav", "mp3", "opus", "aac", "flac")


def audio_seconds(data: bytes, response_format: str) -> float:
    if response_format == "pcm":
        return len(data) / 2 / 24000
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


def one_request(client: httpx.Client, model: str, response_format: str) -> dict:
    body = {"model": model, "input": TEXT, "voice": "alloy", "response_format": response_format}
    started = time.perf_counter()
    first = None
    data = b""
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if first is None:
                first = time.perf_counter() - started
            data += chunk
    total = time.perf_counter() - started
    seconds = audio_seconds(data, response_format)
    return {"ttfb_ms": first * 1000, "total_s": total, "audio_s": seconds, "rtf": total / seconds}


def start_server() -> tuple[str, object]:
    import uvicorn

    from voxserve.app import create_app
    from voxserve.config import Settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(host="127.0.0.1", port=port, cpu_threads=os.cpu_count() or 0)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--models", default="piper,kokoro")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    server = None
    base_url = args.base_url
    if base_url is None:
        base_url, server = start_server()
    results = []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for model in args.models.split(","):
            one_request(client, model, "pcm")  # load the engine and warm it up
            for response_format in args.formats.split(","):
                runs = [one_request(client, model, response_format) for _ in range(args.repeat)]
                row = {"model": model, "format": response_format}
                for key in ("ttfb_ms", "total_s", "audio_s", "rtf"):
                    row[key] = round(statistics.median(r[key] for r in runs), 4)
                # The best run too: on a shared machine the median mostly measures neighbours.
                row["ttfb_ms_min"] = round(min(r["ttfb_ms"] for r in runs), 1)
                row["rtf_min"] = round(min(r["rtf"] for r in runs), 4)
                results.append(row)
    print(f"input: {TEXT!r} ({len(TEXT)} chars, 2 sentences); median of {args.repeat} runs; "
          f"{os.cpu_count()} CPU cores")
    print(f"{'model':8} {'format':6} {'TTFB ms':>8} {'best':>6} {'total s':>8} {'audio s':>8} "
          f"{'RTF':>6} {'best':>6} {'x realtime':>10}")
    for r in results:
        print(f"{r['model']:8} {r['format']:6} {r['ttfb_ms']:8.0f} {r['ttfb_ms_min']:6.0f} "
              f"{r['total_s']:8.3f} {r['audio_s']:8.2f} {r['rtf']:6.3f} {r['rtf_min']:6.3f} "
              f"{1 / r['rtf']:10.1f}")
    print(json.dumps({"input_chars": len(TEXT), "cpu_count": os.cpu_count(), "results": results}))
    if server is not None:
        server.should_exit = True


if __name__ == "__main__":
    main()
