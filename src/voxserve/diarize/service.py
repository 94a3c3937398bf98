"""Transcription with speakers: Whisper (with word times) and the diarizer over the same audio,
the words then assigned to speaker turns. The two models run concurrently; speaker segments
are produced as Whisper finishes each of its segments, so streams start early.

Both run in worker threads under the Whisper model's lease, so the request's slot is held until
both threads have stopped: a diarizer call cannot be interrupted, and had it run outside the
lease, a request that ended early (a client gone, an error) would free its slot while the
diarizer ran on, letting more diarizations run at once than the lane has slots."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import anyio
import numpy as np

from voxserve.audio.blocks import AudioBlock
from voxserve.audio.decode import SAMPLE_RATE, decode_audio
from voxserve.config import Settings
from voxserve.diarize.assign import split_by_speaker
from voxserve.diarize.pipeline import Diarizer, KnownSpeaker, Turn
from voxserve.diarize.references import ReferenceAudio, check_known_speakers, decode_references
from voxserve.errors import Internal, InvalidInput
from voxserve.runtime.catalog import Catalog, ModelSpec
from voxserve.runtime.context import RequestContext
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.scheduler import Lease, Scheduler
from voxserve.stt.engine import DecodeEnd, DecodeInfo
from voxserve.stt.pipeline import decode_blocks
from voxserve.stt.request import SpeechToTextRequest, check_against_profile
from voxserve.stt.service import (
    StreamItem,
    StreamStart,
    TranscriptionService,
    check_capabilities,
    decode_options,
)

T = TypeVar("T")

# OpenAI: "chunking_strategy is required for diarization models" above 30 s.
CHUNKING_REQUIRED_SECONDS = 30.0


class DiarizedSpeechToText(TranscriptionService):
    def __init__(
        self, settings: Settings, pool: ModelPool, catalog: Catalog, scheduler: Scheduler
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._catalog = catalog
        # Admission goes through the Whisper model's lane: it is the engine both share.
        self._scheduler = scheduler

    def check(self, req: SpeechToTextRequest) -> None:
        check_against_profile(req)
        check_known_speakers(req.diarize)  # counts, pairs and names: the clips need decoding

    async def decode(
        self, req: SpeechToTextRequest, ctx: RequestContext | None = None
    ) -> AsyncIterator[StreamItem]:
        """A StreamStart, then speaker segments. Every check of the request and its audio
        runs before the StreamStart (a door can still refuse the request as a whole)."""
        self.check(req)
        audio = await anyio.to_thread.run_sync(
            decode_audio, req.audio, self._settings.max_audio_seconds
        )
        check_chunking(req, audio)
        references = await anyio.to_thread.run_sync(decode_references, req.diarize)
        whisper_spec, diarizer_spec = self._parts(req.model.spec)
        async with self._scheduler.admit(whisper_spec, ctx) as lease:
            engine = lease.engine
            lease.audio_seconds = audio.size / SAMPLE_RATE
            check_capabilities(req, engine.capabilities)
            # Sequential decoding: speaker segments follow Whisper's own segments over the
            # whole file, and speech chunks cut one speaker's turn into several segments
            # (OpenAI's meeting recording: A, B, A became A, B, A, A).
            options = replace(
                decode_options(req, self._settings), word_timestamps=True, sequential=True
            )
            held = HeldModel(self._pool, diarizer_spec.id, await self._pool.acquire(diarizer_spec))

            def diarize() -> Iterator[list[Turn]]:
                if not held.take():
                    return  # the request ended before this thread started: nobody waits
                try:
                    yield run_diarizer(held.engine, audio, references,
                                       req.diarize.min_speakers, req.diarize.max_speakers)
                finally:
                    held.release_from_thread()

            turns_job = asyncio.ensure_future(only_item(lease, diarize))
            try:
                def run():
                    # The diarizer needs the whole file anyway: one block.
                    blocks = [AudioBlock(0, audio, last=True)]
                    for item in decode_blocks(engine, blocks, options):
                        yield StreamStart(item) if isinstance(item, DecodeInfo) else item

                next_id = 0
                previous: str | None = None
                turns: list[Turn] | None = None
                texts: list[str] = []
                async for item in lease.iterate(run):
                    if isinstance(item, StreamStart):
                        yield item
                        continue
                    if isinstance(item, DecodeEnd):
                        # The tokens of the text as split into speaker segments.
                        text = "".join(texts).strip()
                        yield replace(item, output_tokens=engine.count_tokens(text))
                        continue
                    if turns is None:
                        turns = await turns_job
                    for piece in split_by_speaker(item, turns, next_id, previous):
                        if not piece.text.strip():
                            continue
                        next_id = piece.id + 1
                        previous = piece.speaker
                        texts.append(piece.text)
                        yield piece
            finally:
                if not turns_job.done():
                    # The thread runs on, and the lease keeps the slot until it stops.
                    turns_job.cancel()
                held.release_unless_taken()

    def _parts(self, spec: ModelSpec) -> tuple[ModelSpec, ModelSpec]:
        whisper = self._catalog.spec(spec.options["whisper"])
        diarizer = self._catalog.spec(spec.options["diarizer"])
        if whisper is None or diarizer is None:
            raise Internal(f"Model '{spec.id}' is misconfigured.")
        return whisper, diarizer


async def only_item(lease: Lease, make_iterator: Callable[[], Iterator[T]]) -> T:
    """The one item of `make_iterator()`: a blocking call run in a worker thread under the
    lease (its deadline, and its slot held until the thread stops, even when this is
    cancelled)."""
    items = [item async for item in lease.iterate(make_iterator)]
    if len(items) != 1:
        raise Internal(f"expected one item from the worker, got {len(items)}")
    return items[0]


class HeldModel:
    """A reference to a pooled model (`ModelPool.acquire`) that a worker thread takes over:
    the thread releases it when done with the model, so an idle-model limit cannot unload it
    under the thread after the request has ended. If the request ends before the thread took
    it, the request releases it and the thread must not start (`take()` says so). The pool
    belongs to the event loop, so the thread's release is sent there."""

    def __init__(self, pool: ModelPool, model_id: str, engine: Any) -> None:
        self.engine = engine
        self._pool = pool
        self._model_id = model_id
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._owner: str | None = None  # "thread" or "request", once decided

    def take(self) -> bool:
        """In the worker thread, before using the model: whether it may."""
        return self._claim("thread")

    def release_from_thread(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._pool.release, self._model_id)
        except RuntimeError:
            pass  # the loop has closed (shutdown): the pool is gone with it

    def release_unless_taken(self) -> None:
        """At the request's end, on the loop: releases the model unless a thread took it."""
        if self._claim("request"):
            self._pool.release(self._model_id)

    def _claim(self, owner: str) -> bool:
        with self._lock:
            if self._owner is None:
                self._owner = owner
            return self._owner == owner


def check_chunking(req: SpeechToTextRequest, audio: np.ndarray) -> None:
    if req.profile.name != "gpt-4o-transcribe-diarize" or req.vad is not None:
        return
    if audio.size / SAMPLE_RATE > CHUNKING_REQUIRED_SECONDS:
        raise InvalidInput(
            "chunking_strategy is required for diarization models",
            param="chunking_strategy",
            code="invalid_value",
        )


def run_diarizer(
    diarizer: Diarizer, audio: np.ndarray, references: list[ReferenceAudio],
    min_speakers: int | None, max_speakers: int | None,
) -> list[Turn]:
    known = [KnownSpeaker(r.name, diarizer.reference_embedding(r.audio)) for r in references]
    return diarizer.diarize(audio, known, min_speakers, max_speakers)
