"""Prometheus metrics of the server, exported at ``/metrics`` (prometheus-client).

Per-stage latency split the way Triton does it (``nv_inference_queue_duration_us`` beside the compute
durations, serving.md sec. 1b), plus what LitServe lacks entirely and Ray reports only per node (sec. 5,
item 8): queue depth, in-flight, batch size, shed / expired / cancelled counts, and the images actually run,
so "an expired request cost no compute" is a counter, not a timing.

With replicas, every worker process writes to prometheus-client's multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor before the workers start), and any worker's
``/metrics`` answers for all of them, the way gunicorn deployments do it. Gauges use ``livesum``: a dead
worker's queue and readiness drop out once the supervisor marks it dead.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: 0.5 ms .. 10 s, dense around a 10-100 ms real-time target.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class ServeMetrics:
    """The server's metrics in their own registry (so several apps can live in one test process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess = multiprocess()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        live = {"multiprocess_mode": "livesum"}
        self.requests = Counter(
            "crosswalk_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "crosswalk_request_latency_seconds",
            "Time from request start to response start, by route",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_latency = Histogram(
            "crosswalk_queue_latency_seconds",
            "Per image: time from joining the queue to its batch starting",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.compute_latency = Histogram(
            "crosswalk_compute_latency_seconds",
            "Per batch: runtime + postprocess time on the runtime thread",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "crosswalk_batch_size", "Images per batch run", buckets=BATCH_BUCKETS, registry=r
        )
        self.images_computed = Counter(
            "crosswalk_images_computed", "Images run through the network", registry=r
        )
        self.queue_depth = Gauge("crosswalk_queue_depth", "Images waiting for a batch", registry=r, **live)
        self.in_flight = Gauge(
            "crosswalk_in_flight_requests", "HTTP requests being handled", registry=r, **live
        )
        self.shed = Counter(
            "crosswalk_shed", "Images refused at admission with 503, by reason", ["reason"], registry=r
        )
        self.expired = Counter(
            "crosswalk_expired",
            "Images answered 504 because their deadline could not be met, by stage (admission, queue)",
            ["stage"],
            registry=r,
        )
        self.cancelled = Counter(
            "crosswalk_cancelled", "Queued images dropped because their client disconnected", registry=r
        )
        self.image_compute_seconds = Counter(
            "crosswalk_image_compute_seconds",
            "Sum over computed images of their batch's compute time (Triton's per-request compute)",
            registry=r,
        )
        self.last_inference = Gauge(
            "crosswalk_last_inference_timestamp_seconds",
            "Unix time of the last batch run",
            registry=r,
            multiprocess_mode="max",
        )
        self.replica_ready = Gauge(
            "crosswalk_replicas_ready", "Replicas ready to serve (summed over workers)", registry=r, **live
        )

    # ---- BatcherMetrics -------------------------------------------------------------------------------

    def queued(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def dispatched(self, waits_s: list[float]) -> None:
        for wait in waits_s:
            self.queue_latency.observe(wait)

    def computed(self, batch_size: int, seconds: float) -> None:
        self.compute_latency.observe(seconds)
        self.batch_size.observe(batch_size)
        self.images_computed.inc(batch_size)
        self.image_compute_seconds.inc(batch_size * seconds)
        self.last_inference.set(time.time())

    def rejected(self, kind: str, reason: str, images: int) -> None:
        if kind == "shed":
            self.shed.labels(reason).inc(images)
        elif kind == "expired":
            self.expired.labels(reason).inc(images)
        else:
            self.cancelled.inc(images)

    # ---- exposition -----------------------------------------------------------------------------------

    def _collecting_registry(self) -> CollectorRegistry:
        if not self.multiprocess:
            return self.registry
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
        return registry

    def exposition(self) -> bytes:
        return generate_latest(self._collecting_registry())

    def totals(self) -> dict[str, float]:
        """Every sample summed over its labels (all replicas with multiprocess), by sample name."""
        totals: dict[str, float] = {}
        for family in self._collecting_registry().collect():
            for sample in family.samples:
                if "le" in sample.labels:
                    continue
                if sample.name.endswith("_timestamp_seconds"):
                    totals[sample.name] = max(totals.get(sample.name, 0.0), sample.value)
                else:
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals
