"""The two kinds of live session a hub serves, as the doors need them: what OpenAI refuses at
each kind's connect, what a client secret for it holds, and how it opens a session.

Transport-free: the WebSocket edge hands over the query and headers as mappings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from voxserve.errors import InvalidInput
from voxserve.realtime.events import beta_api_refused, missing_parameter, new_id
from voxserve.realtime.session import TranscriptionSession
from voxserve.realtime.session_config import build_config, default_wire, merge_update
from voxserve.realtime.translation import TranslationSession
from voxserve.realtime.translation_config import (
    TranslationModels,
    build_translation_config,
    merge_translation_update,
    resolve_translation_models,
    unknown_translation_model,
)

if TYPE_CHECKING:
    from voxserve.realtime.hub import RealtimeHub

TRANSCRIPTION = "transcription"
TRANSLATION = "translation"


def _refuse_beta(headers: Mapping[str, str]) -> None:
    if "realtime=v1" in (headers.get("openai-beta") or "").replace(" ", ""):
        raise beta_api_refused()


class TranscriptionKind:
    """`GET /v1/realtime?intent=transcription`: OpenAI's GA transcription sessions."""

    name = TRANSCRIPTION

    def check_connect(self, query: Mapping[str, str], headers: Mapping[str, str]) -> None:
        _refuse_beta(headers)
        if query.get("intent") != "transcription":
            raise InvalidInput(
                "This server offers realtime transcription sessions only: connect to "
                "/v1/realtime?intent=transcription.",
                param="intent", code="unsupported_value",
            )
        if "model" in query:
            raise InvalidInput(
                "You must not provide a model parameter for transcription sessions.",
                param="model", code="invalid_value",
            )

    def open(self, hub: RealtimeHub, query: Mapping[str, str],
             initial: dict | None) -> TranscriptionSession:
        return hub.transcription_session(initial)

    def secret_session(self, hub: RealtimeHub, session: object) -> tuple[dict, dict]:
        wire = merge_update(default_wire(), session or {"type": TRANSCRIPTION})
        config = build_config(wire, hub.resolve)
        # The session object as the socket will show it, less what only a live session has.
        shown = {"id": new_id("sess"), "object": "realtime.transcription_session",
                 "expires_at": 0, **config.wire()}
        return wire, shown


class TranslationKind:
    """`GET /v1/realtime/translations?model=<id>`: speech in, English text and speech out."""

    name = TRANSLATION

    def check_connect(self, query: Mapping[str, str], headers: Mapping[str, str]) -> None:
        _refuse_beta(headers)

    def open(self, hub: RealtimeHub, query: Mapping[str, str],
             initial: dict | None) -> TranslationSession:
        initial = initial or {}
        models = self._models(hub, query.get("model") or initial.get("model"))
        if hub.tts is None:  # not a "try again later": nothing will change
            raise InvalidInput("This server serves no speech model: live translation needs "
                               "one.", param="model", code="model_not_available")
        # InvalidInput when the secret's session no longer checks out
        return TranslationSession(
            hub.passes, hub.tts, models, hub.resolve, hub.limits,
            hub.settings.realtime_translation_voice, initial, expires_at=hub.expires_at(),
        )

    def secret_session(self, hub: RealtimeHub, session: object) -> tuple[dict, dict]:
        if not isinstance(session, dict):
            raise missing_parameter("session")
        name = session.get("model")
        if not isinstance(name, str) or not name:
            raise missing_parameter("session.model")
        models = self._models(hub, name)
        wire = merge_translation_update({"type": TRANSLATION}, session)
        config = build_translation_config(wire, hub.settings.realtime_translation_voice,
                                          hub.resolve)
        shown = {"id": "", "object": "realtime.translation_session", "type": TRANSLATION,
                 "model": models.name, "expires_at": 0, **config.wire()}
        return wire, shown

    @staticmethod
    def _models(hub: RealtimeHub, name: str | None) -> TranslationModels:
        if not name:
            raise InvalidInput(
                "Missing required parameter: 'model'. Translation sessions need a model query "
                "parameter.", param="model", code="missing_required_parameter",
            )
        models = resolve_translation_models(hub.catalog, hub.settings, name)
        if models is None:
            raise unknown_translation_model(name)
        return models
