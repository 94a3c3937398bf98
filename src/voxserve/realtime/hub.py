"""What realtime sessions share on a server: the session kinds it serves, the one session
limit, the model resolver, the limits every session gets and the ephemeral client secrets.
Transport-free; the WebSocket edge holds one per app.

A *session kind* (`kinds.py`: transcription, translation) says what it refuses at connect,
what a client secret for it holds, and how it opens a session; the hub registers both, and
the edge and the client-secret endpoint look the kind up by name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from voxserve.config import Settings
from voxserve.diarize.wiring import DIARIZER_ID
from voxserve.errors import InvalidInput, Unavailable
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
# A secret travels in a header or a subprotocol: kept well under servers' header limits.
SECRET_MAX_CHARS = 6000

S = TypeVar("S")


@dataclass(frozen=True)
class Grant:
    """What an ephemeral secret was made for."""

    kind: str  # the session kind's name
    session: dict  # the wire session


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
    """Short-lived client secrets, each bound to the session configuration it was made for.

    Stateless and signed, so that any process holding the same key accepts a secret another
    made (a cluster's ingress replicas: `cluster/deploy.py` generates one key per deployment
    and gives it to every replica): a secret is `ek_` + base64url(zlib(JSON {kind, session,
    exp, nonce})) + `.` + base64url(HMAC-SHA256 of that text under the key). Without a key
    (one process) a random key is drawn per instance. Like the stored secrets before them,
    they cannot be revoked: each is valid until it expires (at most two hours).
    """

    KEY_BYTES = 32

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(self.KEY_BYTES)
        if len(self._key) < 16:
            raise ValueError("an ephemeral secrets key needs at least 16 bytes")

    @classmethod
    def new_key(cls) -> bytes:
        return secrets.token_bytes(cls.KEY_BYTES)

    def create(self, grant: Grant, seconds: int) -> tuple[str, int]:
        expires_at = int(time.time()) + seconds
        payload = json.dumps(
            {"kind": grant.kind, "session": grant.session, "exp": expires_at,
             "nonce": secrets.token_urlsafe(9)},
            separators=(",", ":"),
        ).encode()
        body = _b64(zlib.compress(payload, 9))
        value = f"{SECRET_PREFIX}{body}.{_b64(self._sign(body))}"
        if len(value) > SECRET_MAX_CHARS:
            raise InvalidInput(
                f"This session is too large for a client secret ({len(value)} characters "
                f"once encoded, at most {SECRET_MAX_CHARS}): shorten its "
                "transcription prompt.", param="session", code="invalid_value",
            )
        return value, expires_at

    def grant_for(self, value: str) -> Grant | None:
        """What a valid secret was made for; None when forged, damaged or expired."""
        if not value.startswith(SECRET_PREFIX) or len(value) > SECRET_MAX_CHARS:
            return None
        body, dot, signature = value[len(SECRET_PREFIX):].partition(".")
        if not dot:
            return None
        try:
            given = _unb64(signature)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._sign(body)):
            return None
        try:
            payload = json.loads(zlib.decompress(_unb64(body)))
            kind, session, expires_at = payload["kind"], payload["session"], payload["exp"]
        except (ValueError, zlib.error, KeyError, TypeError):
            return None  # signed by this key, so not expected: a key shared with other code
        if not isinstance(expires_at, int) or expires_at <= time.time():
            return None
        return Grant(kind, session)

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc


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
        """The model a session's `transcription.model` names (None: unknown). A diarization
        model where no live diarizer is served (passes that do not diarize: a cluster with no
        Whisper deployment to run the diarizer on) is refused with an error that says so,
        rather than a session that silently drops its speakers."""
        model = resolve_model(self.catalog, self.settings, name)
        if model is not None and labels_speakers(model) and self._diarizer() is None:
            raise InvalidInput(
                f"Invalid value: '{name}'. This server does not diarize live sessions: "
                "choose a transcription model without speakers, or send the audio to "
                "POST /v1/audio/transcriptions.",
                param="session.audio.input.transcription.model", code="invalid_value",
            )
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
