"""Prometheus metrics for one app: requests, queues, batches, audio, latency, loaded models.

Every app owns its own `CollectorRegistry` instead of the process-wide default, because tests
(and embedders) create several apps in one process and a shared registry would refuse the
second set of metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: from a 0.1 s clip on a GPU to a long file on a small CPU.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Processing seconds per audio second; < 1 is faster than real time.
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "voxserve_requests", "HTTP requests by route, model and status.",
            ["route", "model", "status"], registry=r,
        )
        self.request_latency = Histogram(
            "voxserve_request_duration_seconds", "HTTP request latency, first byte to last.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "voxserve_queue_depth", "Requests waiting for a slot, per model.", ["model"],
            registry=r,
        )
        self.slots_busy = Gauge(
            "voxserve_slots_busy", "Slots running a request, per model.", ["model"], registry=r,
        )
        self.queue_wait = Histogram(
            "voxserve_queue_wait_seconds", "Time from arrival in the queue to a granted slot.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.admitted = Counter(
            "voxserve_admitted", "Requests granted a slot and handed to the engine.", ["model"],
            registry=r,
        )
        self.rejected = Counter(
            "voxserve_rejected", "Requests refused (429) because the queue was full.", ["model"],
            registry=r,
        )
        self.dropped = Counter(
            "voxserve_dropped",
            "Requests abandoned before or during the engine run, by reason "
            "(disconnected, deadline).",
            ["model", "reason"], registry=r,
        )
        self.batch_size = Histogram(
            "voxserve_batch_size", "Engine calls merged into one (encode or generate) per batch.",
            ["model"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.audio_seconds = Counter(
            "voxserve_audio_seconds", "Seconds of audio processed to the end.", ["model"],
            registry=r,
        )
        self.rtf = Histogram(
            "voxserve_real_time_factor", "Engine seconds per audio second of a finished request.",
            ["model"], buckets=RTF_BUCKETS, registry=r,
        )
        self.models_loaded = Gauge(
            "voxserve_model_loaded", "1 while a model is loaded.", ["model", "kind"], registry=r,
        )
        self.model_loads = Counter(
            "voxserve_model_loads", "Model loads.", ["model"], registry=r,
        )
        self.model_unloads = Counter(
            "voxserve_model_unloads", "Model unloads, by reason (ttl, evicted, shutdown).",
            ["model", "reason"], registry=r,
        )
        self.model_load_seconds = Histogram(
            "voxserve_model_load_seconds", "Time to load a model.", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
