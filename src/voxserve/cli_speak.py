"""The `voxserve speak` command: the server's own speech pipeline, writing a file on disk."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from voxserve.api.speech import parse_speech_request
from voxserve.config import Settings
from voxserve.runtime.catalog import Catalog
from voxserve.runtime.pool import ModelPool
from voxserve.tts.engine import load_speech_engine
from voxserve.tts.models import register_speech_models
from voxserve.tts.service import TextToSpeech


def format_for(output: Path, given: str | None) -> str:
    """The format named by --format, else by the output's extension, else mp3."""
    if given:
        return given
    suffix = output.suffix.lower().lstrip(".")
    return {"ogg": "opus", "raw": "pcm"}.get(suffix, suffix) if suffix else "mp3"


async def speak_to_file(
    settings: Settings, text: str, output: Path, *, model: str, voice: str, speed: float,
    response_format: str, instructions: str | None = None,
) -> None:
    """Raises ServiceError (with OpenAI's message) for anything the server would refuse."""
    catalog = Catalog(settings)
    register_speech_models(catalog, settings)
    body = {"model": model, "input": text, "voice": voice, "speed": speed,
            "response_format": response_format}
    if instructions is not None:
        body["instructions"] = instructions
    request = parse_speech_request(body, catalog)
    pool = ModelPool({"tts": partial(load_speech_engine, settings=settings)})
    stream = await TextToSpeech(settings, pool).open(request)
    tmp = output.with_name(f".{output.name}.part")
    try:
        with tmp.open("wb") as fh:
            async for chunk in stream.chunks:
                fh.write(chunk)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)


def read_text(text: str | None, file: Path | None) -> str:
    if file is not None:
        return file.read_text(encoding="utf-8")
    if text is None or text == "-":
        return sys.stdin.read()
    return text

