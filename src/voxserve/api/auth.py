"""Optional API keys. With none configured every request is accepted (the OpenAI SDK always
sends some key); with keys, `/v1/*` needs one of them, answered with OpenAI's 401 texts."""

from __future__ import annotations

import base64
import hmac

from fastapi import Request

from voxserve.errors import Unauthorized

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)


def presented_key(authorization: str | None) -> str | None:
    """The key in a `Bearer` header, or the password of `Basic` auth with a blank username."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password if not user and password else None
    return None


def mask_key(key: str) -> str:
    return f"{key[:8]}***{key[-4:]}" if len(key) > 12 else "***"


def check_key(keys: list[str], key: str | None) -> None:
    """Raises OpenAI's 401 unless `key` is one of `keys` (any key when none are set). Every
    key is compared in full, so the time taken says nothing about which one nearly matched."""
    if not keys:
        return
    if key is None:
        raise Unauthorized(MISSING_KEY)
    matched = False
    for known in keys:
        matched |= hmac.compare_digest(key.encode(), known.encode())
    if not matched:
        raise Unauthorized(
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )


async def require_api_key(request: Request) -> None:
    check_key(request.app.state.settings.api_keys,
              presented_key(request.headers.get("authorization")))
