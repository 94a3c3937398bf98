"""Shared fixtures: a real voxserve on a loopback port, driven through the official SDK.

The server runs in a thread of the test process with uvicorn, so the models it loads are
loaded once per session. Its OpenAI names point at whisper-tiny.en (fast); tests that need
another language or translation name the native `whisper-base`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"
AUDIO = FIXTURES / "audio"
# OpenAI's recorded requests and responses (see fixtures/openai/ATTRIBUTION.md).
OPENAI = FIXTURES / "openai"
RECORDINGS = OPENAI / "recordings"
# The assembled whisper-base weights are reused between runs.
MODEL_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `create_app(settings)` on 127.0.0.1 in a background thread."""

    def __init__(self, port: int | None = None, **overrides) -> None:
        """`port`: a free one unless given (a test restarting a server on the same port)."""
        import uvicorn

        from voxserve.app import create_app
        from voxserve.config import Settings

        settings = Settings(
            host="127.0.0.1",
            port=port or free_port(),
            cache_dir=MODEL_CACHE,
            cpu_threads=2,
            stt_default_model="whisper-tiny.en",
            hf_offline=True,
            **overrides,
        )
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{settings.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("voxserve did not start")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout: float) -> LiveServer:
        """Waits until /ready answers 200: every preloaded model is loaded."""
        import httpx

        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.base_url}/ready").status_code != 200:
            assert time.monotonic() < deadline, "the preloaded models did not load"
            time.sleep(0.1)
        return self

    async def sessions_released(self, timeout: float = 60) -> None:
        """Waits until every realtime session is released: the server does so after the
        socket has closed, so a client's `close()` can return before it."""
        deadline = time.monotonic() + timeout
        while self.app.state.realtime.active:
            assert time.monotonic() < deadline, "a realtime session was never released"
            await asyncio.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        yield live


@pytest.fixture(scope="session")
def base_url(server: LiveServer) -> str:
    return server.base_url


@pytest.fixture(scope="session")
def client(server: LiveServer):
    from openai import OpenAI

    with OpenAI(base_url=f"{server.base_url}/v1", api_key="test-key", max_retries=0) as c:
        yield c


@pytest.fixture
async def async_client(server: LiveServer):
    from openai import AsyncOpenAI

    async with AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key="test-key", max_retries=0
    ) as c:
        yield c


def audio_path(name: str) -> Path:
    return AUDIO / name


def reference_texts() -> dict[str, str]:
    lines = (AUDIO / "transcripts.tsv").read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines if "\t" in line)
