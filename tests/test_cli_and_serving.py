"""The command line (`voxserve serve`, `voxserve transcribe`) and serving while busy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from conftest import MODEL_CACHE, audio_path, free_port

VOXSERVE = [sys.executable, "-m", "voxserve"]


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "VOXSERVE_CACHE_DIR": str(MODEL_CACHE),
            "VOXSERVE_CPU_THREADS": "2", **extra}


def test_transcribe_writes_one_output_per_input(tmp_path):
    inputs = [audio_path("audio_hello_world.mp3"), audio_path("arctic_a0007.wav")]
    result = subprocess.run(
        [*VOXSERVE, "transcribe", *map(str, inputs), "--model", "whisper-tiny.en",
         "--format", "srt", "--output-dir", str(tmp_path)],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    hello = (tmp_path / "audio_hello_world.srt").read_text()
    arctic = (tmp_path / "arctic_a0007.srt").read_text()
    assert hello.startswith("1\n00:00:00,000 --> ") and "hello" in hello.lower()
    assert "superlative" in arctic.lower()


def test_transcribe_translate_with_english_only_model_fails_clearly(tmp_path):
    result = subprocess.run(
        [*VOXSERVE, "transcribe", str(audio_path("audio_hello_world.mp3")), "--model",
         "whisper-tiny.en", "--translate", "--output-dir", str(tmp_path)],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "English-only" in result.stderr
    assert not list(tmp_path.iterdir())


def test_serve_starts_on_the_given_port():
    port = free_port()
    process = subprocess.Popen(
        [*VOXSERVE, "serve", "--host", "127.0.0.1", "--port", str(port), "--default-model",
         "whisper-tiny.en", "--api-key", "sk-cli-test-key"],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert health.status_code == 200
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models",
                           headers={"authorization": "Bearer sk-cli-test-key"}, timeout=5)
        assert models.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 401
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    # One access line per request (voxserve.access; uvicorn's own access log is off).
    lines = [line for line in stderr.decode().splitlines() if "/v1/models" in line]
    assert len(lines) == 2, lines
    assert all("voxserve.access" in line and "request_id=req_" in line for line in lines)


def test_health_answers_while_a_long_transcription_runs(base_url):
    data = Path(audio_path("two_cities.wav")).read_bytes()
    finished = threading.Event()
    result = {}

    def transcribe():
        result["response"] = httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            files={"file": ("two_cities.wav", data)}, data={"model": "whisper-1"}, timeout=300,
        )
        finished.set()

    worker = threading.Thread(target=transcribe)
    worker.start()
    answered_while_busy = 0
    while not finished.is_set():
        assert httpx.get(f"{base_url}/health", timeout=5).status_code == 200
        if not finished.is_set():
            answered_while_busy += 1
        time.sleep(0.1)
    worker.join()
    assert result["response"].status_code == 200
    assert "best of times" in result["response"].json()["text"].lower()
    assert answered_while_busy >= 3
