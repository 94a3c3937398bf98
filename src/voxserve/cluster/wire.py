"""The records that cross between the ingress and the model replicas (pickled by Ray).

Engines stay on their replica: a stream's `StreamStart` carries the loaded engine, used by
`build_transcript` to count tokens, so the replica sends `RemoteStart` instead and, after the
last segment, the token counts the ingress will ask for (`TokenCounts`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from voxserve.runtime.context import RequestContext
from voxserve.stt.engine import DecodeInfo


@dataclass(frozen=True)
class Call:
    """What a replica needs of the HTTP request: its id, and how long ago it arrived (clocks
    differ between machines, an age does not), so its deadline counts from the arrival."""

    request_id: str
    age: float

    @classmethod
    def from_context(cls, ctx: RequestContext | None) -> Call:
        if ctx is None:
            return cls("req_unknown", 0.0)
        return cls(ctx.request_id, time.monotonic() - ctx.started)

    def context(self) -> RequestContext:
        return RequestContext(self.request_id, started=time.monotonic() - self.age)


@dataclass(frozen=True)
class RemoteStart:
    info: DecodeInfo
    replica: str  # which replica serves the stream (tests and logs read it)


@dataclass(frozen=True)
class TokenCounts:
    """Tokens of the texts `build_transcript` counts: the prompt and the final text."""

    counts: dict[str, int]


@dataclass
class RemoteTokenCounter:
    """Stands in for the engine in a `StreamStart` on the ingress: answers `count_tokens` from
    the counts the replica sent once the stream had ended."""

    counts: dict[str, int] = field(default_factory=dict)

    def count_tokens(self, text: str) -> int:
        return self.counts[text]


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
