"""Calls from the ingress to a model deployment: unary or streamed, with the cluster's promises.

- Errors cross intact (`faults.to_service_error`): the HTTP edge renders them as on one machine.
- A call whose replica died before it sent anything is made again (the router picks a live
  replica, or waits for Ray to restart one), up to `retries` times; after the first item has
  been passed on, the client gets the 503 instead (its SDK retries it), never a mix of two
  replicas' results.
- A caller that stops listening (the client left) cancels the call on the replica: a stream
  when its consumer closes it, a unary call when the caller's task is cancelled or its
  context's client-gone probe says the client left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from ray.serve.handle import DeploymentHandle

from voxserve.cluster.faults import replica_lost, to_service_error
from voxserve.errors import ClientGone, client_closed
from voxserve.runtime.context import RequestContext

log = logging.getLogger("voxserve.cluster")

# How often a unary call asks whether its caller is still there (the HTTP edge's probe reads
# a message already received, without waiting; a live session's says whether it has ended).
PROBE_SECONDS = 0.5


async def _settle(response: Any, ctx: RequestContext | None) -> Any:
    """The response's result, or `ClientGone` as soon as the caller's probe says it left
    (the caller then cancels the call on the replica)."""
    if ctx is None:
        return await response

    async def result() -> Any:
        return await response

    waiting = asyncio.ensure_future(result())
    try:
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=PROBE_SECONDS)
            if done:
                return waiting.result()
            if await ctx.is_disconnected():
                raise client_closed()
    finally:
        if not waiting.done():
            waiting.cancel()
            with suppress(BaseException):
                await waiting


class RemoteModel:
    """One model deployment, as the ingress calls it."""

    def __init__(self, model_id: str, handle: DeploymentHandle, retries: int) -> None:
        self.model_id = model_id
        self._handle = handle
        self._retries = retries
        # Calls under way, for /health: counted here because the replicas' own reports come
        # through Ray's router, which may not reach a busy replica.
        self.in_flight = 0

    @contextmanager
    def _counted(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def call(self, method: str, *args: Any, ctx: RequestContext | None = None) -> Any:
        """A unary call. With the caller's `ctx`, its client-gone probe is asked every
        `PROBE_SECONDS` while the replica works: a caller that left cancels the call there
        (Serve cancels the replica's task: a queued request leaves its lane, a running one's
        engine stops at its next step), and gets `ClientGone`."""
        with self._counted():
            for attempt in range(self._retries + 1):
                response = getattr(self._handle, method).remote(*args)
                try:
                    return await _settle(response, ctx)
                except (asyncio.CancelledError, ClientGone):
                    response.cancel()
                    raise
                except Exception as exc:
                    if replica_lost(exc) and attempt < self._retries:
                        log.warning(
                            "%s.%s: replica lost, retrying (%s)", self.model_id, method, exc
                        )
                        continue
                    raise to_service_error(exc, self.model_id) from None
        raise AssertionError("unreachable")

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        with self._counted():  # in the generator's own body: closing it ends the count
            handle = self._handle.options(stream=True)
            for attempt in range(self._retries + 1):
                responses = getattr(handle, method).remote(*args)
                received = False
                finished = False
                try:
                    async for item in responses:
                        received = True
                        yield item
                    finished = True
                    return
                except (asyncio.CancelledError, GeneratorExit):
                    raise
                except Exception as exc:
                    finished = True
                    if not received and replica_lost(exc) and attempt < self._retries:
                        log.warning(
                            "%s.%s: replica lost, retrying (%s)", self.model_id, method, exc
                        )
                        continue
                    raise to_service_error(exc, self.model_id) from None
                finally:
                    if not finished:  # the consumer left: stop the work on the replica
                        responses.cancel()
