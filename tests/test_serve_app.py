"""The app in process, on a fake network (real decoding, letterbox and NMS): routes, the bad-input table,
API key, metrics, client disconnects, and schemathesis against /openapi.json on a live loopback server."""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
import warnings
from contextlib import contextmanager

import cv2
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():  # starlette 1.x suggests httpx2 for its test client; httpx works
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from crosswalk.infer import Predictor
from crosswalk.serve import ServeConfig, create_app
from crosswalk.serve.replicas import bind_socket

CLASSES = ["pedestrian", "cyclist", "vehicle"]
# Two anchors on the 64x32 canvas: a pedestrian (0.9) and a vehicle (0.6).
CANVAS_BOXES = np.array([[8, 8, 24, 24], [30, 4, 60, 28]], np.float32)
CANVAS_SCORES = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.6]], np.float32)


class FakePredictor(Predictor):
    """``Predictor`` with the network replaced by two fixed anchors; decoding, letterbox, NMS are the real ones."""

    def __init__(self, max_pixels: int = 1_000_000, fail: bool = False) -> None:
        self.path, self.backend, self.threads, self.device = "fake", "fake", 1, "cpu"
        self.classes = list(CLASSES)
        self.input_size = (64, 32)
        self.config = {"classes": CLASSES, "input_size": [64, 32]}
        self.score_threshold, self.nms_iou, self.max_detections = 0.25, 0.6, 100
        self.max_pixels = max_pixels
        self.fail = fail
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batch_sizes.append(len(batch))
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("the accelerator fell off the bus")
        b = len(batch)
        return np.repeat(CANVAS_BOXES[None], b, 0), np.repeat(CANVAS_SCORES[None], b, 0)


def encode(ext: str, width: int = 128, height: int = 64) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


JPEG, PNG = encode(".jpg"), encode(".png")


@pytest.fixture
def predictor() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def client(predictor):
    cfg = ServeConfig(max_body_bytes=200_000, latency_target_ms=1000, max_delay_ms=0)
    with TestClient(create_app(predictor, cfg), raise_server_exceptions=False) as c:
        yield c


def post_image(client, data=JPEG, content_type="image/jpeg", **kw):
    headers = {"content-type": content_type, **kw.pop("headers", {})}
    return client.post("/v1/detect", content=data, headers=headers, **kw)


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = (
        rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
        if labels
        else rf"^{re.escape(name)} ([0-9.e+-]+)$"
    )
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


# ---- the happy paths ----------------------------------------------------------------------------------------


