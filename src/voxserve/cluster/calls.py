"""Calls from the ingress to a model deployment: unary or streamed, with the cluster's promises.

- Errors cross intact (`faults.to_service_error`): the HTTP edge renders them as on one machine.
- A call whose replica died before it sent anything is made again (the router picks a live
  replica, or waits for Ray to restart one), up to `retries` times; after the first item has
  been passed on, the client gets the 503 instead (its SDK retries it), never a mix of two
  replicas' results.
- A caller that stops listening (the client left) cancels the call on the replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from ray.serve.handle import DeploymentHandle

from voxserve.cluster.faults import replica_lost, to_service_error

log = logging.getLogger("voxserve.cluster")


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

    async def call(self, method: str, *args: Any) -> Any:
        with self._counted():
            for attempt in range(self._retries + 1):
                response = getattr(self._handle, method).remote(*args)
                try:
                    return await response
                except asyncio.CancelledError:
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
