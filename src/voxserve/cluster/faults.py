"""How Ray's failures reach a client: as voxserve's own errors (the doors render them).

A replica raises the core's `ServiceError`s (pickled by Ray, wrapped in `RayTaskError`): they
are unwrapped and pass unchanged. Ray's own failures are translated: the router's backpressure
becomes `Busy` (OpenAI's 429 with `Retry-After`), a replica that died or vanished
`Unavailable` (a 503, which the SDK retries), a cancelled call `ClientGone`, anything else
`Internal`.
"""

from __future__ import annotations

import logging
import math

from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors

from voxserve.errors import (
    ServiceError,
    Unavailable,
    client_closed,
    server_busy,
    server_error,
)
from voxserve.runtime.scheduler import MAX_RETRY_AFTER

log = logging.getLogger("voxserve.cluster")

# Failures of the replica, not of the request: another replica (or the restarted one) may well
# serve it, so the ingress retries them while nothing has been sent to the client.
REPLICA_LOST: tuple[type[BaseException], ...] = (
    ray_errors.RayActorError,  # ActorDiedError, ActorUnavailableError are subclasses
    ray_errors.WorkerCrashedError,
    ray_errors.NodeDiedError,
    ray_errors.ObjectLostError,
    serve_errors.ReplicaUnavailableError,
    serve_errors.DeploymentUnavailableError,
)


def unwrap(exc: BaseException) -> BaseException:
    """The exception the replica raised, out of Ray's task-error wrapper."""
    while isinstance(exc, ray_errors.RayTaskError):
        cause = exc.cause
        if cause is None or cause is exc:
            break
        exc = cause
    return exc


def replica_lost(exc: BaseException) -> bool:
    return isinstance(unwrap(exc), REPLICA_LOST)


def to_service_error(exc: BaseException, model_id: str) -> ServiceError:
    """The error a client sees for an exception out of a deployment call."""
    cause = unwrap(exc)
    if isinstance(cause, ServiceError):
        return cause
    if isinstance(cause, serve_errors.BackPressureError):
        wait = cause.retry_after_s or 1
        retry_after = max(1, min(MAX_RETRY_AFTER, math.ceil(wait)))
        return server_busy(model_id, cause.args[0] if cause.args else 0, retry_after)
    if isinstance(cause, REPLICA_LOST):
        log.warning("a replica serving %s was lost: %s", model_id, cause)
        return Unavailable(
            f"The replica serving model '{model_id}' stopped while working on this request. "
            "Please retry.",
            code="replica_unavailable",
        )
    if isinstance(cause, ray_errors.TaskCancelledError):
        return client_closed()
    log.error("call to %s failed: %r", model_id, cause)
    return server_error()
