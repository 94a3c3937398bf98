"""What the runtime may know about the HTTP request it is working for.

The API edge sets one `RequestContext` per request (in a context variable, so the services
between the edge and the scheduler need not pass it along); the scheduler reads when the
request arrived (its deadline counts from then) and whether its client is still there, and
writes back which model served it and how long it queued, for the access log.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field


async def _never_disconnected() -> bool:
    return False


@dataclass
class RequestContext:
    request_id: str
    started: float = field(default_factory=time.monotonic)
    is_disconnected: Callable[[], Awaitable[bool]] = _never_disconnected
    # Filled in by the scheduler.
    model: str | None = None
    queue_seconds: float | None = None


current_request: ContextVar[RequestContext | None] = ContextVar(
    "voxserve_request", default=None
)
