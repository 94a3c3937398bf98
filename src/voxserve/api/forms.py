"""Reading OpenAI multipart forms in every wire form clients use (contract §2.1.1-2.1.2).

- lists arrive as repeated `name[]` fields (OpenAI SDKs), repeated plain `name` fields
  (Vercel's AI SDK), or one JSON array string;
- objects arrive as one JSON string (.NET, Go), bracket fields `name[key]` (Python, Node),
  or a bare keyword such as `auto`;
- booleans and numbers arrive as strings.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.datastructures import FormData, UploadFile

from voxserve.errors import InvalidInput, number_out_of_range

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


class FormReader:
    def __init__(self, form: FormData) -> None:
        self._form = form

    def file(self, name: str) -> UploadFile | None:
        value = self._form.get(name)
        return value if isinstance(value, UploadFile) else None

    def text(self, name: str) -> str | None:
        """A scalar field; the last one wins if a client repeats it."""
        values = [v for v in self._form.getlist(name) if isinstance(v, str)]
        return values[-1] if values else None

    def values(self, name: str) -> list[str]:
        raw = [v for key in (f"{name}[]", name) for v in self._form.getlist(key)]
        out: list[str] = []
        for value in raw:
            if not isinstance(value, str):
                raise InvalidInput(f"'{name}' must be text, not a file.", param=name)
            stripped = value.strip()
            if stripped.startswith("["):
                try:
                    out.extend(str(v) for v in json.loads(stripped))
                    continue
                except (ValueError, TypeError):
                    pass
            if stripped:
                out.append(stripped)
        return out

    def boolean(self, name: str) -> bool | None:
        value = self.text(name)
        if value is None:
            return None
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InvalidInput(
            f"Invalid value for '{name}': expected a boolean (true or false), got '{value}'.",
            param=name,
            code="invalid_type",
        )

    def number(self, name: str, low: float, high: float) -> float | None:
        value = self.text(name)
        if value is None or value.strip() == "":
            return None
        return parse_number(name, value, low, high)

    def object(self, name: str) -> str | dict[str, Any] | None:
        """A keyword (`auto`), a JSON object string, or `name[key]` bracket fields."""
        prefix = f"{name}["
        bracketed = {
            key[len(prefix):-1]: value
            for key, value in self._form.multi_items()
            if key.startswith(prefix) and key.endswith("]") and isinstance(value, str)
        }
        if bracketed:
            return bracketed
        value = self.text(name)
        if value is None:
            return None
        stripped = value.strip()
        if stripped.startswith("{"):
            try:
                parsed = json.loads(stripped)
            except ValueError as exc:
                raise InvalidInput(
                    f"Invalid '{name}': not valid JSON ({exc}).", param=name, code="invalid_value"
                ) from exc
            if not isinstance(parsed, dict):
                raise InvalidInput(f"Invalid '{name}': expected an object.", param=name)
            return parsed
        if stripped in ("", "null"):
            return None
        return stripped


def parse_number(name: str, value: Any, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"Invalid '{name}': expected a number, but got '{value}' instead.",
            param=name,
            code="invalid_type",
        ) from None
    if math.isnan(number):
        raise InvalidInput(f"Invalid '{name}': expected a number, but got NaN.", param=name)
    if number < low or number > high:
        raise number_out_of_range(name, number, low, high)
    return number
