"""The live pipeline's speech stage: text spoken in order, on a worker of its own, so the next
phrase is translated while the last one is spoken.

Each text goes to the speech service (`TextToSpeech.open`, through the scheduler; on a cluster
a speech replica), its opening clause alone first (`split_lead`): Piper speaks a clause in a
fraction of the time of a whole sentence, and the rest is synthesized while it plays. The
PCM16 comes out in OpenAI's 200 ms frames (the last of a text may be shorter).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import Awaitable, Callable

from voxserve.audio.encode import OUTPUT_RATE
from voxserve.realtime.pipeline import ErrorsAsEvents
from voxserve.runtime.catalog import PublicModel
from voxserve.runtime.context import RequestContext
from voxserve.tts.service import SpeechRequest, TextToSpeech
from voxserve.tts.text import split_lead

FRAME_MS = 200  # OpenAI's translation frame: audio deltas and elapsed_ms advance by it
FRAME_BYTES = OUTPUT_RATE * 2 * FRAME_MS // 1000  # PCM16 mono

# (base64 frame, elapsed_ms of its phrase, sample rate)
SendAudio = Callable[[str, int, int], None]


class SpeechStage:
    def __init__(
        self,
        tts: TextToSpeech,
        model: PublicModel,
        voice: Callable[[], str],  # the session's voice when a text is spoken
        session_id: str,
        session_gone: Callable[[], Awaitable[bool]],
        send: SendAudio,
        errors_as_events: ErrorsAsEvents,
    ) -> None:
        self._tts = tts
        self._model = model
        self._voice = voice
        self._session_id = session_id
        self._session_gone = session_gone
        self._send = send
        self._errors_as_events = errors_as_events
        # Texts are small; how long the oldest has waited is part of the session's lag
        # (`lag`), whose limit bounds this queue.
        self._texts: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        self._since: deque[float] = deque()  # when each text waiting was said

    def say(self, text: str, elapsed_ms: int) -> None:
        self._texts.put_nowait((text, elapsed_ms))
        self._since.append(time.monotonic())

    def lag(self) -> float:
        """How long the oldest text not yet spoken has waited, in seconds."""
        return time.monotonic() - self._since[0] if self._since else 0.0

    def finish(self) -> None:
        """`run` returns once everything said so far is spoken."""
        self._texts.put_nowait(None)

    async def run(self) -> None:
        while (said := await self._texts.get()) is not None:
            text, elapsed = said
            self._since.popleft()
            with self._errors_as_events("speech"):
                pending = b""
                for part in split_lead(text):
                    if part:
                        pending = await self._speak(part, elapsed, pending)
                if pending:
                    self._send(base64.b64encode(pending).decode(), elapsed, OUTPUT_RATE)

    async def _speak(self, text: str, elapsed: int, pending: bytes) -> bytes:
        """Speaks `text` in whole frames after `pending`; returns what is left of a frame."""
        request = SpeechRequest(model=self._model, input=text, voice=self._voice(),
                                response_format="pcm")
        ctx = RequestContext(f"{self._session_id}-speak-{time.monotonic_ns()}",
                             is_disconnected=self._session_gone)
        stream = await self._tts.open(request, ctx)
        try:
            async for chunk in stream.chunks:
                pending += chunk
                whole = len(pending) - len(pending) % FRAME_BYTES
                for at in range(0, whole, FRAME_BYTES):
                    frame = pending[at:at + FRAME_BYTES]
                    self._send(base64.b64encode(frame).decode(), elapsed, OUTPUT_RATE)
                pending = pending[whole:]
        finally:
            await stream.chunks.aclose()  # type: ignore[attr-defined]
        return pending
