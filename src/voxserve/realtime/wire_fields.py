"""Checks both session kinds make of a wire session's fields, with OpenAI's wording: an object
where one is expected, no unknown keys, a value among the supported ones, and the
`noise_reduction` object they share."""

from __future__ import annotations

from voxserve.errors import InvalidInput
from voxserve.realtime.events import wrong_type

NOISE_REDUCTION_TYPES = ("near_field", "far_field")


def as_object(value: object, param: str) -> dict:
    if not isinstance(value, dict):
        raise wrong_type(param, "an object", value)
    return value


def only_known(obj: dict, where: str, allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            raise InvalidInput(f"Unknown parameter: '{where}.{key}'.", param=f"{where}.{key}",
                               code="unknown_parameter")


def invalid_value(param: str, value: object, supported: tuple) -> InvalidInput:
    shown = ", ".join(f"'{s}'" for s in supported)
    return InvalidInput(f"Invalid value: '{value}'. Supported values are: {shown}.",
                        param=param, code="invalid_value")


def noise_reduction(value: object) -> dict | None:
    if value is None:
        return None
    value = as_object(value, "session.audio.input.noise_reduction")
    only_known(value, "session.audio.input.noise_reduction", ("type", "strength"))
    kind = value.get("type", "near_field")
    if kind not in NOISE_REDUCTION_TYPES:
        raise invalid_value("session.audio.input.noise_reduction.type", kind, NOISE_REDUCTION_TYPES)
    strength = value.get("strength", 1)
    if not isinstance(strength, (int, float)) or isinstance(strength, bool):
        raise wrong_type("session.audio.input.noise_reduction.strength", "a number", strength)
    return {"type": kind, "strength": strength}
