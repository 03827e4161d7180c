"""``ServeConfig``: every knob of ``crosswalk serve``, read-only once parsed.

Defaults and where they come from:

- ``latency_target_ms = 100``: MLPerf's Server bound for the detection benchmark (RetinaNet, p99 <= 100 ms,
  ``loadgen/mlperf.conf``; ../shared/reference/serving.md sec. 3.1). The batcher sizes batches to it and
  admission sheds requests that it predicts would miss it.
- ``max_delay_ms = 2``: the longest a batch waits for company. Triton's default is 0 (never wait), Ray's
  10 ms; on a CPU a batch of 8 costs as much as 8 batches of 1 (env.md sec. 4), so waiting buys little
  here, and the batcher only waits when its arrival estimate says another request is due in time.
- ``queue_limit = 64`` images: bounded by default. Triton's ``max_queue_size`` defaults to 0 = unbounded
  and LitServe has no cap (serving.md sec. 4, item 2), so overload there turns into timeouts instead of a
  fast 503.
- ``max_body_bytes = 16 MiB``: a 4K PNG fits; TorchServe's 6.5 MB default surprised users (serving.md
  sec. 4, item 8).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

API_KEY_ENV = "CROSSWALK_API_KEY"
MODEL_NAME = "crosswalk"
MODEL_VERSION = "1"


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1  # worker processes; 0 = serve in this process, no supervisor
    threads: int | None = None  # runtime threads per replica; None = cores / replicas
    backend: str = "onnxruntime"
    max_batch: int = 8
    max_delay_ms: float = 2.0
    latency_target_ms: float = 100.0
    queue_limit: int = 64  # images waiting or decoding, per replica
    max_body_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    api_key: str | None = field(default=None, repr=False)
    drain_timeout_s: float = 30.0
    model_name: str = MODEL_NAME
    model_version: str = MODEL_VERSION

    def __post_init__(self) -> None:
        checks = {
            "port": 0 <= self.port <= 65535,
            "replicas": self.replicas >= 0,
            "threads": self.threads is None or self.threads >= 1,
            "max_batch": self.max_batch >= 1,
            "max_delay_ms": self.max_delay_ms >= 0,
            "latency_target_ms": self.latency_target_ms > 0,
            "queue_limit": self.queue_limit >= 1,
            "max_body_bytes": self.max_body_bytes >= 1,
            "max_pixels": self.max_pixels >= 1,
            "drain_timeout_s": self.drain_timeout_s >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid serve settings: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    @classmethod
    def from_kwargs(cls, **kwargs) -> ServeConfig:
        """Like the constructor, but an unknown key fails with the list of valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise ValueError(f"unknown serve setting(s) {unknown}; valid: {sorted(valid)}")
        return cls(**kwargs)

    def resolved_api_key(self) -> str | None:
        """The flag wins; else ``CROSSWALK_API_KEY``; an empty value means no key."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def runtime_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        cores = len(os.sched_getaffinity(0))
        return max(1, cores // max(1, self.replicas))
