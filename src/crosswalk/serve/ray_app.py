"""``crosswalk serve --ray``: the same ``Predictor`` as a Ray Serve application, to scale out on a Ray cluster.

An optional extra (``pip install crosswalk[ray]``): this module imports Ray at the top and is imported only
when ``--ray`` is given. The single-host server (``crosswalk.serve``) stays the default; this path trades its
lean request path for Ray's cluster scheduling: replicas placed on any node, replica autoscaling, and
``@serve.batch`` batching. What it costs here (env.md sec. 7): ~0.6 GB and ~5 s to start on 2 cores, a request
p50 of ~4 ms through Ray's Python proxy for a no-op deployment, against ~0.6 ms for uvicorn; users report the
proxy saturating at a few hundred QPS per node (serving.md sec. 2, ray#42565).

One deployment, ``DetectorDeployment``:

- ``POST /v1/detect``, the same contract as the single-host server: an image body (``image/jpeg`` or
  ``image/png``), optional ``min_score`` and ``classes`` query parameters (``classes=pedestrian,cyclist``),
  answer ``{"model", "version", "width", "height", "detections": [{"box", "score", "label", "class"}]}`` in
  original pixels. Bad image -> 400, wrong content type -> 415, body over ``max_body_bytes`` -> 413. Plain
  Starlette request handling (Ray Serve hands a ``starlette.requests.Request`` to ``__call__``; no FastAPI
  ingress is needed for one route).
- Decode and letterbox run per request in a worker thread; the network runs batched through
  ``@serve.batch`` (``max_batch_size``, ``batch_wait_timeout_s``; Ray's defaults are 10 and 10 ms, ours follow
  ``crosswalk serve``'s ``--max-batch`` and ``--max-delay-ms``), also in a thread, so the replica's event loop
  keeps accepting requests while a batch computes; NMS runs per request.
- Replicas: a fixed ``num_replicas``, or ``autoscaling_config`` between ``min_replicas`` and ``max_replicas``
  on ongoing requests per replica (Ray's default target is 2; a batching replica wants about one batch in
  flight, so ours is ``max_batch``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

APP_NAME = "crosswalk"
IMAGE_TYPES = ("image/jpeg", "image/png")


@dataclass(frozen=True)
class RayServeConfig:
    """Knobs of the Ray Serve application; the names follow ``crosswalk.serve.config.ServeConfig``."""

    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    max_replicas: int = 0  # > replicas: autoscale between ``replicas`` and this
    max_batch: int = 8
    max_delay_ms: float = 2.0  # @serve.batch's batch_wait_timeout_s, in ms
    threads: int | None = None  # runtime threads per replica; None = cpus_per_replica
    cpus_per_replica: float = 1.0  # Ray's scheduling unit; the proxy and controller take none
    backend: str = "onnxruntime"
    max_body_bytes: int = 16 * 1024 * 1024
    model_name: str = "crosswalk"
    model_version: str = "1"

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.max_batch < 1 or self.max_delay_ms < 0 or self.cpus_per_replica <= 0:
            raise ValueError(f"invalid Ray Serve settings: {self}")


def deployment_options(cfg: RayServeConfig) -> dict:
    """``serve.deployment`` options: replicas or autoscaling, each replica's CPUs, its request cap."""
    options: dict = {
        "ray_actor_options": {"num_cpus": cfg.cpus_per_replica},
        # Enough requests in a replica to fill a batch while the previous one computes (Ray's default is 5).
        "max_ongoing_requests": 2 * cfg.max_batch,
    }
    if cfg.max_replicas > cfg.replicas:
        options["autoscaling_config"] = {
            "min_replicas": cfg.replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.max_batch,
        }
    else:
        options["num_replicas"] = cfg.replicas
    return options


