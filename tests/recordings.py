"""Reading OpenAI's recorded responses (tests/fixtures/openai)."""

from __future__ import annotations

import json

from conftest import OPENAI, RECORDINGS


def recorded_entry(name: str, index: int = 0) -> dict:
    return json.loads((RECORDINGS / f"{name}.json").read_text())["Entries"][index]


def recorded_body(name: str, index: int = 0) -> bytes:
    """The response body as bytes: text bodies verbatim, JSON bodies compact as on the wire."""
    body = recorded_entry(name, index)["ResponseBody"]
    if isinstance(body, list):
        return "".join(body).encode()
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def french_translation() -> dict:
    return json.loads((OPENAI / "translation_french.json").read_text())
