"""What can go wrong, said without any transport.

The core (audio, stt, tts, diarize, runtime, formats) raises these; only the doors translate
them: `api/errors.py` into OpenAI's HTTP envelope with its status and headers, a WebSocket
session into a realtime `error` event, the CLI into a message and an exit code. OpenAI's
wording is kept here as data (`message`, `type`, `param`, `code`), because every door shows
the same words; what a status code or a header is, only a door knows.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A failure a client can see. Subclasses say what kind of failure it is."""

    def __init__(
        self,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        # Keys OpenAI puts beside "error" in some bodies (e.g. `usage` on a bad language).
        self.extra = extra or {}

    def envelope(self) -> dict:
        """OpenAI's error object, `{"error": {...}}` plus any extra keys."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            },
            **self.extra,
        }

    def __reduce__(self):  # keeps keyword-only fields across pickling (Ray, processes)
        return (_rebuild, (type(self), self.message, self.__dict__))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


def _rebuild(cls: type[ServiceError], message: str, state: dict) -> ServiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidInput(ServiceError):
    """The request or its audio is wrong: a bad field, an unsupported option for this model,
    undecodable or too short audio."""


class Unauthorized(ServiceError):
    """No key, or a key the server does not accept."""


class NotFound(ServiceError):
    """The named model (or other object) does not exist here."""


class TooLarge(ServiceError):
    """The upload is bigger than the server takes."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("type", "server_error")
        super().__init__(message, **kwargs)


class Busy(ServiceError):
    """Too much is already waiting; worth retrying after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int, **kwargs: Any) -> None:
        kwargs.setdefault("type", "requests")
        kwargs.setdefault("code", "rate_limit_exceeded")
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class TimedOut(ServiceError):
    """The deadline passed. `queued`: it passed while waiting for a slot (so a retry may well
    succeed), rather than while the model was working (a retry would repeat the same work)."""

    def __init__(self, message: str, *, queued: bool, **kwargs: Any) -> None:
        kwargs.setdefault("type", "server_error")
        kwargs.setdefault("code", "timeout")
        super().__init__(message, **kwargs)
        self.queued = queued


class ClientGone(ServiceError):
    """The client left before its work began; nobody reads this, logs and metrics do."""


class Unavailable(ServiceError):
    """The server cannot serve this now (not ready, a replica died)."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("type", "server_error")
        super().__init__(message, **kwargs)


class Internal(ServiceError):
    """Something broke on the server's side (a model that cannot load, a bug)."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("type", "server_error")
        super().__init__(message, **kwargs)


def model_not_found(model: str) -> NotFound:
    return NotFound(f"The model '{model}' does not exist", param="model", code="model_not_found")


def invalid_file_format() -> InvalidInput:
    return InvalidInput(
        "Invalid file format. Supported formats: "
        "['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']"
    )


def audio_too_short() -> InvalidInput:
    return InvalidInput(
        "Audio file is too short. Minimum audio length is 0.1 seconds.",
        param="file",
        code="audio_too_short",
    )


def upload_too_large(limit: int, read: int) -> TooLarge:
    return TooLarge(f"Maximum content size limit ({limit}) exceeded ({read} bytes read)")


def number_out_of_range(param: str, value: float, low: float, high: float) -> InvalidInput:
    """OpenAI's generic wording for numbers outside their range."""
    shown = _plain_number(value)
    if value > high:
        return InvalidInput(
            f"Invalid '{param}': decimal above maximum value. "
            f"Expected a value <= {_plain_number(high)}, but got {shown} instead.",
            param=param,
            code="decimal_above_max_value",
        )
    return InvalidInput(
        f"Invalid '{param}': decimal below minimum value. "
        f"Expected a value >= {_plain_number(low)}, but got {shown} instead.",
        param=param,
        code="decimal_below_min_value",
    )


def server_error() -> Internal:
    return Internal("The server had an error while processing your request. Sorry about that!")


def server_busy(model_id: str, queued: int, retry_after: int) -> Busy:
    return Busy(
        f"The server is busy: {queued} requests are queued for model '{model_id}'. "
        f"Please retry after {retry_after}s.",
        retry_after=retry_after,
    )


def deadline_exceeded(timeout: float, queued: bool) -> TimedOut:
    where = "waiting in the queue" if queued else "while the model was working"
    return TimedOut(
        f"The request did not finish within the server's limit of {timeout:g} seconds "
        f"(it ran out {where}).",
        queued=queued,
    )


def client_closed() -> ClientGone:
    return ClientGone("The client closed the request.")


def _plain_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