class DetectorDeployment:
    """One replica: a ``Predictor`` behind ``POST /v1/detect``, its network calls batched by ``@serve.batch``."""

    def __init__(self, model: str | None, config: dict) -> None:
        from crosswalk.infer import Predictor

        cfg = RayServeConfig(**config)
        threads = cfg.threads or max(1, int(cfg.cpus_per_replica))
        self.predictor = Predictor(model=model, backend=cfg.backend, threads=threads)
        self.max_body_bytes = cfg.max_body_bytes
        self.model_name, self.model_version = cfg.model_name, cfg.model_version
        self.run_batch.set_max_batch_size(cfg.max_batch)
        self.run_batch.set_batch_wait_timeout_s(cfg.max_delay_ms / 1000)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def run_batch(self, pixels: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        boxes, scores = await asyncio.to_thread(self.predictor.run, np.stack(pixels))
        return [(boxes[i], scores[i]) for i in range(len(pixels))]

    async def __call__(self, request: Request) -> JSONResponse:
        from crosswalk.infer import ImageError

        if request.url.path.rstrip("/") != "/v1/detect":
            return JSONResponse({"error": f"no route {request.url.path}; POST /v1/detect"}, status_code=404)
        if request.method != "POST":
            return JSONResponse({"error": "POST an image to /v1/detect"}, status_code=405)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in IMAGE_TYPES:
            return JSONResponse(
                {"error": f"content-type must be one of {IMAGE_TYPES}, got {content_type or 'none'!r}"},
                status_code=415,
            )
        body = await request.body()
        if len(body) > self.max_body_bytes:
            return JSONResponse(
                {"error": f"body of {len(body)} bytes is over the {self.max_body_bytes}-byte limit"},
                status_code=413,
            )
        try:
            min_score, classes = _detect_params(request.query_params, self.predictor)
            prep = await asyncio.to_thread(self.predictor.prepare, body)
        except (ImageError, ValueError) as e:  # ImageError is a ValueError; both are the client's to fix
            return JSONResponse({"error": str(e)}, status_code=400)
        boxes, scores = await self.run_batch(prep.pixels)
        detections = self.predictor.postprocess(boxes, scores, prep, min_score=min_score, classes=classes)
        return JSONResponse(
            {
                "model": self.model_name,
                "version": self.model_version,
                "width": prep.width,
                "height": prep.height,
                "detections": detections,
            }
        )


def _detect_params(params, predictor) -> tuple[float | None, list[str] | None]:
    """``min_score`` (0..1) and ``classes`` (comma-separated names or ids, or repeated) from the query."""
    min_score = None
    if "min_score" in params:
        try:
            min_score = float(params["min_score"])
        except ValueError as e:
            raise ValueError(f"min_score must be a number, got {params['min_score']!r}") from e
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within 0..1, got {min_score}")
    classes = [c.strip() for v in params.getlist("classes") for c in v.split(",") if c.strip()] or None
    predictor.class_ids(classes)  # ValueError naming an unknown class
    return min_score, classes


def build_app(model: str | Path | None = None, cfg: RayServeConfig = RayServeConfig()) -> serve.Application:
    """The Ray Serve application (not yet running): ``serve.run(build_app(...))`` deploys it."""
    deployment = serve.deployment(name="detector", **deployment_options(cfg))(DetectorDeployment)
    # An absolute path: replicas run in other processes, possibly on other nodes sharing the file system.
    return deployment.bind(None if model is None else str(Path(model).resolve()), asdict(cfg))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for_route(url: str, timeout_s: float) -> None:
    """Ray's proxy can answer 404 for a moment after ``serve.run`` returns; wait until it routes to us."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/-/routes", timeout=2.0)
            if r.status_code == 200 and "/" in r.json():
                return
            last = f"HTTP {r.status_code}: {r.text[:100]}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.2)
    raise TimeoutError(f"Ray Serve proxy at {url} did not route the app within {timeout_s:.0f} s ({last})")


def start(
    model: str | Path | None = None,
    cfg: RayServeConfig = RayServeConfig(),
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    temp_dir: str | Path | None = None,
    ready_timeout_s: float = 120.0,
) -> str:
    """Start (or join) Ray, deploy the app and return its base URL once the proxy routes to it.

    ``address``: an existing cluster (``ray://`` or ``auto``; default ``$RAY_ADDRESS``), else a local Ray with
    ``num_cpus`` and no dashboard. Pair with ``stop()``."""
    if cfg.port == 0:  # "any free port", as for crosswalk serve
        cfg = replace(cfg, port=free_port(cfg.host))
    address = address or os.environ.get("RAY_ADDRESS") or None
    init_kwargs: dict = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
    if address is None:
        init_kwargs["num_cpus"] = num_cpus
        if temp_dir is not None:
            init_kwargs["_temp_dir"] = str(temp_dir)
    ray.init(address=address, **init_kwargs)
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config={"log_level": "WARNING"})
    serve.run(build_app(model, cfg), name=APP_NAME, route_prefix="/")
    url = f"http://{cfg.host}:{cfg.port}"
    _wait_for_route(url, ready_timeout_s)
    return url


def stop() -> None:
    """Tear down the app, Serve and (if this process started it) Ray."""
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


@contextlib.contextmanager
def running_ray_server(
    model: str | Path | None = None,
    cfg: RayServeConfig | None = None,
    *,
    num_cpus: int | None = 2,
    temp_dir: str | Path | None = None,
    ready_timeout_s: float = 120.0,
) -> Iterator[str]:
    """A local Ray with the app deployed on a free port, for tests and benchmarks; yields the base URL."""
    cfg = cfg or RayServeConfig(port=free_port())
    try:
        yield start(model, cfg, num_cpus=num_cpus, temp_dir=temp_dir, ready_timeout_s=ready_timeout_s)
    finally:
        stop()


def config_from_args(args: argparse.Namespace) -> RayServeConfig:
    """``crosswalk serve`` flags -> RayServeConfig; flags the serve command lacks keep their defaults."""
    fields = RayServeConfig.__dataclass_fields__
    values = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    values["replicas"] = max(1, values.get("replicas", 1))  # serve's 0 (= in process) means one replica here
    return RayServeConfig(**values)


def run_ray(args: argparse.Namespace) -> int:
    """``crosswalk serve --ray``: deploy, print the URL, serve until SIGINT/SIGTERM, then tear down."""
    cfg = config_from_args(args)
    model = getattr(args, "repo", None) or getattr(args, "model", None)
    url = start(model, cfg)
    mode = (
        f"autoscaling {cfg.replicas}-{cfg.max_replicas} replicas"
        if cfg.max_replicas > cfg.replicas
        else f"{cfg.replicas} replica(s)"
    )
    print(
        f"Ray Serve app {APP_NAME!r} at {url}/v1/detect: {mode}, batches of up to {cfg.max_batch}", flush=True
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    finally:
        print("shutting down Ray Serve", flush=True)
        stop()
    return 0
