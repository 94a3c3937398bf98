"""A model deployment's replica: the services of `build_services` for one model, called by
the ingress.

Each replica loads its model before it takes requests and has its own scheduler, so a full
replica answers voxserve's own Busy (429) and the deadline counts from the request's arrival
at the ingress. Ray cancelling a call (the client left) closes the service's stream, which
stops the engine's worker as on one machine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import aclosing

import numpy as np
import ray
from ray import serve

from voxserve.cluster.wire import Call, EngineVoices, SpeechHead, SpeechTail
from voxserve.config import Settings
from voxserve.diarize.pipeline import Diarization, KnownSpeaker
from voxserve.domain import Transcript
from voxserve.runtime.catalog import PublicModel
from voxserve.services import Services, build_services
from voxserve.stt.engine import DecodeOptions
from voxserve.stt.passes import PassDecode
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import StreamItem
from voxserve.tts.service import SpeechRequest


class ModelServer:
    async def __init__(self, settings: Settings, model_id: str) -> None:
        self._services: Services = build_services(settings)
        self.model_id = model_id
        spec = self._services.catalog.spec(model_id)
        if spec is None:
            raise ValueError(f"unknown model {model_id!r}")
        await self._services.pool.preload([spec])
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id if context else f"pid-{os.getpid()}"
        self.node = ray.get_runtime_context().get_node_id()

    async def decode(self, req: SpeechToTextRequest, call: Call) -> AsyncIterator[StreamItem]:
        items = self._services.transcriber_for(req.model.spec).decode(req, call.context())
        async with aclosing(items):
            async for item in items:
                yield item

    async def transcribe(self, req: SpeechToTextRequest, call: Call) -> Transcript:
        service = self._services.transcriber_for(req.model.spec)
        return await service.transcribe(req, call.context())

    async def decode_pass(
        self, model: PublicModel, samples: np.ndarray, options: DecodeOptions, call: Call,
        optional: bool = False,
    ) -> PassDecode:
        return await self._services.passes.decode(model, samples, options, call.context(),
                                                  optional=optional)

    async def diarize_pass(
        self, diarizer_id: str, samples: np.ndarray, known: list[KnownSpeaker], call: Call
    ) -> Diarization:
        """A live session's item diarized (the diarizer's own lane on this replica; it loads
        the diarizer the first time, from the package)."""
        spec = self._services.catalog.spec(diarizer_id)
        if spec is None:
            raise ValueError(f"unknown diarizer {diarizer_id!r}")
        return await self._services.passes.diarize(spec, samples, known, call.context())

    async def speak(
        self, req: SpeechRequest, call: Call
    ) -> AsyncIterator[SpeechHead | bytes | SpeechTail]:
        stream = await self._services.tts.open(req, call.context())
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
            "busy_workers": scheduler.workers.active,
            "busy_slots": scheduler.busy(self.model_id),
            "queued": scheduler.queued(self.model_id),
        }

    async def metrics(self) -> dict:
        return {"replica": self.replica, "exposition": self._services.metrics.exposition()}
