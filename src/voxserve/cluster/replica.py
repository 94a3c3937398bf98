"""A model deployment's replica: the local services for one model, called by the ingress.

Each replica loads its model before it takes requests and has its own scheduler, so a full
replica answers voxserve's own 429 and the deadline counts from the request's arrival at the
ingress. Ray cancelling a call (the client left) closes the service's stream, which stops the
engine's worker as on one machine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import aclosing, contextmanager

import ray
from ray import serve

from voxserve.cluster.local import LocalServices, build_local_services
from voxserve.cluster.wire import (
    Call,
    EngineVoices,
    RemoteStart,
    SpeechHead,
    SpeechTail,
    TokenCounts,
)
from voxserve.config import Settings
from voxserve.domain import Segment, Transcript
from voxserve.runtime.catalog import PublicModel
from voxserve.runtime.context import current_request
from voxserve.runtime.threads import active_workers
from voxserve.stt.engine import DecodeEnd
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import StreamStart, build_transcript
from voxserve.tts.service import SpeechRequest


@contextmanager
def request_context(call: Call):
    """The request's context for the services (the scheduler reads its arrival time)."""
    token = current_request.set(call.context())
    try:
        yield
    finally:
        current_request.reset(token)


class ModelServer:
    async def __init__(self, settings: Settings, model_id: str) -> None:
        self._services: LocalServices = build_local_services(settings)
        self.model_id = model_id
        spec = self._services.catalog.spec(model_id)
        if spec is None:
            raise ValueError(f"unknown model {model_id!r}")
        await self._services.pool.preload([spec])
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id if context else f"pid-{os.getpid()}"
        self.node = ray.get_runtime_context().get_node_id()

    def _stt(self, diarized: bool):
        return self._services.diarized_stt if diarized else self._services.stt

    async def decode(
        self, req: SpeechToTextRequest, call: Call, diarized: bool = False
    ) -> AsyncIterator[RemoteStart | Segment | DecodeEnd | TokenCounts]:
        start: StreamStart | None = None
        segments: list[Segment] = []
        duration = 0.0
        with request_context(call):
            items = self._stt(diarized).decode(req)
            async with aclosing(items):
                async for item in items:
                    if isinstance(item, StreamStart):
                        start = item
                        yield RemoteStart(item.info, self.replica)
                        continue
                    if isinstance(item, DecodeEnd):
                        duration = item.duration
                    else:
                        segments.append(item)
                    yield item
        if start is not None:
            text = build_transcript(req, start, segments, duration).text
            prompt = req.prompt or ""
            yield TokenCounts({t: start.engine.count_tokens(t) for t in (prompt, text)})

    async def transcribe(
        self, req: SpeechToTextRequest, call: Call, diarized: bool = False
    ) -> Transcript:
        with request_context(call):
            return await self._stt(diarized).transcribe(req)

    async def speak(
        self, req: SpeechRequest, call: Call
    ) -> AsyncIterator[SpeechHead | bytes | SpeechTail]:
        with request_context(call):
            stream = await self._services.tts.open(req)
        stats = stream.stats
        yield SpeechHead(
            stream.content_type, stream.input_tokens, stream.sse, stats.sample_rate,
            stats.sentences,
        )
        async with aclosing(stream.chunks):
            async for chunk in stream.chunks:
                yield chunk
        yield SpeechTail(stats.samples, stats.sentences_done)

    async def voices(self, model: PublicModel) -> EngineVoices:
        tts = self._services.tts
        engine = await tts.engine(model)
        return EngineVoices(tuple(engine.voices), tts.voice_map(model, engine))

    async def health(self) -> dict:
        scheduler = self._services.scheduler
        return {
            "model": self.model_id,
            "replica": self.replica,
            "node": self.node,
            "pid": os.getpid(),  # the fault tests kill it
            "loaded_models": self._services.pool.loaded_ids(),
            "busy_workers": active_workers(),
            "busy_slots": scheduler.busy(self.model_id),
            "queued": scheduler.queued(self.model_id),
        }

    async def metrics(self) -> dict:
        return {"replica": self.replica, "exposition": self._services.metrics.exposition()}
