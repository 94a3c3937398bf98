"""The `voxserve speak` command: the server's own speech pipeline, writing a file on disk."""

from __future__ import annotations

import sys
from pathlib import Path

from voxserve.api.speech import parse_speech_request
from voxserve.config import Settings
from voxserve.services import build_services


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
    body = {"model": model, "input": text, "voice": voice, "speed": speed,
            "response_format": response_format}
    if instructions is not None:
        body["instructions"] = instructions
    services = build_services(settings)
    try:
        request = parse_speech_request(body, services.catalog)
        stream = await services.tts.open(request)
        tmp = output.with_name(f".{output.name}.part")
        try:
            with tmp.open("wb") as fh:
                async for chunk in stream.chunks:
                    fh.write(chunk)
            tmp.replace(output)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        services.close()


def read_text(text: str | None, file: Path | None) -> str:
    if file is not None:
        return file.read_text(encoding="utf-8")
    if text is None or text == "-":
        return sys.stdin.read()
    return text

