"""Which models the cluster serves, and which deployment serves each public model id."""

from __future__ import annotations

import re

from voxserve.config import Settings
from voxserve.runtime.catalog import Catalog, ModelSpec, PublicModel


def served_models(settings: Settings, catalog: Catalog) -> list[str]:
    """Native ids that get a deployment: `ray.models`, else what the OpenAI names point at."""
    wanted = list(settings.ray.models)
    if not wanted:
        targets = [settings.stt_default_model, *settings.aliases.values()]
        targets += [settings.aliases.get(n, t) for n, t in settings.tts_aliases.items()]
        wanted = [t for t in targets if catalog.spec(t) is not None]
    unknown = [m for m in wanted if catalog.spec(m) is None]
    if unknown:
        raise ValueError(f"VOXSERVE_RAY_MODELS names unknown models: {', '.join(unknown)}")
    return list(dict.fromkeys(wanted))


def serving_model(spec: ModelSpec) -> str:
    """The deployed model a spec runs on: a `<whisper>+diarize` id runs on its Whisper's."""
    return spec.options.get("whisper", spec.id)


def deployment_name(model_id: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_-]", "_", model_id)


class ServedCatalog:
    """The catalog as the ingress shows it: only models with a deployment behind them (so
    `/v1/models` lists what the cluster serves and anything else is OpenAI's 404)."""

    def __init__(self, catalog: Catalog, served: list[str], helpers: tuple[str, ...] = ()
                 ) -> None:
        self._catalog = catalog
        self._served = set(served)
        # Models that run on another model's replicas without being offered on their own
        # (the live sessions' diarizer, on a Whisper's): known by `spec` only.
        self._helpers = set(helpers)

    def _serves(self, spec: ModelSpec) -> bool:
        return serving_model(spec) in self._served

    def resolve(self, name: str) -> PublicModel | None:
        public = self._catalog.resolve(name)
        return public if public is not None and self._serves(public.spec) else None

    def spec(self, native_id: str) -> ModelSpec | None:
        spec = self._catalog.spec(native_id)
        if spec is not None and native_id in self._helpers:
            return spec
        return spec if spec is not None and self._serves(spec) else None

    def public_models(self) -> list[PublicModel]:
        return [m for m in self._catalog.public_models() if self._serves(m.spec)]

    def broken_aliases(self) -> dict[str, str]:
        return self._catalog.broken_aliases()
