"""The records that cross between the ingress and the model replicas (pickled by Ray), beside
the core's own (requests, stream items, transcripts, errors), which cross as they are."""

from __future__ import annotations

import time
from dataclasses import dataclass

from voxserve.runtime.context import RequestContext


@dataclass(frozen=True)
class Call:
    """What a replica needs of the caller's context: the request id, and how long ago the
    request arrived (clocks differ between machines, an age does not), so that its deadline
    counts from the arrival at the ingress."""

    request_id: str
    age: float

    @classmethod
    def from_context(cls, ctx: RequestContext | None) -> Call:
        ctx = ctx or RequestContext()
        return cls(ctx.request_id, time.monotonic() - ctx.started)

    def context(self) -> RequestContext:
        return RequestContext(self.request_id, started=time.monotonic() - self.age)


@dataclass(frozen=True)
class SpeechHead:
    """A speech stream's opening: everything of `SpeechStream` except its chunks."""

    content_type: str
    input_tokens: int
    sse: bool
    sample_rate: int
    sentences: int


@dataclass(frozen=True)
class SpeechTail:
    """Sent after the last chunk: how much audio was produced (for the SSE usage)."""

    samples: int
    sentences_done: int


@dataclass(frozen=True)
class EngineVoices:
    """A speech engine's voices as `/v1/audio/voices` lists them (the engine stays remote)."""

    voices: tuple[str, ...]
    mapping: dict[str, str]
