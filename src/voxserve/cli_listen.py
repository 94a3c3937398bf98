"""The `voxserve listen` command: a realtime transcription session run in-process on a file,
or on raw audio from stdin, printing the text as it firms up.

It is the same session a WebSocket client gets (`voxserve.realtime.session`), fed the same
events; only the socket is missing. Files are decoded by FFmpeg (PyAV) straight to the wire's
24 kHz PCM16; stdin is taken as raw audio in the chosen format (`pcm`: 24 kHz PCM16 LE mono,
`pcmu`/`pcma`: 8 kHz G.711), so `arecord -f S16_LE -r 24000 -c 1 | voxserve listen -` works.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TextIO

from voxserve.config import Settings
from voxserve.realtime.audio_in import FORMAT_RATES
from voxserve.realtime.hub import RealtimeHub
from voxserve.realtime.session import TranscriptionSession
from voxserve.services import build_services

CHUNK_SECONDS = 0.1


def file_pcm24(path: Path) -> Iterator[bytes]:
    """A file's first audio stream as 24 kHz PCM16 mono, chunk by chunk."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=24_000)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray().tobytes()
        for out in resampler.resample(None):
            yield out.to_ndarray().tobytes()


async def _chunks(source: str, wire_format: str, paced: bool) -> AsyncIterator[bytes]:
    rate = FORMAT_RATES[wire_format]
    size = int(rate * CHUNK_SECONDS) * (2 if wire_format == "audio/pcm" else 1)
    if source == "-":
        while True:
            data = await asyncio.to_thread(sys.stdin.buffer.read, size)
            if not data:
                return
            yield data
        return
    pending = b""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    for data in file_pcm24(Path(source)):
        pending += data
        while len(pending) >= size:
            chunk, pending = pending[:size], pending[size:]
            if paced:  # as a microphone would deliver it
                await asyncio.sleep(max(0.0, start + sent * CHUNK_SECONDS - loop.time()))
            sent += 1
            yield chunk
    if pending:
        yield pending


async def listen(
    settings: Settings,
    source: str,
    *,
    model: str,
    language: str | None,
    wire_format: str,
    vad: bool,
    paced: bool,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout  # looked up per call: a test runner swaps it
    services = build_services(settings)
    session = RealtimeHub(
        settings, services.catalog, services.passes
    ).open()
    try:
        return await _run(session, source, model, language, wire_format, vad, paced, out)
    finally:
        await session.close()
        # A live pass cut short still runs in its worker thread to the end of its window;
        # the models may only be unloaded once it has let go of its engine.
        while services.workers.active:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0)  # the slot's release runs as a callback once the thread ended
        services.close()


async def _run(
    session: TranscriptionSession, source: str, model: str, language: str | None,
    wire_format: str, vad: bool, paced: bool, out: TextIO,
) -> int:
    session.start()
    transcription = {"model": model, **({"language": language} if language else {})}
    audio_input: dict = {"format": {"type": wire_format}, "transcription": transcription}
    if not vad:
        audio_input["turn_detection"] = None
    session.receive(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": audio_input}}}))

    async def feed() -> None:
        async for chunk in _chunks(source, wire_format, paced):
            session.receive(json.dumps({"type": "input_audio_buffer.append",
                                        "audio": base64.b64encode(chunk).decode()}))
        # Whatever the turn detector has not ended yet becomes the last item; `cleared`
        # then marks the end of the input (events come in order).
        session.receive(json.dumps({"type": "input_audio_buffer.commit", "event_id": "end"}))
        session.receive(json.dumps({"type": "input_audio_buffer.clear"}))

    feeder = asyncio.create_task(feed())
    committed = finished = 0
    input_done = failed = spoke = False
    try:
        while not (input_done and finished == committed):
            event = await session.outbox.get()
            kind = event["type"]
            if kind == "conversation.item.input_audio_transcription.delta":
                out.write(event["delta"])
                out.flush()
                spoke = True
            elif kind == "input_audio_buffer.committed":
                committed += 1
            elif kind == "conversation.item.input_audio_transcription.completed":
                finished += 1
                if spoke:  # one line per item that said something
                    out.write("\n")
                    out.flush()
                spoke = False
            elif kind == "conversation.item.input_audio_transcription.failed":
                finished += 1
                failed = True
                print(f"error: {event['error']['message']}", file=sys.stderr)
            elif kind == "input_audio_buffer.cleared":
                input_done = True
            elif kind == "error" and _worth_telling(event["error"], paced):
                print(f"error: {event['error']['message']}", file=sys.stderr)
                if event["error"]["param"] and event["error"]["param"].startswith("session"):
                    return 1
        await feeder
    finally:
        feeder.cancel()
    return 1 if failed else 0


def _worth_telling(error: dict, paced: bool) -> bool:
    if error["event_id"] == "end":  # the last commit found nothing left: expected
        return False
    # A file fed faster than real time is a backlog by design.
    return paced or error["code"] != "server_overloaded"
