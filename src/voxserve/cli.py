"""`voxserve serve | transcribe | speak | models`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from voxserve.config import Settings

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

OUTPUT_EXTENSIONS = {
    "json": "json", "verbose_json": "json", "text": "txt", "srt": "srt", "vtt": "vtt",
}


def _settings(**overrides) -> Settings:
    """Settings from the environment, with the CLI flags that were given on top."""
    given = {k: v for k, v in overrides.items() if v not in (None, [], {})}
    return Settings(**given)


def _offline_settings() -> Settings:
    """The server's settings for a command run on files: the same models and aliases, but no
    request deadline (nobody is waiting on a connection; a long file takes what it takes)."""
    return _settings(request_timeout=0.0)


def _pairs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or []:
        name, sep, target = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}")
        out[name.strip()] = target.strip()
    return out


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Address to bind [env VOXSERVE_HOST]"),
    port: int | None = typer.Option(None, help="Port [env VOXSERVE_PORT]"),
    device: str | None = typer.Option(None, help="cpu, cuda or auto [env VOXSERVE_DEVICE]"),
    compute_type: str | None = typer.Option(None, help="int8, float16, ... or auto"),
    threads: int | None = typer.Option(None, help="CPU threads for inference (0 = all)"),
    default_model: str | None = typer.Option(None, help="Model behind the OpenAI names"),
    alias: list[str] | None = typer.Option(None, help="NAME=MODEL, repeatable"),
    model: list[str] | None = typer.Option(None, help="ID=SOURCE (dir or hf:org/repo)"),
    api_key: list[str] | None = typer.Option(None, help="Accepted API key, repeatable"),
    max_upload_bytes: int | None = typer.Option(None, help="Upload size limit in bytes"),
    log_level: str | None = typer.Option(None, help="debug, info, warning, error"),
) -> None:
    """Start the OpenAI-compatible server."""
    import uvicorn

    from voxserve.app import create_app

    settings = _settings(
        host=host, port=port, device=device, compute_type=compute_type, cpu_threads=threads,
        stt_default_model=default_model, aliases=_pairs(alias), models=_pairs(model),
        api_keys=api_key, max_upload_bytes=max_upload_bytes, log_level=log_level,
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        log_level=settings.log_level.lower(),
    )


@cli.command()
def transcribe(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Audio files"),
    model: str = typer.Option("whisper-base", help="Model id or OpenAI name"),
    language: str | None = typer.Option(None, help="Spoken language (ISO-639-1)"),
    response_format: str = typer.Option(
        "text", "--format", help="json, text, srt, vtt, verbose_json"
    ),
    output_dir: Path = typer.Option(Path("."), help="Where the outputs go"),
    translate: bool = typer.Option(False, help="Translate into English"),
    prompt: str | None = typer.Option(None, help="Text to guide the style"),
) -> None:
    """Transcribe (or translate) files on disk: one output file per input."""
    from voxserve.cli_transcribe import run_files

    if response_format not in OUTPUT_EXTENSIONS:
        raise typer.BadParameter(f"unknown format {response_format!r}", param_hint="--format")
    code = asyncio.run(
        run_files(
            _offline_settings(), files, model=model, language=language,
            response_format=response_format,
            output_dir=output_dir, task="translate" if translate else "transcribe", prompt=prompt,
            extension=OUTPUT_EXTENSIONS[response_format],
        )
    )
    raise typer.Exit(code)


@cli.command("diarize-setup")
def diarize_setup(
    cache_dir: Path | None = typer.Option(None, help="Model cache [env VOXSERVE_CACHE_DIR]"),
    keep_env: bool = typer.Option(False, help="Keep the torch conversion environment"),
) -> None:
    """Convert the diarization models to ONNX once (installs torch into a temporary venv)."""
    from voxserve.diarize.install import SetupError, setup

    settings = _settings(cache_dir=cache_dir)
    try:
        typer.echo(setup(settings.cache_dir, keep_env=keep_env))
    except SetupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


@cli.command()
def speak(
    text: str | None = typer.Argument(None, help="Text to read; '-' or nothing reads stdin"),
    output: Path = typer.Option(..., "-o", "--output", help="Audio file to write"),
    file: Path | None = typer.Option(None, exists=True, dir_okay=False, help="Read text from"),
    model: str = typer.Option("tts-1", help="piper, kokoro or an OpenAI name"),
    voice: str = typer.Option("alloy", help="OpenAI voice name or the engine's own"),
    speed: float = typer.Option(1.0, help="0.25 to 4.0"),
    response_format: str | None = typer.Option(
        None, "--format", help="mp3, opus, aac, flac, wav, pcm (default: from -o, else mp3)"
    ),
    instructions: str | None = typer.Option(None, help="Accepted; the engines ignore it"),
) -> None:
    """Synthesize speech into a file, as POST /v1/audio/speech would."""
    from voxserve.cli_speak import format_for, read_text, speak_to_file
    from voxserve.errors import ServiceError

    try:
        asyncio.run(
            speak_to_file(
                _offline_settings(), read_text(text, file), output, model=model, voice=voice,
                speed=speed, response_format=format_for(output, response_format),
                instructions=instructions,
            )
        )
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@cli.command("models")
def list_models() -> None:
    """List every model id this configuration serves over HTTP (`voxserve serve`)."""
    from voxserve.services import build_services

    services = build_services(Settings())
    for public in services.catalog.public_models():
        target = "" if public.id == public.spec.id else f" -> {public.spec.id}"
        typer.echo(f"{public.id}{target}  [{public.spec.kind}, {public.spec.source}]")


def main() -> None:
    cli()
