"""The `voxserve transcribe` command: the server's own pipeline, run on files on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from voxserve.audio.decode import probe_duration
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
    overwrite: bool = False,
) -> int:
    """Returns the exit code: 0 if every file was written, 1 otherwise."""
    console = Console(stderr=True)
    code = normalize_language(language) if language else None
    if language and code is None:
        console.print(f"[red]unknown language {language!r}[/red]")
        return 1
    targets, problems = output_paths(files, output_dir, extension, overwrite)
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    if problems:
        return 1
    services = build_services(settings)
    try:
        return await _run(services, console, list(zip(files, targets, strict=True)), model, code,
                          response_format, output_dir, task, prompt, overwrite)
    finally:
        services.close()


def output_paths(
    files: list[Path], output_dir: Path, extension: str, overwrite: bool
) -> tuple[list[Path], list[str]]:
    """Each input's output (named after its stem), and what is wrong with them, found before
    any work: two inputs with one stem (`a/x.wav b/x.wav`) would write one file, the second
    transcript replacing the first, and an existing output is kept unless `overwrite`."""
    targets: list[Path] = []
    problems: list[str] = []
    first_for: dict[Path, Path] = {}
    for path in files:
        target = output_dir / f"{path.stem}.{extension}"
        if target in first_for:
            problems.append(f"{first_for[target]} and {path} would both be written to {target}: "
                            "transcribe them in separate runs with different --output-dir")
        elif not overwrite and target.exists():
            problems.append(f"{target} (for {path}) exists: pass --overwrite to replace it")
        first_for.setdefault(target, path)
        targets.append(target)
    return targets, problems


async def _run(
    services: Services, console: Console, jobs: list[tuple[Path, Path]], model: str,
    language: str | None, response_format: str, output_dir: Path, task: Task,
    prompt: str | None, overwrite: bool,
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
        TextColumn("{task.fields[seconds]}"), TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        for path, target in jobs:
            audio = path.read_bytes()
            # The bar's total is the length the container announces, known before decoding
            # starts; it moves with each segment's end, in seconds of audio.
            total = _announced_seconds(audio)
            bar = progress.add_task(path.name, total=total, seconds="")
            req = SpeechToTextRequest(
                task=task, model=public, audio=audio,
                response_format=response_format, language=language, prompt=prompt,
                timestamp_granularities=frozenset({"word", "segment"})
                if response_format == "verbose_json" else frozenset(),
            )
            try:
                items = _with_progress(service.decode(req), progress, bar, total)
                transcript = await collect(req, items)
            except ServiceError as exc:
                progress.console.print(f"[red]{path}: {exc.message}[/red]")
                failures += 1
                continue
            options = render_options(req, transcript)
            rendered = render_transcript(transcript, response_format, options)
            try:
                # "x": an output that appeared since the check above is not replaced either.
                with target.open("wb" if overwrite else "xb") as out:
                    out.write(rendered.body)
            except FileExistsError:
                progress.console.print(f"[red]{path}: {target} appeared meanwhile and is kept; "
                                       "pass --overwrite to replace it[/red]")
                failures += 1
                continue
            progress.update(bar, completed=transcript.duration)
            progress.console.print(f"{path} -> {target}")
    return 1 if failures else 0


def _announced_seconds(audio: bytes) -> float | None:
    try:
        return probe_duration(audio)
    except ServiceError:
        return None  # not audio: the decoder reports it with the server's message


def _seconds_label(done: float, total: float | None) -> str:
    return f"{done:.0f}/{total:.0f} s" if total else f"{done:.0f} s"


async def _with_progress(
    items: AsyncIterator[StreamItem], progress: Progress, bar: TaskID, total: float | None
) -> AsyncIterator[StreamItem]:
    """Pass the decoder's items through, moving the bar to each segment's end time."""
    async for item in items:
        if isinstance(item, Segment):
            done = item.end if total is None else min(item.end, total)
            progress.update(bar, completed=done, seconds=_seconds_label(done, total))
        elif isinstance(item, DecodeEnd):
            total = item.duration
            progress.update(bar, total=total, completed=total, seconds=_seconds_label(total, total))
        yield item
