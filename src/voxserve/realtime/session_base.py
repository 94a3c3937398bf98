"""What every realtime session kind does the same way: its outbox, its workers, client events
dispatched to handlers, and the alarm that tells a client the server has fallen behind.

`TranscriptionSession` and `TranslationSession` derive from `SessionBase`; the WebSocket edge
only needs what is here (`start`, `receive`, `outbox`, `close`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE
from voxserve.audio.vad import StreamingVad
from voxserve.errors import InvalidInput, ServiceError, Unavailable, server_error
from voxserve.realtime.audio_in import AudioInput
from voxserve.realtime.buffer import SampleBuffer
from voxserve.realtime.events import (
    client_event_id,
    decode_audio_field,
    error_event,
    missing_parameter,
    new_id,
    parse_client_event,
    server_event,
)

log = logging.getLogger("voxserve.realtime")

Handler = Callable[[dict], None]
# How long `close` waits for cancelled workers before cancelling the ones left again.
RECANCEL_SECONDS = 1.0


@dataclass
class SessionBase:
    """Subclasses (dataclasses too) set `CLIENT_EVENTS` and `_audio` (the input format), and
    implement `session_object`, `_handlers` and `_workers_to_start`; their `__post_init__`
    calls this one first."""

    CLIENT_EVENTS = ()  # the client event types the session takes
    expires_at: int = field(default=0, kw_only=True)
    id: str = field(default_factory=lambda: new_id("sess"), kw_only=True)

    def __post_init__(self) -> None:
        # A `None` in the outbox ends the connection (the edge stops writing).
        self.outbox: asyncio.Queue[dict | None] = asyncio.Queue()
        self._workers: list[asyncio.Task] = []
        self._closed = False
        self._behind = False
        self._audio: AudioInput
        self._buffer = SampleBuffer()  # addressed by sample since the session began
        self._vad = StreamingVad()

    # -- what a session kind says ------------------------------------------------------

    def session_object(self) -> dict:
        raise NotImplementedError

    def _handlers(self) -> dict[str, Handler]:
        raise NotImplementedError

    def _workers_to_start(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """(task name, coroutine) of each worker, started with the session."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._send("session.created", session=self.session_object())
        self._workers = [asyncio.create_task(work, name=name)
                         for name, work in self._workers_to_start()]

    async def close(self) -> None:
        """Stop the workers (the edge calls this however the session ended); a pass in
        flight frees its slot on exit."""
        self._closed = True
        pending = {task for task in self._workers if not task.done()}
        while pending:
            # Cancelled again until it stops: a cancellation can still be lost in code we do
            # not own (asyncio.wait_for before 3.12, see runtime/deadlines.py), and a worker
            # that goes on would wait for input forever, its session never released.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
        for task in self._workers:
            if not task.cancelled() and task.exception() is not None:
                log.debug("realtime worker %s ended with an error", task.get_name(),
                          exc_info=task.exception())

    async def _gone(self) -> bool:
        """The disconnect probe of every pass: a closed session's waiters are dropped."""
        return self._closed

    # -- client events -----------------------------------------------------------------

    def receive(self, text: str | bytes) -> None:
        """Handle one client event; any error becomes an `error` event and the session
        carries on."""
        try:
            event = parse_client_event(text, self.CLIENT_EVENTS)
            self._handlers()[event["type"]](event)
        except ServiceError as error:
            self.outbox.put_nowait(error_event(error, client_event_id(text)))
        except Exception:  # a bug must not end the session: say so and go on
            log.exception("realtime client event failed (session %s)", self.id)
            self.outbox.put_nowait(error_event(server_error(), client_event_id(text)))

    @staticmethod
    def _session_field(event: dict) -> object:
        """A `session.update`'s session object (OpenAI's error when it has none)."""
        if "session" not in event:
            raise missing_parameter("session")
        return event["session"]

    def _take_audio(self, event: dict, limit_seconds: float, full: str) -> np.ndarray:
        """An append's audio decoded, resampled and added to the buffer; an append that would
        take the buffer past `limit_seconds` is refused with the message `full`."""
        samples = self._audio.push(decode_audio_field(event))
        if len(self._buffer) + samples.size > limit_seconds * SAMPLE_RATE:
            raise InvalidInput(full, param="audio", code="input_audio_buffer_full")
        self._buffer.append(samples)
        return samples

    # -- falling behind ----------------------------------------------------------------

    def _report_backlog(self, lag: float, limit: float, message: str) -> None:
        """Past `limit` seconds of lag the client is told once, with `message` (until the lag
        has halved); nothing is dropped."""
        if lag > limit and not self._behind:
            self._behind = True
            self.outbox.put_nowait(error_event(Unavailable(message, code="server_overloaded")))
        elif lag <= limit / 2:
            self._behind = False

    # -- events ------------------------------------------------------------------------

    @contextmanager
    def _errors_as_events(self, what: str) -> Iterator[None]:
        """A worker's step whose failure is the client's to hear about, as an `error`
        event, while the worker goes on with the next step."""
        try:
            yield
        except ServiceError as error:
            self.outbox.put_nowait(error_event(error))
        except Exception:
            log.exception("realtime %s failed (session %s)", what, self.id)
            self.outbox.put_nowait(error_event(server_error()))

    def _send(self, type_: str, **fields: object) -> None:
        self.outbox.put_nowait(server_event(type_, **fields))
