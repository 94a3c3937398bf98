"""Decode passes: audio already in memory (a live session's utterance so far, a phrase to
translate) decoded as one block, each pass a request of its own.

A pass is admitted by the scheduler like an upload (its own slot and deadline, dropped before
the engine when its caller has gone), checked against the engine's capabilities, and decoded
by the pipeline (the speech gate included) in a worker thread. A required pass is admitted as
live work (`Scheduler.admit(..., live=True)`): ahead of queued uploads and never refused for
their full queue, so a flood of uploads delays a session's text but cannot lose it.

Live sessions reach it through `DecodePasses`, so that a door without engines (the cluster's
ingress) can run the passes where the model is loaded (`cluster/proxies.py`: the replica's
`ScheduledPasses` gets the same `optional` flag, so it admits them the same way) without the
sessions knowing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from voxserve.audio.blocks import AudioBlock
from voxserve.audio.decode import SAMPLE_RATE
from voxserve.diarize.pipeline import Diarization, KnownSpeaker
from voxserve.diarize.service import only_item
from voxserve.domain import Segment
from voxserve.runtime.catalog import ModelSpec, PublicModel
from voxserve.runtime.context import RequestContext
from voxserve.runtime.scheduler import Scheduler
from voxserve.stt.engine import DecodeInfo, DecodeOptions, SpeechToTextEngine
from voxserve.stt.pipeline import DecodeItem, decode_blocks
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import check_capabilities


@dataclass(frozen=True)
class PassDecode:
    segments: list[Segment]
    language: str | None  # the detected (or given) language
    prompt_tokens: int
    text_tokens: int  # the engine's token count of the segments' text


class DecodePasses:
    """What live sessions need of speech-to-text.

    A pass is *optional* when nothing is lost if it never runs (a live pass: its text only
    comes sooner); the others (final passes, translations) are *required*."""

    async def decode(
        self, model: PublicModel, samples: np.ndarray, options: DecodeOptions,
        ctx: RequestContext, *, optional: bool = False,
    ) -> PassDecode:
        raise NotImplementedError

    def waiting(self, model_id: str) -> bool:
        """Whether other work waits for the model (speculative work then gives way)."""
        raise NotImplementedError

    # Whether `diarize` is served: a session of a diarization model needs it.
    diarizes: bool = False

    async def diarize(
        self, diarizer: ModelSpec, samples: np.ndarray, known: list[KnownSpeaker],
        ctx: RequestContext,
    ) -> Diarization:
        """Who spoke when in one utterance, matched against the session's `known` voices."""
        raise NotImplementedError

    def optional_may_start(self, model_id: str) -> bool:
        """Whether an optional pass may start now without slowing required work."""
        return not self.waiting(model_id)


class ScheduledPasses(DecodePasses):
    """Passes on this instance's engines, through its scheduler."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        # Passes queued or running, per model and kind ("required" / "optional").
        self._under_way: Counter[tuple[str, str]] = Counter()

    async def decode(
        self, model: PublicModel, samples: np.ndarray, options: DecodeOptions,
        ctx: RequestContext, *, optional: bool = False,
    ) -> PassDecode:
        with self._counted(model.spec.id, "optional" if optional else "required"):
            return await self._decode(model, samples, options, ctx, live=not optional)

    async def _decode(
        self, model: PublicModel, samples: np.ndarray, options: DecodeOptions,
        ctx: RequestContext, *, live: bool,
    ) -> PassDecode:
        # Only required passes jump the queue: an optional one is an ordinary request, and
        # `optional_may_start` keeps it from even queueing behind other work.
        async with self._scheduler.admit(model.spec, ctx, live=live) as lease:
            engine: SpeechToTextEngine = lease.engine
            request = SpeechToTextRequest(task=options.task, model=model, audio=b"",
                                          language=options.language)
            check_capabilities(request, engine.capabilities)
            block = AudioBlock(0, samples, last=True)
            segments: list[Segment] = []
            language, prompt_tokens = options.language, 0
            async for item in lease.iterate(lambda: _one_utterance(engine, block, options)):
                if isinstance(item, Segment):
                    segments.append(item)
                elif isinstance(item, DecodeInfo):
                    language, prompt_tokens = item.language, item.prompt_tokens
            lease.audio_seconds = samples.size / SAMPLE_RATE
            text = "".join(s.text for s in segments).strip()
            return PassDecode(segments, language, prompt_tokens, engine.count_tokens(text))

    def waiting(self, model_id: str) -> bool:
        return self._scheduler.queued(model_id) > 0

    diarizes = True

    async def diarize(
        self, diarizer: ModelSpec, samples: np.ndarray, known: list[KnownSpeaker],
        ctx: RequestContext,
    ) -> Diarization:
        # Through the diarizer's own lane, like any engine call: N sessions share its slots
        # instead of running N diarizer threads, and the slot is held until the thread ends.
        async with self._scheduler.admit(diarizer, ctx) as lease:
            return await only_item(
                lease, lambda: iter([lease.engine.diarize_voices(samples, known)]))

    def optional_may_start(self, model_id: str) -> bool:
        # The scheduler has slots to spare (several per core), so a pass admitted beside
        # another shares the cores with it: live passes of several sessions, started while
        # a final pass runs, made that final pass wait for text nobody needed yet. One
        # optional pass at a time, and only while no required pass is under way and no
        # request is queued.
        return (not self.waiting(model_id)
                and self._under_way[model_id, "required"] == 0
                and self._under_way[model_id, "optional"] == 0)

    @contextmanager
    def _counted(self, model_id: str, kind: str) -> Iterator[None]:
        self._under_way[model_id, kind] += 1
        try:
            yield
        finally:
            self._under_way[model_id, kind] -= 1


def _one_utterance(
    engine: SpeechToTextEngine, block: AudioBlock, options: DecodeOptions
) -> Iterator[DecodeItem]:
    """A pass's decode, in the worker thread: one utterance, so an engine that can encode a
    short window for it does, for the language detection that runs in this thread too (the
    decode's own chunks ask for it in their options, `short_window`, in whichever thread
    decodes them)."""
    short = getattr(engine, "short_windows", None)
    with short() if short is not None else nullcontext():
        yield from decode_blocks(engine, [block], options)
