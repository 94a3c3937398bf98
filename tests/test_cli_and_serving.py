"""The command line (`voxserve serve`, `voxserve transcribe`) and serving while busy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
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


def test_transcribe_refuses_two_inputs_with_one_output_name_before_any_work(tmp_path, monkeypatch):
    """`a/x.wav b/x.wav` would both be written to x.json, the second replacing the first."""
    import shutil

    from typer.testing import CliRunner

    import voxserve.cli_transcribe as cli_transcribe
    from voxserve.cli import cli

    def no_work(settings):
        raise AssertionError("services were built before the outputs were checked")

    monkeypatch.setattr(cli_transcribe, "build_services", no_work)
    inputs = []
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
        inputs.append(shutil.copyfile(audio_path("arctic_a0007.wav"), tmp_path / folder / "x.wav"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["transcribe", *map(str, inputs), "--format", "json", "--output-dir", str(out)])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    for later in inputs[1:]:  # each clash names both inputs
        assert f"{inputs[0]} and {later} would both be written to {out / 'x.json'}" in said
    assert not out.exists()


def test_transcribe_keeps_an_existing_output_unless_told_to_overwrite(tmp_path):
    target = tmp_path / "audio_hello_world.txt"
    target.write_text("keep me")
    argv = [*VOXSERVE, "transcribe", str(audio_path("audio_hello_world.mp3")), "--model",
            "whisper-tiny.en", "--output-dir", str(tmp_path)]
    kept = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert kept.returncode == 1
    assert "pass --overwrite to replace it" in " ".join(kept.stderr.split())
    assert target.read_text() == "keep me"
    replaced = subprocess.run([*argv, "--overwrite"], env=cli_env(), capture_output=True,
                              text=True, timeout=300)
    assert replaced.returncode == 0, replaced.stderr
    assert "hello" in target.read_text().lower()


async def test_transcribe_progress_moves_with_the_seconds_decoded(tmp_path, monkeypatch):
    """The bar knows the file's length before decoding starts and moves with each segment's
    end (seconds of audio), instead of sitting at 0 % until the whole file is done."""
    from rich.progress import Progress

    import voxserve.cli_transcribe as cli_transcribe
    from voxserve.config import Settings

    seen: list[tuple[float | None, float | None]] = []  # (total, completed) per update

    class RecordingProgress(Progress):
        def add_task(self, description, total=None, **fields):
            seen.append((total, 0.0))
            return super().add_task(description, total=total, **fields)

        def update(self, task_id, *, total=None, completed=None, **fields):
            seen.append((total, completed))
            super().update(task_id, total=total, completed=completed, **fields)

    monkeypatch.setattr(cli_transcribe, "Progress", RecordingProgress)
    settings = Settings(cache_dir=MODEL_CACHE, cpu_threads=2, hf_offline=True)
    code = await cli_transcribe.run_files(
        settings, [audio_path("two_cities.wav")], model="whisper-tiny.en", language="en",
        # srt: segments with times (json and text decode each 30 s chunk as one segment of
        # plain text, and the bar moves per chunk)
        response_format="srt", output_dir=tmp_path, task="transcribe", prompt=None,
        extension="srt",
    )
    assert code == 0 and "best of times" in (tmp_path / "two_cities.srt").read_text().lower()
    announced = seen[0][0]
    assert announced is not None and abs(announced - 44.37) < 0.1  # known before decoding
    steps = [done for _, done in seen[1:] if done is not None]
    inside = [done for done in steps if 0 < done < announced - 1]
    assert len(inside) >= 3, steps  # several stops on the way, not 0 % then 100 %
    assert steps == sorted(steps) and steps[-1] == pytest.approx(announced, abs=0.1)


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


def test_speak_reports_what_it_wrote(tmp_path):
    import io
    import re

    import av

    target = tmp_path / "hello.wav"
    result = subprocess.run(
        [*VOXSERVE, "speak", "Hello there.", "-o", str(target), "--model", "piper"],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"wrote (\S+) \((\w+), ([\d.]+) s of audio, ([\d,]+) bytes\)", result.stderr)
    assert match, result.stderr
    assert match[1] == str(target) and match[2] == "wav"
    data = target.read_bytes()
    assert int(match[4].replace(",", "")) == len(data)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        seconds = sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate
    assert float(match[3]) == pytest.approx(seconds, abs=0.01)


def test_help_lists_every_command_and_serve_shows_its_defaults():
    from typer.testing import CliRunner

    from voxserve.cli import cli

    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0
    summary, listing = top.output.split("\nCommands:\n")
    for command in ("serve", "transcribe", "listen", "speak", "models", "diarize-setup"):
        assert command in summary, command
        assert f"  {command} " in listing, command
    assert "<bool>" not in top.output
    for line in listing.splitlines():  # these commands' descriptions are not cut off
        if line.strip().startswith(("serve ", "transcribe ", "speak ", "diarize-setup ")):
            assert not line.endswith("..."), line
    serve = runner.invoke(cli, ["serve", "--help"]).output
    for default in ("[default: 127.0.0.1; env VOXSERVE_HOST]", "[default: 8000; env VOXSERVE_PORT]",
                    "[default: whisper-base; env VOXSERVE_STT_DEFAULT_MODEL]",
                    "[default: 26214400; env VOXSERVE_MAX_UPLOAD_BYTES]"):
        assert "".join(default.split()) in "".join(serve.split()), default  # wrapped anywhere
    assert "<bool>" not in serve


@pytest.mark.parametrize(("argv", "address", "port"), [
    (["serve", "--ray"], None, None),  # alone: a local cluster
    (["serve", "--ray", "--port", "9001"], None, 9001),
    (["serve", "--ray", "local"], None, None),
    (["serve", "--ray", "auto", "--port", "9001"], "auto", 9001),
    (["serve", "--port", "9001", "--ray=127.0.0.1:6379"], "127.0.0.1:6379", 9001),
])
def test_serve_ray_takes_an_optional_address(monkeypatch, argv, address, port):
    """Through the console script's entry (`voxserve.cli:main`), with the deploy replaced."""
    pytest.importorskip("ray.serve", reason="the ray extra: pip install 'voxserve[ray]'")
    import voxserve.cluster.deploy as deploy
    from voxserve import cli

    seen = []
    monkeypatch.setattr(deploy, "serve_on_ray", lambda settings, at: seen.append((at, settings)))
    monkeypatch.setattr(sys, "argv", ["voxserve", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    [(at, settings)] = seen
    assert at == address
    assert settings.port == (port or cli.Settings().port)
