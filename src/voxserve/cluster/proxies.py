"""The ingress's speech-to-text and speech services: the same interfaces as the local ones
(`TranscriptionService`, `DecodePasses`, `TextToSpeech.open/engine/voice_map`), served by model
deployments. The HTTP routes and the live sessions cannot tell them apart."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing

import numpy as np

from voxserve.cluster.calls import RemoteModel
from voxserve.cluster.served import serving_model
from voxserve.cluster.wire import Call, EngineVoices, SpeechHead, SpeechTail
from voxserve.diarize.pipeline import Diarization, KnownSpeaker
from voxserve.domain import Transcript
from voxserve.errors import model_not_found
from voxserve.runtime.catalog import ModelSpec, PublicModel
from voxserve.runtime.context import RequestContext
from voxserve.stt.engine import DecodeOptions
from voxserve.stt.passes import DecodePasses, PassDecode
from voxserve.stt.request import SpeechToTextRequest
from voxserve.stt.service import StreamItem, TranscriptionService
from voxserve.tts.service import SpeechRequest, SpeechStream, SynthesisStats


class RemoteModels:
    """The model deployments by model id."""

    def __init__(self, models: dict[str, RemoteModel]) -> None:
        self.models = models

    def for_spec(self, spec: ModelSpec, ctx: RequestContext | None) -> RemoteModel:
        remote = self.models.get(serving_model(spec))
        if remote is None:  # the served catalog lets only deployed models through
            raise model_not_found(spec.id)
        if ctx is not None:
            ctx.model = spec.id  # for the access log, as the local scheduler would
        return remote


class RemoteSpeechToText(TranscriptionService):
    """Transcriptions, translations and diarized transcriptions: the replica of the request's
    model picks its own pipeline. The request is first checked here, by the local service
    that pipeline runs (`local`: `Services.transcriber_for` of the ingress's own services,
    which never load a model), so a request bound to fail is refused before its upload
    crosses to a replica."""

    def __init__(
        self, models: RemoteModels, local: Callable[[ModelSpec], TranscriptionService]
    ) -> None:
        self._models = models
        self._local = local

    def check(self, req: SpeechToTextRequest) -> None:
        self._local(req.model.spec).check(req)

    async def decode(
        self, req: SpeechToTextRequest, ctx: RequestContext | None = None
    ) -> AsyncIterator[StreamItem]:
        self.check(req)
        remote = self._models.for_spec(req.model.spec, ctx)
        items = remote.stream("decode", req, Call.from_context(ctx))
        async with aclosing(items):
            async for item in items:
                yield item

    async def transcribe(
        self, req: SpeechToTextRequest, ctx: RequestContext | None = None
    ) -> Transcript:
        self.check(req)
        remote = self._models.for_spec(req.model.spec, ctx)
        return await remote.call("transcribe", req, Call.from_context(ctx), ctx=ctx)


class RemoteDecodePasses(DecodePasses):
    """A live session's decode passes, each one call to a replica of its model: the session
    (its audio, turns and text) stays in the ingress, and only a pass's audio crosses.

    Optional (live) passes give way as on one machine, by what this ingress has sent: one
    may start only while fewer of its passes are under way on the model than the model has
    replicas (`capacity`, from the settings; 1 when unknown), so that live text seldom makes
    a final pass share a replica's cores with it (with every live pass sent, bench_ray's 4
    and 8 sessions on two 1-CPU replicas had their turns' p95 at 4.0 and 6.4 s; with this,
    1.4 and 1.2 s). Required passes are always sent; each replica's scheduler admits them
    ahead of its queue. The ingress sees neither the replicas' queues nor the other ingress
    replicas' passes."""

    def __init__(
        self, models: RemoteModels, capacity: Mapping[str, int] | None = None,
        diarize_on: str | None = None,
    ) -> None:
        self._models = models
        self._capacity = dict(capacity or {})
        self._under_way: Counter[str] = Counter()  # passes in flight per model id
        # The deployment whose replicas diarize live items (a served Whisper model's: its
        # replicas hold the packaged diarizer too); None: live speakers are not served.
        self._diarize_on = diarize_on

    @property
    def diarizes(self) -> bool:  # type: ignore[override]
        return self._diarize_on is not None

    async def diarize(
        self, diarizer: ModelSpec, samples: np.ndarray, known: list[KnownSpeaker],
        ctx: RequestContext,
    ) -> Diarization:
        if self._diarize_on is None:
            raise NotImplementedError("live diarization is not served here")
        remote = self._models.models[self._diarize_on]
        return await remote.call("diarize_pass", diarizer.id, samples, known,
                                 Call.from_context(ctx), ctx=ctx)

    async def decode(
        self, model: PublicModel, samples: np.ndarray, options: DecodeOptions,
        ctx: RequestContext, *, optional: bool = False,
    ) -> PassDecode:
        remote = self._models.for_spec(model.spec, ctx)
        self._under_way[model.spec.id] += 1
        try:
            # `ctx`: a pass whose session has ended is cancelled on the replica.
            return await remote.call("decode_pass", model, samples, options,
                                     Call.from_context(ctx), optional, ctx=ctx)
        finally:
            self._under_way[model.spec.id] -= 1

    def waiting(self, model_id: str) -> bool:
        # The replicas' queues are not visible from here without a call per pass; each
        # replica's scheduler still orders the passes it is sent with its other work.
        return False

    def optional_may_start(self, model_id: str) -> bool:
        return self._under_way[model_id] < max(1, self._capacity.get(model_id, 1))


class RemoteTextToSpeech:
    def __init__(self, models: RemoteModels) -> None:
        self._models = models

    async def engine(self, model: PublicModel) -> EngineVoices:
        return await self._models.for_spec(model.spec, None).call("voices", model)

    def voice_map(self, model: PublicModel, engine: EngineVoices) -> dict[str, str]:
        return engine.mapping

    async def open(self, req: SpeechRequest, ctx: RequestContext | None = None) -> SpeechStream:
        remote = self._models.for_spec(req.model.spec, ctx)
        items = remote.stream("speak", req, Call.from_context(ctx))
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
