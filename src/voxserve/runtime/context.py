"""What the runtime may know about the caller it is working for, whichever door it came in by.

A door (the HTTP edge, a WebSocket session, the CLI, a cluster replica) makes one
`RequestContext` per unit of work and passes it to the service, which hands it to
`Scheduler.admit`: the deadline counts from `started`, `is_disconnected` lets a waiter whose
caller left be dropped before it reaches the engine, and the scheduler writes back which model
served it and how long it queued (the access log reads them). A caller that passes none gets a
context that starts now and never disconnects.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


async def _never_disconnected() -> bool:
    return False


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


@dataclass
class RequestContext:
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    is_disconnected: Callable[[], Awaitable[bool]] = _never_disconnected
    # Filled in by the scheduler.
    model: str | None = None
    queue_seconds: float | None = None
