"""A real ``crosswalk serve`` (the reference model on ONNX Runtime, 1 thread per replica) on loopback:
tritonclient over OIP v2, overload, deadlines, a replica killed with SIGKILL, and SIGTERM draining.

Two servers for the module (start-up is most of the cost): one replica for the protocol, deadline and
overload tests, two replicas for the kill and drain tests; the drain test stops the second, so it runs last.
One replica for overload because on two cores two replicas would take both for compute, and the load
generator and the 503 path would then steal from compute, measuring the machine rather than the policy.
The latency target is 300 ms so that a noisy shared machine still measures the policy, not the noise;
every bound below is relative to that configured target, as the acceptance asks.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from crosswalk.infer.image import decode
from crosswalk.scenes.render import render_frame
from crosswalk.serve import running_server
from crosswalk.serve.demo import offer_load, run_serve_demo

TARGET_MS = 300.0
REPLICAS = 2
JPEG = render_frame(1, 3)[0]  # 512x288; the reference model finds a vehicle in it


def start(replicas: int, target_ms: float):
    processes = []
    with running_server(
        replicas=replicas,
        threads=1,
        latency_target_ms=target_ms,
        max_batch=4,
        drain_timeout_s=20,
        process=processes,
    ) as url:
        yield url, processes[0]


@pytest.fixture(scope="module")
def server():
    yield from start(1, TARGET_MS)


@pytest.fixture(scope="module")
def replicated():
    # No shedding here: these tests are about crashes and draining. The drain test queues 64 images on two
    # 1-thread replicas, estimated at 4.2 s of work when this host was slow (503s under a 5 s target).
    yield from start(REPLICAS, 60_000.0)


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def worker_pids(process) -> dict[int, int]:
    """Replica index -> pid of its current process, from the supervisor's "replica i started (pid N)" lines."""
    pids = {}
    for line in list(process.lines):
        match = re.search(r"replica (\d+) started \(pid (\d+)\)", line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def detect(client: httpx.Client, url: str, **headers) -> httpx.Response:
    return client.post(url + "/v1/detect", content=JPEG, headers={"content-type": "image/jpeg", **headers})


def test_tritonclient_json_and_binary(server):
    url, _ = server
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("crosswalk")
    assert client.get_model_metadata("crosswalk")["inputs"][0]["name"] == "images"
    names = ["boxes", "scores", "labels", "num_detections"]

    images = triton.InferInput("images", [1], "BYTES")  # binary tensor data: the encoded frame
    images.set_data_from_numpy(np.array([JPEG], dtype=object), binary_data=True)
    binary = client.infer(
        "crosswalk", [images], outputs=[triton.InferRequestedOutput(n, binary_data=True) for n in names]
    )

    pixels = triton.InferInput("pixels", [1, 288, 512, 3], "UINT8")  # plain JSON: the decoded frame
    pixels.set_data_from_numpy(decode(JPEG)[None], binary_data=False)
    plain = client.infer(
        "crosswalk", [pixels], outputs=[triton.InferRequestedOutput(n, binary_data=False) for n in names]
    )

    n = int(binary.as_numpy("num_detections")[0])
    assert n >= 1 and int(plain.as_numpy("num_detections")[0]) == n
    np.testing.assert_allclose(plain.as_numpy("boxes"), binary.as_numpy("boxes"), atol=1e-3)
    np.testing.assert_array_equal(plain.as_numpy("labels"), binary.as_numpy("labels"))
    with httpx.Client() as c:
        plain_json = detect(c, url).json()["detections"]
    assert [d["label"] for d in plain_json] == binary.as_numpy("labels")[0].tolist()
    np.testing.assert_allclose([d["box"] for d in plain_json], binary.as_numpy("boxes")[0], atol=1e-3)
    stats = client.get_inference_statistics("crosswalk")["model_stats"][0]
    assert stats["inference_count"] >= 3 and int(stats["inference_stats"]["compute_infer"]["ns"]) > 0


def test_expired_deadlines_cost_no_compute(server):
    url, _ = server
    computed = metric(url, "crosswalk_images_computed_total")
    expired = metric(url, "crosswalk_expired_total", '{stage="admission"}')
    with httpx.Client() as c:
        for _ in range(5):
            r = detect(c, url, **{"x-request-timeout-ms": "0.5"})  # shorter than any compute
            assert r.status_code == 504 and "deadline" in r.json()["error"]
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    images = triton.InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(np.array([JPEG], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException, match="deadline"):
        client.infer("crosswalk", [images], timeout=1)  # OIP "timeout" parameter: 1 us
    assert metric(url, "crosswalk_images_computed_total") == computed
    assert metric(url, "crosswalk_expired_total", '{stage="admission"}') == expired + 6


def test_overload_sheds_fast_and_keeps_accepted_latency_within_twice_the_target(server):
    url, _ = server
    with httpx.Client() as c:
        for _ in range(6):
            assert detect(c, url).status_code == 200
    per_image_s = metric(url, "crosswalk_compute_latency_seconds_sum") / metric(
        url, "crosswalk_compute_latency_seconds_count"
    )
    capacity_per_s = 1 / per_image_s
    rate = min(3 * capacity_per_s, 400.0)  # 3x what the replica can compute (capped for the load generator)
    results = offer_load(url, JPEG, rate, seconds=2.0)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    statuses = {status for status, _, _ in results}
    assert statuses <= {200, 503}, statuses
    accepted = sorted(t for status, t, _ in results if status == 200)
    shed = sorted(t for status, t, _ in results if status == 503)
    assert accepted and shed, (
        f"offered {rate:.0f}/s against ~{capacity_per_s:.0f}/s: {len(accepted)} ok, {len(shed)} shed"
    )
    p99_ms = 1e3 * accepted[min(len(accepted) - 1, int(0.99 * len(accepted)))]
    assert p99_ms <= 2 * TARGET_MS, f"accepted p99 {p99_ms:.0f} ms over 2x the {TARGET_MS:.0f} ms target"
    assert all(retry is not None for status, _, retry in results if status == 503)
    shed_p50_ms = 1e3 * shed[len(shed) // 2]
    assert shed_p50_ms < TARGET_MS / 3, f"rejects took {shed_p50_ms:.0f} ms (median): not immediate"
    assert httpx.get(url + "/v2/health/ready").status_code == 200


def test_replica_killed_under_load_leaves_no_hung_request_and_is_replaced(replicated):
    url, process = replicated
    before = worker_pids(process)
    assert len(before) == REPLICAS
    stop = threading.Event()
    outcomes: list[tuple[str, float]] = []

    def load() -> None:
        with httpx.Client(timeout=15) as c:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    outcome = str(detect(c, url).status_code)
                except httpx.TimeoutException:
                    outcome = "hung"
                except httpx.TransportError as e:  # the killed replica's connections are reset
                    outcome = type(e).__name__
                outcomes.append((outcome, time.perf_counter() - start))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    replaced_s = None
    with httpx.Client(timeout=2) as c:
        while time.monotonic() - killed_at < 20:
            replaced = worker_pids(process)[0] != victim
            if replaced and c.get(url + "/v2/health/ready").json()["replicas_ready"] == REPLICAS:
                replaced_s = time.monotonic() - killed_at
                break
            time.sleep(0.05)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert replaced_s is not None and replaced_s <= 5.0, f"replica replaced after {replaced_s} s"
    kinds = {outcome for outcome, _ in outcomes}
    assert "hung" not in kinds and "200" in kinds, kinds
    assert kinds <= {"200", "503", "RemoteProtocolError", "ReadError", "ConnectError", "WriteError"}, kinds
    assert max(seconds for _, seconds in outcomes) < 10


def test_sigterm_drains_in_flight_requests_then_exits(replicated):
    url, process = replicated
    images = triton.InferInput("images", [16], "BYTES")
    images.set_data_from_numpy(np.array([JPEG] * 16, dtype=object), binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([images])
    responses: list[httpx.Response] = []

    def infer() -> None:
        headers = {"Inference-Header-Content-Length": str(json_size)}
        responses.append(
            httpx.post(url + "/v2/models/crosswalk/infer", content=body, headers=headers, timeout=30)
        )

    threads = [threading.Thread(target=infer) for _ in range(4)]  # 64 images
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while metric(url, "crosswalk_in_flight_requests") < 3 and time.monotonic() < deadline:
        time.sleep(0.002)  # (the /metrics request counts itself)
    assert len(responses) < 4, "all answered before SIGTERM: nothing left to drain"
    process.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    for r in responses:
        result = triton.InferenceServerClient.parse_response_body(
            r.content, header_length=int(r.headers["inference-header-content-length"])
        )
        counts = result.as_numpy("num_detections").tolist()
        assert counts == [counts[0]] * 16 and counts[0] >= 1
    assert process.proc.wait(30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v2/health/live")


def test_serve_demo_writes_its_summary(tmp_path):
    summary = run_serve_demo(tmp_path, requests=10)
    assert summary["detections_in_frame"] >= 1 and summary["overload"]["accepted"] >= 1
    assert summary["overload"]["errors"] == 0 and summary["replica_replaced_s"] is not None
    assert (tmp_path / "serve.json").is_file()
