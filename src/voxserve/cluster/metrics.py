"""One Prometheus exposition for the cluster: the ingress's own metrics and each model
replica's, told apart by `deployment` and `replica` labels (families merged by name, as the
text format wants each family once)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def merge_expositions(parts: Iterable[tuple[dict[str, str], bytes]]) -> bytes:
    """`parts`: (labels to add, exposition) pairs; returns one exposition."""
    families: dict[str, Metric] = {}
    for labels, text in parts:
        for family in text_string_to_metric_families(text.decode()):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                merged.samples.append(
                    Sample(sample.name, {**sample.labels, **labels}, sample.value,
                           sample.timestamp, sample.exemplar)
                )

    class _Merged:
        def collect(self) -> Iterable[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())  # type: ignore[arg-type]
    return generate_latest(registry)
