"""What realtime sessions share on a server: the session kinds it serves, the one session
limit, the model resolver, the limits every session gets and the ephemeral client secrets.
Transport-free; the WebSocket edge holds one per app.

A *session kind* (`kinds.py`: transcription, translation) says what it refuses at connect,
what a client secret for it holds, and how it opens a session; the hub registers both, and
the edge and the client-secret endpoint look the kind up by name.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from voxserve.config import Settings
from voxserve.diarize.wiring import DIARIZER_ID
from voxserve.errors import Unavailable
from voxserve.realtime.models import labels_speakers, resolve_model
from voxserve.realtime.session import SessionLimits, TranscriptionSession
from voxserve.realtime.session_config import default_wire
from voxserve.runtime.catalog import Catalog, ModelSpec, PublicModel
from voxserve.stt.passes import DecodePasses

if TYPE_CHECKING:
    from voxserve.realtime.session_base import SessionBase
    from voxserve.tts.service import TextToSpeech

SECRET_PREFIX = "ek_"
SECRET_SECONDS = (10, 7200)  # OpenAI's allowed range for expires_after.seconds
SECRET_DEFAULT_SECONDS = 600

S = TypeVar("S")


@dataclass(frozen=True)
class Grant:
    """What an ephemeral secret was made for."""

    kind: str  # the session kind's name
    session: dict  # the wire session


@dataclass(frozen=True)
class _Secret:
    grant: Grant
    expires_at: float  # epoch seconds


class SessionKind(Protocol):
    """One kind of live session (`kinds.py`)."""

    name: str  # as a client secret's session says it ("transcription", "translation")

    def check_connect(self, query: Mapping[str, str], headers: Mapping[str, str]) -> None:
        """Raise what OpenAI refuses at this kind's connect."""

    def open(self, hub: RealtimeHub, query: Mapping[str, str],
             initial: dict | None) -> SessionBase:
        """A new session (not yet counted; `initial`: a client secret's wire session)."""

    def secret_session(self, hub: RealtimeHub, session: object) -> tuple[dict, dict]:
        """A client secret request's session checked: (its wire session, what the response
        shows)."""


class EphemeralSecrets:
    """Short-lived client secrets, each bound to the session configuration it was made for."""

    def __init__(self) -> None:
        self._secrets: dict[str, _Secret] = {}

    def create(self, grant: Grant, seconds: int) -> tuple[str, int]:
        self._expire()
        value = SECRET_PREFIX + secrets.token_urlsafe(24)
        expires_at = int(time.time()) + seconds
        self._secrets[value] = _Secret(grant, expires_at)
        return value, expires_at

    def grant_for(self, value: str) -> Grant | None:
        """What a live secret was made for; None when unknown or expired."""
        self._expire()
        found = None
        # Constant-time comparison against every live secret: no early exit on a match.
        for known, secret in self._secrets.items():
            if secrets.compare_digest(known.encode(), value.encode()):
                found = secret.grant
        return found

    def _expire(self) -> None:
        now = time.time()
        for value in [v for v, s in self._secrets.items() if s.expires_at <= now]:
            del self._secrets[value]


class RealtimeHub:
    def __init__(
        self, settings: Settings, catalog: Catalog, passes: DecodePasses,
        tts: TextToSpeech | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.passes = passes  # where the sessions' decode passes run
        self.tts = tts  # where translation sessions speak (None: no speech served)
        self.secrets = EphemeralSecrets()
        self.active = 0
        self.limits = SessionLimits(
            max_buffer_seconds=settings.realtime_max_buffer_seconds,
            partial_interval=settings.realtime_partial_interval,
            max_backlog_seconds=settings.realtime_max_backlog_seconds,
            backlog_limit_seconds=max(settings.realtime_backlog_limit_seconds,
                                      settings.realtime_max_backlog_seconds),
            beam_size=settings.beam_size,
        )
        self.kinds: dict[str, SessionKind] = {}
        from voxserve.realtime.kinds import TranscriptionKind, TranslationKind

        for kind in (TranscriptionKind(), TranslationKind()):
            self.kinds[kind.name] = kind

    def resolve(self, name: str) -> PublicModel | None:
        """The model a session's `transcription.model` names; None (refused) for a
        diarization model where no diarizer is served, rather than a session that silently
        drops its speakers."""
        model = resolve_model(self.catalog, self.settings, name)
        if model is not None and labels_speakers(model) and self._diarizer() is None:
            return None
        return model

    def open(self, initial: dict | None = None) -> TranscriptionSession:
        """A transcription session in process (the `listen` command)."""
        return self.admit(lambda: self.transcription_session(initial))

    def transcription_session(self, initial: dict | None) -> TranscriptionSession:
        return TranscriptionSession(
            self.passes, self.resolve, self.limits, initial or default_wire(),
            expires_at=self.expires_at(), diarizer=self._diarizer(),
        )

    def _diarizer(self) -> ModelSpec | None:
        """The diarizer of diarization models' sessions; None when none is served."""
        return self.catalog.spec(DIARIZER_ID) if self.passes.diarizes else None

    def admit(self, make: Callable[[], S]) -> S:
        """A new session of any kind, counted against the one session limit (released with
        `release`); raises Unavailable when the server has its maximum open."""
        limit = self.settings.realtime_max_sessions
        if self.active >= limit:
            raise Unavailable(
                f"This server already has its maximum of {limit} realtime sessions open. "
                "Try again when one has ended.",
                code="session_limit_reached",
            )
        session = make()
        self.active += 1
        return session

    def expires_at(self) -> int:
        return int(time.time() + self.settings.realtime_max_session_seconds)

    def release(self) -> None:
        self.active -= 1
