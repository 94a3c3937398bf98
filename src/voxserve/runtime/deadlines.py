"""Awaiting something until a deadline without ever swallowing the caller's cancellation.

`asyncio.wait_for` before Python 3.12 returns the result when the awaited future completes in
the same loop iteration as the caller is cancelled: the cancellation is lost and the caller
goes on as if nothing happened (CPython gh-86296). A realtime session's worker that lost its
cancellation that way took the next phrase and then waited for more forever, so the session
was never released (a fresh-clone CI run hung 300 s on it). `wait_until` cancels what it
waits for and re-raises the cancellation, whatever the timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(awaitable: Awaitable[T], deadline: float) -> T:
    """The result of `awaitable`, or `asyncio.TimeoutError` once `deadline`
    (time.monotonic() seconds) has passed; either way it no longer runs after a timeout or a
    cancellation of the caller (wrap it in `asyncio.shield` to keep it)."""
    future = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait({future}, timeout=max(0.0, deadline - time.monotonic()))
    except asyncio.CancelledError:
        future.cancel()
        raise
    if not future.done():
        future.cancel()
        raise asyncio.TimeoutError
    return future.result()
