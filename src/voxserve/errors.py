"""The error hierarchy. Every failure a client can see is one of these, rendered as OpenAI's
envelope `{"error": {"message", "type", "param", "code"}}` by the API layer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class APIError(Exception):
    message: str
    status: int = 400
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Keys OpenAI puts beside "error" in some bodies (e.g. `usage` on a bad language).
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def envelope(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            },
            **self.extra,
        }


def invalid_value(message: str, param: str | None) -> APIError:
    return APIError(message, param=param, code="invalid_value")


def model_not_found(model: str) -> APIError:
    return APIError(
        f"The model '{model}' does not exist",
        status=404,
        param="model",
        code="model_not_found",
    )


def invalid_file_format() -> APIError:
    return APIError(
        "Invalid file format. Supported formats: "
        "['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']"
    )


def audio_too_short() -> APIError:
    return APIError(
        "Audio file is too short. Minimum audio length is 0.1 seconds.",
        param="file",
        code="audio_too_short",
    )


def upload_too_large(limit: int, read: int) -> APIError:
    return APIError(
        f"Maximum content size limit ({limit}) exceeded ({read} bytes read)",
        status=413,
        type="server_error",
    )


def number_out_of_range(param: str, value: float, low: float, high: float) -> APIError:
    """OpenAI's generic wording for numbers outside their range."""
    shown = _plain_number(value)
    if value > high:
        return APIError(
            f"Invalid '{param}': decimal above maximum value. "
            f"Expected a value <= {_plain_number(high)}, but got {shown} instead.",
            param=param,
            code="decimal_above_max_value",
        )
    return APIError(
        f"Invalid '{param}': decimal below minimum value. "
        f"Expected a value >= {_plain_number(low)}, but got {shown} instead.",
        param=param,
        code="decimal_below_min_value",
    )


def server_error() -> APIError:
    return APIError(
        "The server had an error while processing your request. Sorry about that!",
        status=500,
        type="server_error",
    )


def _plain_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
