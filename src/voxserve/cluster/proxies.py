"""The ingress's speech-to-text and speech services: the same interfaces as the local ones
(`TranscriptionService`, `TextToSpeech.open/engine/voice_map`), served by model deployments.
The HTTP routes cannot tell them apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from voxserve.cluster.calls import RemoteModel
from voxserve.cluster.served import serving_model
from voxserve.cluster.wire import (
    Call,
    EngineVoices,
    RemoteStart,
    RemoteTokenCounter,
    SpeechHead,
    SpeechTail,
    TokenCounts,
)
from voxserve.domain import Transcript
from voxserve.errors import model_not_found
from voxserve.runtime.catalog import ModelSpec, PublicModel
from voxserve.runtime.context import current_request
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import StreamItem, StreamStart, TranscriptionService
from voxserve.tts.service import SpeechRequest, SpeechStream, SynthesisStats


class RemoteModels:
    """The model deployments by model id, and the call context of the current request."""

    def __init__(self, models: dict[str, RemoteModel]) -> None:
        self.models = models

    def for_spec(self, spec: ModelSpec) -> RemoteModel:
        model_id = serving_model(spec)
        remote = self.models.get(model_id)
        if remote is None:  # the served catalog lets only deployed models through
            raise model_not_found(spec.id)
        ctx = current_request.get()
        if ctx is not None:
            ctx.model = spec.id
        return remote

    @staticmethod
    def call() -> Call:
        return Call.from_context(current_request.get())


class RemoteSpeechToText(TranscriptionService):
    def __init__(self, models: RemoteModels, diarized: bool = False) -> None:
        self._models = models
        self._diarized = diarized

    async def decode(self, req: SpeechToTextRequest) -> AsyncIterator[StreamItem]:
        remote = self._models.for_spec(req.model.spec)
        counter = RemoteTokenCounter()
        items = remote.stream("decode", req, self._models.call(), self._diarized)
        async with aclosing(items):
            async for item in items:
                if isinstance(item, RemoteStart):
                    yield StreamStart(item.info, counter)  # type: ignore[arg-type]
                elif isinstance(item, TokenCounts):
                    counter.counts.update(item.counts)
                else:
                    yield item

    async def transcribe(self, req: SpeechToTextRequest) -> Transcript:
        remote = self._models.for_spec(req.model.spec)
        return await remote.call("transcribe", req, self._models.call(), self._diarized)


class RemoteTextToSpeech:
    def __init__(self, models: RemoteModels) -> None:
        self._models = models

    async def engine(self, model: PublicModel) -> EngineVoices:
        return await self._models.for_spec(model.spec).call("voices", model)

    def voice_map(self, model: PublicModel, engine: EngineVoices) -> dict[str, str]:
        return engine.mapping

    async def open(self, req: SpeechRequest) -> SpeechStream:
        remote = self._models.for_spec(req.model.spec)
        items = remote.stream("speak", req, self._models.call())
        try:
            head = await anext(items)  # errors up to here are plain HTTP errors
        except BaseException:
            await items.aclose()
            raise
        assert isinstance(head, SpeechHead)
        stats = SynthesisStats(head.sample_rate, head.sentences)

        async def chunks() -> AsyncIterator[bytes]:
            async with aclosing(items):
                async for item in items:
                    if isinstance(item, SpeechTail):
                        stats.samples, stats.sentences_done = item.samples, item.sentences_done
                    else:
                        yield item

        return SpeechStream(head.content_type, chunks(), stats, head.input_tokens, sse=head.sse)
