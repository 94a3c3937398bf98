"""Reading OpenAI's recorded responses (../shared/openai/recordings)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import RECORDINGS, SHARED


def recorded_entry(name: str, index: int = 0) -> dict:
    return json.loads((RECORDINGS / f"{name}.json").read_text())["Entries"][index]


def recorded_body(name: str, index: int = 0) -> bytes:
    """The response body as bytes: text bodies verbatim, JSON bodies compact as on the wire."""
    body = recorded_entry(name, index)["ResponseBody"]
    if isinstance(body, list):
        return "".join(body).encode()
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def french_translation() -> dict:
    return json.loads((SHARED / "openai" / "translation_french.json").read_text())


def shared_available() -> bool:
    return Path(RECORDINGS).is_dir()
