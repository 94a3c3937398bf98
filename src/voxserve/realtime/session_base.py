"""What every live session does the same way, whatever its kind: client events taken in order
off the event loop, bounded queues, supervised workers, and one way to end.

* **Inbox.** `receive(text)` only queues the client's message (bounded by
  `SessionLimits.max_inbox_bytes`); the *ingest* worker handles messages one at a time, in
  order. A large message is parsed in a thread, and an append's audio is decoded, resampled
  and screened by the VAD in a thread (`segmenter.Segmenter.push`), so neither a 15 MiB
  append nor a long one blocks the event loop that serves every other session.
* **Outbox** (`outbox.Outbox`), bounded by `max_outbox_bytes`: a client that stops reading
  ends its session instead of growing the server.
* **Backlog.** How far the text lags the audio (`_lag`): past `max_backlog_seconds` the client
  is told once (`server_overloaded`, nothing dropped); past `backlog_limit_seconds`, or with a
  full inbox or outbox, the session ends with `session_backlog_exceeded` and close code 1008
  (a policy close: the SDK does not reconnect into the same overload).
* **Workers.** Each worker is watched: one that dies is logged at ERROR with the session id
  and ends the session with a `server_error` event and close code 1011. A failing client
  event is an `error` event and the session goes on.

A session ends by `_end(code, error)`; the edge closes the socket with that code. Subclasses
(dataclasses too) set `CLIENT_EVENTS`, make `self.segmenter`, and implement `session_object`,
`_handlers`, `_segments_pushed`, `_lag` and `_workers_to_start`; their `__post_init__` calls
this one first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from voxserve.errors import InvalidInput, ServiceError, Unavailable, server_error
from voxserve.realtime.events import (
    client_event_id,
    decode_audio_field,
    error_event,
    missing_parameter,
    new_id,
    parse_client_event,
    server_event,
)
from voxserve.realtime.outbox import Outbox
from voxserve.realtime.segmenter import Segmenter, SegmentEvent

log = logging.getLogger("voxserve.realtime")

Handler = Callable[[dict], Awaitable[None] | None]
# How long `close` waits for cancelled workers before cancelling the ones left again.
RECANCEL_SECONDS = 1.0
# A client message longer than this is parsed in a thread (json.loads holds the event loop
# for about 1 ms per 500 KB).
PARSE_IN_THREAD = 256 * 1024
# WebSocket close codes the session ends with (the SDK reconnects after 1011, not after 1000
# or 1008).
NORMAL = 1000
POLICY = 1008
INTERNAL = 1011


@dataclass(frozen=True)
class SessionLimits:
    max_buffer_seconds: float = 600.0  # uncommitted audio
    max_turn_seconds: float = 28.0  # a longer turn is cut at a pause (Whisper reads 30 s)
    partial_interval: float = 0.5  # seconds of new audio between live passes
    max_backlog_seconds: float = 30.0  # text this far behind the audio: the client is told
    backlog_limit_seconds: float = 120.0  # this far behind: the session ends
    max_inbox_bytes: int = 48 * 2**20  # client messages not yet handled (three full appends)
    max_outbox_bytes: int = 16 * 2**20  # server events the client has not read yet
    beam_size: int = 5


def backlog_exceeded(what: str) -> InvalidInput:
    return InvalidInput(
        f"This session was closed because {what}. Send audio no faster than real time and "
        "read the server's events as they come.", code="session_backlog_exceeded",
    )


@dataclass
class SessionBase:
    CLIENT_EVENTS: ClassVar[tuple[str, ...]] = ()  # the client event types it takes
    expires_at: int = field(default=0, kw_only=True)
    id: str = field(default_factory=lambda: new_id("sess"), kw_only=True)

    def __post_init__(self) -> None:
        self._limits: SessionLimits = self.limits  # type: ignore[attr-defined]
        self.outbox = Outbox(self._limits.max_outbox_bytes, on_overflow=self._outbox_overflowed)
        self.segmenter: Segmenter
        self._inbox: deque[str | bytes] = deque()
        self._inbox_bytes = 0
        self._inbox_ready = asyncio.Event()
        self._workers: list[asyncio.Task] = []
        self._closed = False
        self._behind = False

    # -- what a session kind says ------------------------------------------------------

    def session_object(self) -> dict:
        raise NotImplementedError

    def _handlers(self) -> dict[str, Handler]:
        raise NotImplementedError

    def _workers_to_start(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """(task name, coroutine) of each worker beside the ingest worker."""
        raise NotImplementedError

    def _segments_pushed(self, events: list[SegmentEvent]) -> None:
        """What an append's audio held (turns started and ended), in order."""
        raise NotImplementedError

    def _lag(self) -> float:
        """How far behind the audio the session's output is, in seconds."""
        raise NotImplementedError

    def _refuse_append(self) -> None:
        """Raise the error that refuses an append now (by default none does)."""

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._send("session.created", session=self.session_object())
        workers = [(f"ingest-{self.id}", self._ingest()), *self._workers_to_start()]
        self._workers = [asyncio.create_task(work, name=name) for name, work in workers]
        for task in self._workers:
            task.add_done_callback(self._worker_ended)

    @property
    def ended(self) -> asyncio.Event:
        """Set once the session has said its last word (`outbox.close_code` says how)."""
        return self.outbox.ended

    def _end(self, code: int, error: ServiceError | None = None) -> None:
        """The session ends: an `error` event first when `error`, then close `code`."""
        reason = (error.code or error.type) if error is not None else ""
        if error is not None:
            self.outbox.put_last(error_event(error), code, reason)
        else:
            self.outbox.close(code, reason)

    def _worker_ended(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._closed:  # while closing: nobody left to tell
            log.debug("realtime worker %s ended with an error while closing (session %s)",
                      task.get_name(), self.id, exc_info=error)
        elif error is not None:
            log.error("realtime worker %s failed (session %s)", task.get_name(), self.id,
                      exc_info=error)
            self._end(INTERNAL, error if isinstance(error, ServiceError) else server_error())

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

    async def _gone(self) -> bool:
        """The disconnect probe of every pass: a closed session's waiters are dropped."""
        return self._closed

    # -- client events -----------------------------------------------------------------

    def receive(self, text: str | bytes) -> None:
        """Queue one client message (the ingest worker handles it)."""
        limit = self._limits.max_inbox_bytes
        if self._inbox_bytes + len(text) > limit:
            self._end(POLICY, backlog_exceeded(
                f"its client sent {limit / 2**20:g} MiB of events faster than the server "
                "could take them in"))
            return
        self._inbox.append(text)
        self._inbox_bytes += len(text)
        self._inbox_ready.set()

    async def _ingest(self) -> None:
        while True:
            while not self._inbox:
                self._inbox_ready.clear()
                await self._inbox_ready.wait()
            text = self._inbox.popleft()
            self._inbox_bytes -= len(text)
            await self._handle(text)

    async def _handle(self, text: str | bytes) -> None:
        """One client event; its error becomes an `error` event and the session goes on."""
        try:
            if len(text) > PARSE_IN_THREAD:
                event = await asyncio.to_thread(parse_client_event, text, self.CLIENT_EVENTS)
            else:
                event = parse_client_event(text, self.CLIENT_EVENTS)
        except ServiceError as error:
            small = len(text) <= PARSE_IN_THREAD  # a huge one is not parsed again for its id
            self.outbox.put_nowait(error_event(error, client_event_id(text) if small else None))
            return
        try:
            result = self._handlers()[event["type"]](event)
            if result is not None:
                await result
        except ServiceError as error:
            self.outbox.put_nowait(error_event(error, event.get("event_id")))
        except Exception:  # a bug must not end the session: say so and go on
            log.exception("realtime client event %s failed (session %s)", event["type"],
                          self.id)
            self.outbox.put_nowait(error_event(server_error(), event.get("event_id")))

    @staticmethod
    def _session_field(event: dict) -> object:
        """A `session.update`'s session object (OpenAI's error when it has none)."""
        if "session" not in event:
            raise missing_parameter("session")
        return event["session"]

    async def _append(self, event: dict) -> None:
        """An append's audio decoded, resampled and screened in a thread; what it held is
        handed to the session kind."""
        self._refuse_append()
        segmenter = self.segmenter

        def push() -> list[SegmentEvent]:
            return segmenter.push(decode_audio_field(event))

        events = await asyncio.to_thread(push)
        self._segments_pushed(events)
        self._check_backlog()

    # -- falling behind ----------------------------------------------------------------

    def _check_backlog(self) -> None:
        """Past `max_backlog_seconds` of lag the client is told once (until the lag has
        halved), nothing dropped; past `backlog_limit_seconds` the session ends."""
        limits = self._limits
        lag = self._lag()
        if lag > limits.backlog_limit_seconds:
            self._end(POLICY, backlog_exceeded(
                f"its output fell more than {limits.backlog_limit_seconds:g} seconds behind "
                "its audio"))
        elif lag > limits.max_backlog_seconds and not self._behind:
            self._behind = True
            self.outbox.put_nowait(error_event(Unavailable(
                f"The server cannot keep up with this session: its output is {lag:.0f} "
                "seconds behind the audio. It will follow, late; send audio no faster than "
                "real time, or use fewer sessions or a smaller model.",
                code="server_overloaded")))
        elif lag <= limits.max_backlog_seconds / 2:
            self._behind = False

    def _outbox_overflowed(self) -> None:
        limit = self._limits.max_outbox_bytes
        self._end(POLICY, backlog_exceeded(
            f"its client left more than {limit / 2**20:g} MiB of events unread"))

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
            log.error("realtime %s failed (session %s)", what, self.id, exc_info=True)
            self.outbox.put_nowait(error_event(server_error()))

    def _send(self, type_: str, **fields: object) -> None:
        self.outbox.put_nowait(server_event(type_, **fields))
