"""The `voxserve transcribe` command: the server's own pipeline, run on files on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from voxserve.config import Settings
from voxserve.domain import Segment, Task
from voxserve.errors import ServiceError
from voxserve.formats.transcript import render_transcript
from voxserve.languages import normalize_language
from voxserve.services import Services, build_services
from voxserve.stt.engine import DecodeEnd
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import StreamItem, collect, render_options


async def run_files(
    settings: Settings,
    files: list[Path],
    *,
    model: str,
    language: str | None,
    response_format: str,
    output_dir: Path,
    task: Task,
    prompt: str | None,
    extension: str,
) -> int:
    """Returns the exit code: 0 if every file was written, 1 otherwise."""
    console = Console(stderr=True)
    code = normalize_language(language) if language else None
    if language and code is None:
        console.print(f"[red]unknown language {language!r}[/red]")
        return 1
    services = build_services(settings)
    try:
        return await _run(services, console, files, model, code, response_format, output_dir,
                          task, prompt, extension)
    finally:
        services.close()


async def _run(
    services: Services, console: Console, files: list[Path], model: str, language: str | None,
    response_format: str, output_dir: Path, task: Task, prompt: str | None, extension: str,
) -> int:
    public = services.catalog.resolve(model)
    if public is None or public.spec.kind != "stt":
        console.print(f"[red]unknown speech-to-text model {model!r}[/red] "
                      "(`voxserve models` lists what is served)")
        return 1
    service = services.transcriber_for(public.spec)
    output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    columns = (
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        for path in files:
            bar = progress.add_task(path.name, total=None)
            req = SpeechToTextRequest(
                task=task, model=public, audio=path.read_bytes(),
                response_format=response_format, language=language, prompt=prompt,
                timestamp_granularities=frozenset({"word", "segment"})
                if response_format == "verbose_json" else frozenset(),
            )
            try:
                transcript = await collect(req, _with_progress(service.decode(req), progress, bar))
            except ServiceError as exc:
                progress.console.print(f"[red]{path}: {exc.message}[/red]")
                failures += 1
                continue
            options = render_options(req, transcript)
            rendered = render_transcript(transcript, response_format, options)
            target = output_dir / f"{path.stem}.{extension}"
            target.write_bytes(rendered.body)
            progress.update(bar, completed=transcript.duration)
            progress.console.print(f"{path} -> {target}")
    return 1 if failures else 0


async def _with_progress(
    items: AsyncIterator[StreamItem], progress: Progress, bar: TaskID
) -> AsyncIterator[StreamItem]:
    """Pass the decoder's items through, moving the bar to each segment's end time."""
    async for item in items:
        if isinstance(item, Segment):
            progress.update(bar, completed=item.end)
        elif isinstance(item, DecodeEnd):
            progress.update(bar, total=item.duration, completed=item.duration)
        yield item
