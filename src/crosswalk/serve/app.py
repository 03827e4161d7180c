"""The ASGI app: ``create_app(predictor, ServeConfig)`` -> a Starlette app serving one detector.

Endpoints: the Open Inference Protocol v2 (``/v2/...``, see ``oip.py``), ``POST /v1/detect`` (an image body
or a multipart upload -> JSON boxes), ``/metrics`` (Prometheus) and ``/openapi.json``.

The request path, kept lean because the server's overhead over the runtime is budgeted at 1 ms: read the
body, admit (or shed at once), decode + letterbox (on the loop for camera-sized frames, in the thread pool
for big ones), queue, run in a batch on the single runtime thread (``batcher.py``), encode. Client mistakes are 4xx with ``{"error": ...}`` naming what is
wrong, and never disturb the batcher: the image is checked before it is queued, so a bad request cannot
fail a batch it shares with good ones.

Readiness is honest (serving.md sec. 5, item 3): ``/v2/health/ready`` is 200 only once the model is loaded
and warm and the batcher runs, turns 503 as soon as a drain starts (SIGTERM), and reports how many replicas
are ready; liveness stays 200 while draining (Triton drops both at once [T12], which makes an orchestrator
restart a process that is merely finishing its work).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crosswalk.infer import Detection, ImageError, Prepared
from crosswalk.infer.image import image_size
from crosswalk.serve import oip
from crosswalk.serve.batcher import ComputeModel, DeadlineExceeded, DynamicBatcher, Shed
from crosswalk.serve.config import ServeConfig
from crosswalk.serve.metrics import ServeMetrics
from crosswalk.serve.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from crosswalk.serve.openapi import openapi_document

TIMEOUT_HEADER = "x-request-timeout-ms"  # the client's deadline, relative to arrival
# Frames up to this many pixels (all images of a request together) are decoded on the event loop; larger
# ones in the thread pool. Measured here: a thread-pool round trip costs 0.3-0.6 ms of wake-ups on a busy
# 2-core VM, about what decoding a whole 512x288 JPEG costs (0.3-0.8 ms), and the loop is never the
# bottleneck at CPU inference rates (~100 images/s per replica). A 4K PNG (~50 ms) must not block the loop.
INLINE_DECODE_MAX_PIXELS = 1_000_000
IMAGE_TYPES = ("image/jpeg", "image/png")


class Readiness:
    """This worker's readiness; with replicas, a shared array holds every worker's flag (set by the supervisor)."""

    def __init__(self, flags: Sequence[int] | None = None, index: int = 0) -> None:
        self.flags = flags
        self.index = index
        self.ready = False

    def set(self, ready: bool) -> None:
        self.ready = ready
        if self.flags is not None:
            self.flags[self.index] = int(ready)

    def replicas(self) -> tuple[int, int]:
        if self.flags is None:
            return int(self.ready), 1
        return sum(self.flags), len(self.flags)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class DetectorService:
    """The glue between HTTP and the runtime: decode, admit, batch, answer."""

    def __init__(self, predictor: Any, cfg: ServeConfig, metrics: ServeMetrics, readiness: Readiness) -> None:
        self.predictor = predictor
        self.cfg = cfg
        self.metrics = metrics
        self.readiness = readiness
        self.clock: Callable[[], float] = time.monotonic
        self.batcher = DynamicBatcher(
            self.run_batch,
            ComputeModel(0.01),
            max_batch=cfg.max_batch,
            max_delay_s=cfg.max_delay_ms / 1e3,
            latency_target_s=cfg.latency_target_ms / 1e3,
            queue_limit=cfg.queue_limit,
            metrics=metrics,
            clock=self.clock,
        )

    # ---- runtime thread -------------------------------------------------------------------------------

    def run_batch(
        self, payloads: list[tuple[Prepared, float | None, list[int] | None]]
    ) -> list[list[Detection]]:
        pixels = np.stack([prep.pixels for prep, _, _ in payloads])
        boxes, scores = self.predictor.run(pixels)
        return [
            self.predictor.postprocess(boxes[i], scores[i], prep, min_score=min_score, classes=classes)
            for i, (prep, min_score, classes) in enumerate(payloads)
        ]

    def measure_single_s(self, repeats: int = 3) -> float:
        """Median time of one batch of 1: the batcher's first compute estimate."""
        w, h = self.predictor.input_size
        batch = np.full((1, h, w, 3), 114, np.uint8)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.predictor.run(batch)
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    # ---- request side ---------------------------------------------------------------------------------

    def deadline(self, arrival_s: float, header: str | None, timeout_us: int | None = None) -> float | None:
        if timeout_us is not None:
            return arrival_s + timeout_us / 1e6
        if header is None:
            return None
        try:
            timeout_ms = float(header)
        except ValueError:
            timeout_ms = math.nan
        if not timeout_ms >= 0 or math.isinf(timeout_ms):
            raise HTTPException(
                400, f"X-Request-Timeout-Ms must be a non-negative number of ms, got {header!r}"
            )
        return arrival_s + timeout_ms / 1e3

    def class_ids(self, classes: list | None) -> list[int] | None:
        try:
            return self.predictor.class_ids(classes)
        except ValueError as e:
            raise HTTPException(400, f"classes: {e}") from None

    def _prepare(self, images: list[bytes | np.ndarray]) -> list[Prepared]:
        return [self.predictor.prepare(image) for image in images]

    async def detect(
        self,
        request: Request,
        images: list[bytes | np.ndarray],
        min_score: float | None,
        classes: list[int] | None,
        deadline_s: float | None,
        hint: str = "",
    ) -> tuple[list[list[Detection]], list[Prepared], str]:
        """Admit, decode, queue and await ``images``; 4xx/5xx as exceptions (see ``create_app``'s handlers).

        Returns the detections, the prepared images and a ``Server-Timing`` header value: decode, queue and
        compute milliseconds of this request (the longest over its images), which browsers' developer tools
        and curl -v show."""
        n = len(images)
        if n > self.cfg.queue_limit:
            raise HTTPException(
                413, f"{n} images in one request; this server takes at most {self.cfg.queue_limit}"
            )
        self.batcher.admit(n, deadline_s)
        start = self.clock()
        try:
            if _pixels(images) <= INLINE_DECODE_MAX_PIXELS:
                preps = self._prepare(images)
            else:
                preps = await run_in_threadpool(self._prepare, images)
        except ImageError as e:
            self.batcher.release(n)
            raise HTTPException(400, f"{e}{hint}") from None
        except BaseException:
            self.batcher.release(n)
            raise
        decoded = self.clock()
        items = self.batcher.submit([(p, min_score, classes) for p in preps], deadline_s)
        futures = [item.future for item in items]
        waiter = futures[0] if n == 1 else asyncio.gather(*futures)
        disconnect = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait((waiter, disconnect), return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
        if not waiter.done():  # the client left while its images were queued
            self.batcher.cancel(items)
            _consume([*futures, waiter])
            raise ClientGone()
        if waiter.exception() is not None:
            self.batcher.cancel(items)
            _consume([*futures, waiter])
        result = waiter.result()
        queue_s = max((it.dispatched_s or it.enqueued_s) - it.enqueued_s for it in items)
        compute_s = max(it.compute_s or 0.0 for it in items)
        timing = f"decode;dur={1e3 * (decoded - start):.3f}, queue;dur={1e3 * queue_s:.3f}, compute;dur={1e3 * compute_s:.3f}"
        return ([result] if n == 1 else result), preps, timing


def _pixels(images: list[bytes | np.ndarray]) -> int:
    """Pixels the images will decode to, from headers only (a bad header counts as big: the pool reports it)."""
    total = 0
    for image in images:
        if isinstance(image, np.ndarray):
            total += image.size // 3
        else:
            try:
                w, h = image_size(image)
            except ImageError:
                return INLINE_DECODE_MAX_PIXELS + 1
            total += w * h
    return total


class ClientGone(Exception):
    """The client disconnected before its answer; nobody will read the response."""


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _consume(futures: list[asyncio.Future]) -> None:
    """Mark the other images' outcomes as seen, so a failed multi-image request logs no stray warnings."""
    for f in futures:
        f.add_done_callback(lambda f: f.cancelled() or f.exception())


# ---- the app ---------------------------------------------------------------------------------------------


def create_app(
    predictor: Any,
    cfg: ServeConfig | None = None,
    *,
    readiness: Readiness | None = None,
    metrics: ServeMetrics | None = None,
) -> Starlette:
    """A Starlette app around a loaded ``crosswalk.infer.Predictor`` (or anything with its contract)."""
    cfg = cfg or ServeConfig()
    metrics = metrics or ServeMetrics()
    readiness = readiness or Readiness()
    service = DetectorService(predictor, cfg, metrics, readiness)
    name, version = cfg.model_name, cfg.model_version

    def check_model(request: Request) -> None:
        model = request.path_params["model"]
        if model != name:
            raise HTTPException(404, f"unknown model {model!r}; this server has {name!r}")
        v = request.path_params.get("version")
        if v is not None and v != version:
            raise HTTPException(404, f"model {name!r} has no version {v!r}; it has {version!r}")

    async def server_metadata(request: Request) -> Response:
        from importlib.metadata import version as package_version

        return JSONResponse(
            {
                "name": "crosswalk",
                "version": package_version("crosswalk"),
                "extensions": ["binary_tensor_data", "model_configuration", "statistics"],
            }
        )

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        ready_count, total = readiness.replicas()
        body = {"ready": readiness.ready, "replicas_ready": ready_count, "replicas": total}
        if readiness.ready:
            return JSONResponse(body)
        return JSONResponse({**body, "error": "not ready (starting or draining)"}, status_code=503)

    async def model_metadata(request: Request) -> Response:
        check_model(request)
        return JSONResponse(oip.model_metadata(name, version, list(predictor.classes), predictor.input_size))

    async def model_ready(request: Request) -> Response:
        check_model(request)
        if readiness.ready:
            return JSONResponse({"name": name, "ready": True})
        return error(503, f"model {name!r} is not ready")

    async def model_config(request: Request) -> Response:
        check_model(request)
        return JSONResponse(oip.model_config(name, cfg.max_batch, int(cfg.max_delay_ms * 1e3)))

    async def model_stats(request: Request) -> Response:
        if "model" in request.path_params:
            check_model(request)
        return JSONResponse(oip.model_statistics(name, version, metrics.totals()))

    async def infer(request: Request) -> Response:
        check_model(request)
        arrival = service.clock()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.startswith(("image/", "multipart/")):
            raise HTTPException(
                415, f"an OIP request is JSON (+ binary data), not {content_type}; use /v1/detect"
            )
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise HTTPException(
                415, f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
            )
        body = await request.body()
        try:
            req = oip.parse_infer_request(body, request.headers.get(oip.HEADER_LENGTH))
        except oip.OIPError as e:
            raise HTTPException(400, str(e)) from None
        classes = service.class_ids(req.classes)
        deadline = service.deadline(arrival, request.headers.get(TIMEOUT_HEADER), req.timeout_us)
        images: list = req.images if req.images is not None else list(req.pixels)
        hint = (
            " (BYTES given as JSON text are taken as UTF-8; send images as binary data, or base64 with "
            'parameters.content_type = "base64")'
            if req.images_from_json_text
            else ""
        )
        detections, _, timing = await service.detect(request, images, req.min_score, classes, deadline, hint)
        payload, headers = oip.encode_infer_response(detections, req, name, version)
        return Response(payload, headers={**headers, "server-timing": timing})

    async def detect(request: Request) -> Response:
        arrival = service.clock()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (*IMAGE_TYPES, "multipart/form-data"):
            raise HTTPException(
                415,
                f"send image/jpeg, image/png or multipart/form-data, not {content_type or 'no content type'}",
            )
        min_score = _min_score(request.query_params.get("min_score"))
        classes_text = request.query_params.get("classes")
        classes = service.class_ids(
            [c.strip() for c in classes_text.split(",") if c.strip()] if classes_text else None
        )
        deadline = service.deadline(arrival, request.headers.get(TIMEOUT_HEADER))
        if content_type == "multipart/form-data":
            data = await _multipart_image(request)
        else:
            data = await request.body()
        detections, preps, timing = await service.detect(request, [data], min_score, classes, deadline)
        return Response(
            oip.dumps(
                {
                    "model": name,
                    "version": version,
                    "width": preps[0].width,
                    "height": preps[0].height,
                    "detections": detections[0],
                }
            ),
            media_type="application/json",
            headers={"server-timing": timing},
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(cfg, list(predictor.classes)))

    # ---- errors: always {"error": ...} with the right status -----------------------------------------

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), exc.headers)

    async def shed(request: Request, exc: Shed) -> Response:
        retry_s = max(1, math.ceil(exc.retry_after_s))
        return error(503, str(exc), {"Retry-After": str(retry_s)})

    async def expired(request: Request, exc: DeadlineExceeded) -> Response:
        return error(504, str(exc))

    async def gone(request: Request, exc: ClientGone) -> Response:
        return error(499, "client closed the request")  # nginx's code; nobody receives it

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @asynccontextmanager
    async def lifespan(app: Starlette):
        service.batcher.compute = ComputeModel(await run_in_threadpool(service.measure_single_s))
        await service.batcher.start()
        readiness.set(True)
        metrics.replica_ready.set(1)
        try:
            yield
        finally:
            readiness.set(False)
            metrics.replica_ready.set(0)
            await service.batcher.stop()

    v = "/versions/{version}"
    model = "/v2/models/{model}"
    routes = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/stats", model_stats),
        Route(model, model_metadata),
        Route(model + v, model_metadata),
        Route(model + "/ready", model_ready),
        Route(model + v + "/ready", model_ready),
        Route(model + "/config", model_config),
        Route(model + v + "/config", model_config),
        Route(model + "/stats", model_stats),
        Route(model + v + "/stats", model_stats),
        Route(model + "/infer", infer, methods=["POST"]),
        Route(model + v + "/infer", infer, methods=["POST"]),
        Route("/v1/detect", detect, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(ApiKeyMiddleware, api_key=cfg.resolved_api_key()),
            Middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes),
        ],
        exception_handlers={
            HTTPException: http_error,
            Shed: shed,
            DeadlineExceeded: expired,
            ClientGone: gone,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.state.readiness = readiness
    return app


def _min_score(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise HTTPException(400, f"min_score must be a number in [0, 1], got {text!r}")
    return value


async def _multipart_image(request: Request) -> bytes:
    """The one file part of a multipart upload (any field name), size-checked by the body limit.

    Starlette answers a malformed body (or more than one file) with HTTPException(400) itself.
    """
    form = await request.form(max_files=1, max_fields=16)
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(400, "multipart body has no file part; send the image as a file field")
        return await files[0].read()
    finally:
        await form.close()
