"""A session's server events on their way to the socket: in order, bounded, and ended once.

A client that stops reading leaves the socket's writes pending, and every event the session
makes (a translation session's carry audio) would pile up here. The outbox counts what it
holds (each event's size as JSON) and calls `on_overflow` once past `max_bytes`; the session
then ends itself.

`close(code, reason)` ends it: what is already queued is still delivered, nothing put after
is, and `get` returns None once it has run dry. The edge closes the socket with the code.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable


def serialised(event: dict) -> str:
    """The event as it goes on the wire (a few µs for the largest, an audio frame): made once,
    to weigh it here and for the edge to send."""
    return json.dumps(event, separators=(",", ":"))


class Outbox:
    def __init__(self, max_bytes: int, on_overflow: Callable[[], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.on_overflow = on_overflow
        self._events: deque[tuple[dict, str]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.ended = asyncio.Event()  # set by `close`
        self.close_code: int | None = None
        self.close_reason = ""

    def put_nowait(self, event: dict) -> None:
        if self.ended.is_set():
            return  # the session has said its last word
        self._append(event)
        if self._bytes > self.max_bytes and self.on_overflow is not None:
            overflow, self.on_overflow = self.on_overflow, None
            overflow()

    def put_last(self, event: dict, code: int, reason: str) -> None:
        """`event` (past any limit), then the end."""
        if not self.ended.is_set():
            self._append(event)
            self.close(code, reason)

    def close(self, code: int, reason: str = "") -> None:
        if not self.ended.is_set():
            self.close_code, self.close_reason = code, reason
            self.ended.set()
            self._ready.set()

    def _append(self, event: dict) -> None:
        text = serialised(event)
        self._events.append((event, text))
        self._bytes += len(text)
        self._ready.set()

    async def get(self) -> dict | None:
        """The next event; None once closed and drained."""
        return await self._next(0)

    async def get_text(self) -> str | None:
        """The next event as JSON text (what the socket sends); None once closed and
        drained."""
        return await self._next(1)

    async def _next(self, part: int) -> dict | str | None:  # the event, or its text
        while not self._events:
            if self.ended.is_set():
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._pop()[part]

    def get_nowait(self) -> dict | None:
        if not self._events:
            if self.ended.is_set():
                return None
            raise asyncio.QueueEmpty
        return self._pop()[0]

    def _pop(self) -> tuple[dict, str]:
        event, text = self._events.popleft()
        self._bytes -= len(text)
        return event, text

    def empty(self) -> bool:
        return not self._events