def test_detect_returns_boxes_in_original_pixels(client):
    r = post_image(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (128, 64)
    # 128x64 -> 64x32 canvas: scale 0.5, no padding; canvas [8, 8, 24, 24] is [16, 16, 48, 48] in the original.
    assert [d["class"] for d in body["detections"]] == ["pedestrian", "vehicle"]
    assert body["detections"][0]["box"] == pytest.approx([16, 16, 48, 48])
    assert body["detections"][0]["score"] == pytest.approx(0.9)
    assert r.headers["x-request-id"]
    timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
    assert set(timing) == {"decode", "queue", "compute"} and all(float(v) >= 0 for v in timing.values())
    assert float(timing["compute"]) > 0


def test_detect_png_multipart_and_filters(client):
    assert post_image(client, PNG, "image/png").status_code == 200
    r = client.post("/v1/detect", files={"image": ("frame.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["detections"]) == 2
    r = post_image(client, params={"min_score": "0.7"})
    assert [d["class"] for d in r.json()["detections"]] == ["pedestrian"]
    r = post_image(client, params={"classes": "vehicle"})
    assert [d["class"] for d in r.json()["detections"]] == ["vehicle"]
    r = post_image(client, params={"classes": "unicorn"})
    assert r.status_code == 400 and "unicorn" in r.json()["error"]


def test_oip_endpoints_with_json_pixels_and_binary_images(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json()["replicas_ready"] == 1
    assert client.get("/v2").json()["extensions"][0] == "binary_tensor_data"
    meta = client.get("/v2/models/crosswalk").json()
    assert meta["parameters"]["classes"] == CLASSES and meta["versions"] == ["1"]
    assert client.get("/v2/models/crosswalk/versions/1/ready").status_code == 200
    assert client.get("/v2/models/crosswalk/config").json()["max_batch_size"] == 8
    assert client.get("/v2/models/other").status_code == 404
    assert client.get("/v2/models/crosswalk/versions/2").status_code == 404

    pixels = np.zeros((2, 64, 128, 3), np.uint8)
    doc = {
        "inputs": [
            {"name": "pixels", "shape": [2, 64, 128, 3], "datatype": "UINT8", "data": pixels.ravel().tolist()}
        ]
    }
    r = client.post("/v2/models/crosswalk/infer", json=doc)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["num_detections"]["data"] == [2, 2] and out["boxes"]["shape"] == [2, 2, 4]

    images = triton.InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(np.array([JPEG], dtype=object), binary_data=True)
    outputs = [triton.InferRequestedOutput("boxes", binary_data=True)]
    body, json_size = triton.InferenceServerClient.generate_request_body([images], outputs)
    r = client.post(
        "/v2/models/crosswalk/versions/1/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(json_size)},
    )
    assert r.status_code == 200, r.text
    result = triton.InferenceServerClient.parse_response_body(
        r.content, header_length=int(r.headers["inference-header-content-length"])
    )
    np.testing.assert_allclose(result.as_numpy("boxes")[0, 0], [16, 16, 48, 48])

    stats = client.get("/v2/models/crosswalk/stats").json()["model_stats"][0]  # Triton's statistics extension
    assert stats["inference_count"] == 3 and stats["inference_stats"]["queue"]["count"] == 3
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0 and stats["execution_count"] >= 1


# ---- the bad-input table: 4xx, never a 500, and the server stays ready ----------------------------------------


def bomb_png() -> bytes:
    """A 1200x1000 black PNG: a few KB that decode to 3.6 MB (over the 1 MP limit of the fake predictor)."""
    ok, data = cv2.imencode(".png", np.zeros((1000, 1200, 3), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and len(data) < 20_000
    return data.tobytes()


def chunks(total: int, size: int = 65536):
    for _ in range(total // size):
        yield b"\0" * size


BAD_INPUTS = [
    ("not an image", lambda c: post_image(c, b"hello, world"), 400, "not a JPEG or PNG"),
    ("corrupt JPEG", lambda c: post_image(c, JPEG[: len(JPEG) // 2]), 400, "corrupt JPEG"),
    ("corrupt PNG", lambda c: post_image(c, PNG[:100], "image/png"), 400, "PNG"),
    ("wrong content type", lambda c: post_image(c, JPEG, "text/plain"), 415, "image/jpeg"),
    ("no content type", lambda c: c.post("/v1/detect", content=JPEG), 415, "image/jpeg"),
    ("body over the limit", lambda c: post_image(c, b"\xff\xd8" + b"\0" * 300_000), 413, "limit"),
    ("chunked body over the limit", lambda c: post_image(c, chunks(400_000)), 413, "limit"),
    ("decompression bomb", lambda c: post_image(c, bomb_png(), "image/png"), 400, "over the limit"),
    ("min_score out of range", lambda c: post_image(c, params={"min_score": "7"}), 400, "min_score"),
    ("bad timeout header", lambda c: post_image(c, headers={"x-request-timeout-ms": "soon"}), 400, "Timeout"),
    (
        "malformed OIP JSON",
        lambda c: c.post("/v2/models/crosswalk/infer", content=b"{not json"),
        400,
        "not valid JSON",
    ),
    (
        "OIP missing field",
        lambda c: c.post("/v2/models/crosswalk/infer", json={"inputs": [{"name": "images"}]}),
        400,
        "inputs[0].datatype",
    ),
    (
        "OIP text that is no image",
        lambda c: c.post(
            "/v2/models/crosswalk/infer",
            json={"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["abc"]}]},
        ),
        400,
        "base64",
    ),
    (
        "OIP image upload",
        lambda c: c.post("/v2/models/crosswalk/infer", content=JPEG, headers={"content-type": "image/jpeg"}),
        415,
        "/v1/detect",
    ),
    (
        "OIP one corrupt image among good ones",
        lambda c: c.post(
            "/v2/models/crosswalk/infer",
            json={
                "inputs": [
                    {
                        "name": "images",
                        "shape": [2],
                        "datatype": "BYTES",
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(JPEG).decode(), base64.b64encode(JPEG[:300]).decode()],
                    }
                ]
            },
        ),
        400,
        "corrupt JPEG",
    ),
    (
        "OIP gzip",
        lambda c: c.post("/v2/models/crosswalk/infer", content=b"x", headers={"content-encoding": "gzip"}),
        415,
        "gzip",
    ),
    (
        "too many images",
        lambda c: c.post(
            "/v2/models/crosswalk/infer",
            json={"inputs": [{"name": "images", "shape": [65], "datatype": "BYTES", "data": ["a"] * 65}]},
        ),
        413,
        "at most",
    ),
]


@pytest.mark.parametrize(
    ("call", "status", "message"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_gets_a_4xx_naming_the_problem(client, predictor, call, status, message):
    runs = len(predictor.batch_sizes)
    r = call(client)
    assert len(predictor.batch_sizes) == runs  # rejected before the runtime, never sharing a batch
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200
    assert post_image(client).status_code == 200  # and the next good request is served


def test_runtime_failure_is_a_json_500_and_the_server_keeps_serving():
    predictor = FakePredictor()
    with TestClient(create_app(predictor, ServeConfig()), raise_server_exceptions=False) as c:
        predictor.fail = True
        r = post_image(c)
        assert r.status_code == 500 and "fell off the bus" in r.json()["error"]
        predictor.fail = False
        assert post_image(c).status_code == 200


def test_api_key_guards_everything_but_health_and_metrics(predictor):
    with TestClient(create_app(predictor, ServeConfig(api_key="s3cret"))) as c:
        r = post_image(c)
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert c.get("/v2/models/crosswalk").status_code == 401
        assert post_image(c, headers={"x-api-key": "wrong"}).status_code == 401
        assert post_image(c, headers={"x-api-key": "s3cret"}).status_code == 200
        assert post_image(c, headers={"authorization": "Bearer s3cret"}).status_code == 200
        for open_path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
            assert c.get(open_path).status_code == 200


def test_api_key_from_the_environment(predictor, monkeypatch):
    monkeypatch.setenv("CROSSWALK_API_KEY", "from-env")
    with TestClient(create_app(predictor, ServeConfig())) as c:
        assert post_image(c).status_code == 401
        assert post_image(c, headers={"x-api-key": "from-env"}).status_code == 200


def test_metrics_count_requests_and_expired_deadlines_cost_no_compute(client, predictor):
    assert post_image(client).status_code == 200
    runs_before = len(predictor.batch_sizes)
    for _ in range(3):
        r = post_image(client, headers={"x-request-timeout-ms": "0"})
        assert r.status_code == 504 and "deadline" in r.json()["error"]
    assert len(predictor.batch_sizes) == runs_before  # no compute for requests that cannot make it
    text = client.get("/metrics").text
    assert metric(text, "crosswalk_requests_total", '{route="/v1/detect",status="200"}') >= 1
    assert metric(text, "crosswalk_requests_total", '{route="/v1/detect",status="504"}') == 3
    assert metric(text, "crosswalk_expired_total", '{stage="admission"}') == 3
    assert (
        metric(text, "crosswalk_images_computed_total") == 1
    )  # the one served image; start-up timing runs aside
    for name in (
        "crosswalk_queue_latency_seconds_count",
        "crosswalk_compute_latency_seconds_count",
        "crosswalk_batch_size_count",
    ):
        assert metric(text, name) >= 1
    assert "crosswalk_queue_depth" in text and "crosswalk_in_flight_requests" in text


# ---- a live loopback server (uvicorn in a thread) ------------------------------------------------------------


@contextmanager
def live_server(app):
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_client_that_disconnects_while_queued_is_dropped_from_the_queue(predictor):
    app = create_app(predictor, ServeConfig(max_delay_ms=0, latency_target_ms=5000))
    with live_server(app) as url:
        service = app.state.service
        predictor.gate.clear()
        predictor.entered.clear()
        runs_before = len(predictor.batch_sizes)
        holder = threading.Thread(
            target=httpx.post,
            args=(url + "/v1/detect",),
            kwargs={"content": JPEG, "headers": {"content-type": "image/jpeg"}, "timeout": 20},
        )
        holder.start()
        assert predictor.entered.wait(10)  # the runtime is busy with the first request
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(
                b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                + f"Content-Length: {len(JPEG)}\r\n\r\n".encode()
                + JPEG
            )
            deadline = time.monotonic() + 10
            while service.batcher.depth < 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert service.batcher.depth == 1
        # the raw client hung up while queued
        deadline = time.monotonic() + 10
        while service.batcher.depth and time.monotonic() < deadline:
            time.sleep(0.005)
        predictor.gate.set()
        holder.join(20)
        assert service.batcher.depth == 0 and service.batcher.pending == 0
        assert len(predictor.batch_sizes) == runs_before + 1  # only the first request was computed
        assert metric(httpx.get(url + "/metrics").text, "crosswalk_cancelled_total") == 1


def test_schemathesis_finds_no_server_error(predictor):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    app = create_app(predictor, ServeConfig(max_body_bytes=100_000))
    with live_server(app) as url:
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        for operation in operations:

            @settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def check(case):
                r = case.call(base_url=url, timeout=10)
                # 5xx only where the API promises one: 504 for a deadline the client set too short.
                promised = r.status_code == 504 and "deadline" in r.text
                assert r.status_code < 500 or promised, f"{r.status_code} {r.text}\n{case.as_curl_command()}"

            check()
        assert httpx.get(url + "/v2/health/ready").status_code == 200


# ---- the command line ---------------------------------------------------------------------------------------


def test_config_round_trips_through_the_command_line():
    from crosswalk.cli import build_parser
    from crosswalk.serve.launcher import config_argv

    cfg = ServeConfig(port=0, replicas=2, threads=1, latency_target_ms=250.0, max_batch=4, queue_limit=32)
    args = build_parser().parse_args(["serve", *config_argv(cfg)])
    assert args.replicas == 2 and args.threads == 1 and args.latency_target_ms == 250.0
    assert args.max_batch == 4 and args.queue_limit == 32 and args.port == 0 and not args.ray
    with pytest.raises(ValueError, match="unknown serve setting"):
        ServeConfig.from_kwargs(replica=2)


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    from crosswalk.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "error: no model at" in capsys.readouterr().err
    assert main(["serve", "--latency-target-ms", "0"]) == 2
    assert "latency_target_ms" in capsys.readouterr().err
