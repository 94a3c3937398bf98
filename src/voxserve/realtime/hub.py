"""What realtime sessions share on a server: the session limit, the model resolver and the
ephemeral client secrets. Transport-free; the WebSocket edge holds one per app."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from voxserve.config import Settings
from voxserve.diarize.wiring import DIARIZER_ID
from voxserve.errors import Unavailable
from voxserve.realtime.events import new_id
from voxserve.realtime.models import resolve_model
from voxserve.realtime.session import SessionLimits, TranscriptionSession
from voxserve.realtime.session_config import build_config, default_wire, merge_update
from voxserve.realtime.speakers import SessionSpeakers
from voxserve.runtime.catalog import Catalog, PublicModel
from voxserve.runtime.pool import ModelPool
from voxserve.stt.passes import DecodePasses

SECRET_PREFIX = "ek_"
SECRET_SECONDS = (10, 7200)  # OpenAI's allowed range for expires_after.seconds
SECRET_DEFAULT_SECONDS = 600

S = TypeVar("S")


@dataclass(frozen=True)
class _Secret:
    session: dict  # the wire session the secret was made for
    expires_at: float  # epoch seconds


class EphemeralSecrets:
    """Short-lived client secrets, each bound to the session configuration it was made for."""

    def __init__(self) -> None:
        self._secrets: dict[str, _Secret] = {}

    def create(self, session: dict, seconds: int) -> tuple[str, int]:
        self._expire()
        value = SECRET_PREFIX + secrets.token_urlsafe(24)
        expires_at = int(time.time()) + seconds
        self._secrets[value] = _Secret(session, expires_at)
        return value, expires_at

    def session_for(self, value: str) -> dict | None:
        """The session a live secret was made for; None when unknown or expired."""
        self._expire()
        found = None
        # Constant-time comparison against every live secret: no early exit on a match.
        for known, secret in self._secrets.items():
            if secrets.compare_digest(known.encode(), value.encode()):
                found = secret.session
        return found

    def _expire(self) -> None:
        now = time.time()
        for value in [v for v, s in self._secrets.items() if s.expires_at <= now]:
            del self._secrets[value]


class RealtimeHub:
    def __init__(
        self, settings: Settings, catalog: Catalog, passes: DecodePasses,
        pool: ModelPool | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.passes = passes  # where the sessions' decode passes run
        self._pool = pool  # for the diarizer of diarization models' sessions
        self.secrets = EphemeralSecrets()
        self.active = 0
        self.limits = SessionLimits(
            max_buffer_seconds=settings.realtime_max_buffer_seconds,
            partial_interval=settings.realtime_partial_interval,
            max_backlog_seconds=settings.realtime_max_backlog_seconds,
            beam_size=settings.beam_size,
        )

    def resolve(self, name: str) -> PublicModel | None:
        return resolve_model(self.catalog, self.settings, name)

    def check_session(self, session: object) -> dict:
        """A client's session object (from client_secrets) merged over the defaults and
        checked; returns the wire session."""
        wire = merge_update(default_wire(), session)
        build_config(wire, self.resolve)
        return wire

    def preview(self, wire: dict) -> dict:
        """The session object a client secret's session will have (with its own id)."""
        config = build_config(wire, self.resolve)
        return {"id": new_id("sess"), "object": "realtime.transcription_session",
                "expires_at": 0, **config.wire()}

    def open(self, initial: dict | None = None) -> TranscriptionSession:
        return self.admit(lambda: TranscriptionSession(
            self.passes, self.resolve, self.limits, initial or default_wire(),
            expires_at=self.expires_at(), new_speakers=self._speaker_tracker(),
        ))

    def _speaker_tracker(self) -> Callable[[], SessionSpeakers] | None:
        """What makes a session's speaker tracker; None when no diarizer is served."""
        diarizer = self.catalog.spec(DIARIZER_ID)
        pool = self._pool
        if pool is None or diarizer is None:
            return None
        return lambda: SessionSpeakers(pool, diarizer)

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
