"""The LoadGen harness and ``crosswalk bench infer``: LoadGen's own logs are kept and read back; the QPS search
bisects; handler failures are counted, not hung on; the whole benchmark runs on a tiny budget end to end."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from crosswalk.bench.infer import InferBenchConfig, _server_breakdown, bench_infer
from crosswalk.bench.loadgen import RunResult, RunSettings, run_loadgen, search_server_qps, summary_validity
from crosswalk.bench.suts import HttpSUT, server_timing
from crosswalk.cli import main


def _busy(indices: list[int]) -> None:
    """A stand-in SUT: a little real work per sample (no sleeps)."""
    for i in indices:
        np.linalg.svd(np.full((24, 24), float(i + 1)) + np.eye(24))


def test_single_stream_reads_validity_and_percentiles_from_loadgen_logs(tmp_path: Path) -> None:
    settings = RunSettings("SingleStream", min_duration_s=0.2, min_query_count=64, expected_latency_ms=0.2)
    result = run_loadgen(_busy, 16, settings, tmp_path / "ss")

    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        assert (tmp_path / "ss" / name).is_file()
    assert result.validity == summary_validity(tmp_path / "ss")  # detail and summary agree
    assert result.detail["result_query_count"] == len(result.latencies_ms) >= 64
    p50, p90 = result.percentile_ms("50.00"), result.percentile_ms("90.00")
    assert 0 < p50 <= p90
    # LoadGen's own percentile and the SUT's timestamps measure the same queries
    assert np.percentile(result.latencies_ms, 50) == pytest.approx(p50, rel=0.5, abs=0.5)


def test_a_failing_handler_is_counted_and_loadgen_still_finishes(tmp_path: Path) -> None:
    def flaky(indices: list[int]) -> None:
        if 3 in indices:
            raise RuntimeError("sample 3 is cursed")
        _busy(indices)

    settings = RunSettings("Offline", min_duration_s=0.1, offline_expected_qps=200)
    result = run_loadgen(flaky, 8, settings, tmp_path / "off", workers=2, max_batch=4)
    assert result.errors > 0
    assert "sample 3 is cursed" in result.first_error
    assert not result.valid
    assert result.errors < len(result.latencies_ms)  # only the batches holding sample 3 failed
    assert result.samples_per_s > 0


def _fake_run(valid: bool) -> RunResult:
    return RunResult("Server", Path("."), "VALID" if valid else "INVALID", {})


def test_qps_search_bisects_towards_the_highest_valid_rate() -> None:
    capacity = 37.0
    probes: list[float] = []

    def probe(qps: float) -> RunResult:
        probes.append(qps)
        return _fake_run(qps <= capacity)

    best, tried = search_server_qps(probe, upper_qps=100.0, probes=7, budget_s=60)
    assert [q for q, _ in tried] == probes and len(probes) == 7
    assert probes[0] == 75.0  # 3/4 of the upper bound first
    assert best <= capacity and capacity - best < 100.0 / 2**6
    assert search_server_qps(lambda q: _fake_run(False), 100.0, probes=3)[0] is None


def test_qps_search_stops_when_its_time_budget_is_spent() -> None:
    best, tried = search_server_qps(lambda q: _fake_run(True), 100.0, probes=10, budget_s=0.0)
    assert len(tried) == 1 and best == 75.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bench_infer_end_to_end_on_a_tiny_budget(tmp_path: Path) -> None:
    """Both systems, all three scenarios, with the benchmark starting (and stopping) a real server."""
    cfg = InferBenchConfig(
        seconds=0.2,
        server_seconds=0.2,
        server_min_queries=16,  # far below what p99 early stopping needs: validity is not the point here
        server_probes=1,
        single_stream_min_queries=16,
        frames=4,
        max_batch=2,
        threads=1,
        http_clients=2,
        server_latency_target_ms=2000.0,  # no load shedding, however busy the shared machine is
    )
    out = tmp_path / "bench" / "infer.json"
    result = bench_infer(out, cfg, progress=False)

    assert json.loads(out.read_text()) == result
    assert (out.parent / result["latency_histogram"]).stat().st_size > 0
    for key in (
        "runtime_p50_ms",
        "runtime_p90_ms",
        "server_p50_ms",
        "batch1_images_per_s",
        "batched_images_per_s",
    ):
        assert result[key] > 0, key
    assert result["overhead_ms"] == pytest.approx(
        result["server_p50_ms"] - result["runtime_p50_ms"], abs=1e-3
    )
    assert result["batching_gain"] == pytest.approx(
        result["batched_images_per_s"] / result["batch1_images_per_s"], rel=1e-2
    )
    assert result["runtime_network_only_p50_ms"] <= result["runtime_p50_ms"]
    # the server's own Server-Timing parts of each SingleStream request, and what is left for HTTP and co.
    parts = result["server_timing_p50_ms"]
    assert parts["client"] > 0 and parts["compute"] > 0 and parts["decode"] > 0 and parts["queue"] >= 0
    assert 0 < result["overhead_paired_ms"] < parts["client"]
    assert result["server_info"]["source"].startswith("started")
    # every run kept its LoadGen logs, and the JSON's validity is LoadGen's
    runs = result["runs"]
    assert {(r["system"], r["scenario"]) for r in runs} == {
        (s, sc) for s in ("runtime", "server") for sc in ("SingleStream", "Offline", "Server")
    }
    for run in runs:
        log_dir = out.parent / run["log_dir"]
        assert run["loadgen_validity"] == summary_validity(log_dir)
        assert run["errors"] == 0, run["first_error"]
    reported = [r for r in runs if r["role"] == "reported"]
    assert result["valid"] == (
        all(r["valid"] for r in reported)
        and None not in (result["server_max_qps"], result["runtime_max_qps"])
    )


def test_cli_fails_in_one_line_when_no_server_answers(tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code = main(["bench", "infer", "--url", url, "--systems", "server", "--json", str(tmp_path / "b.json")])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: no server answers at {url}")


def test_http_sut_reconnects_once_when_the_server_dropped_an_idle_connection() -> None:
    """Servers close idle keep-alive connections (uvicorn after 5 s); the next request must not fail for it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the client reuses its connection

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            body = b'{"detections": []}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True  # drop it without saying so, as an idle timeout does

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sut = HttpSUT(f"http://127.0.0.1:{server.server_address[1]}", [b"\xff\xd8 not really a jpeg"])
    try:
        for _ in range(3):
            assert sut.detect(0) == {"detections": []}
    finally:
        sut.close()
        server.shutdown()
        server.server_close()


def test_server_timing_header_parses_into_milliseconds() -> None:
    header = 'decode;dur=1.250, queue;dur=0.1, cache;desc="hit", compute;dur=17.5, bad;dur=x'
    assert server_timing(header) == {"decode": 1.25, "queue": 0.1, "compute": 17.5}
    assert server_timing(None) == {}


def test_paired_overhead_is_each_requests_client_time_less_its_own_decode_and_compute() -> None:
    # three requests on a host whose speed changed: each pays about 2 ms of HTTP on top of its own work
    timings = [
        (22.0, {"decode": 1.0, "queue": 0.2, "compute": 19.0}),
        (32.5, {"decode": 1.5, "queue": 0.3, "compute": 29.0}),
        (21.0, {"decode": 1.0, "queue": 0.1, "compute": 18.0}),
        (5.0, {}),  # no Server-Timing (another server): left out
    ]
    out = _server_breakdown(timings)
    assert out["overhead_paired_ms"] == pytest.approx(2.0)  # median of 2.0, 2.0, 2.0
    assert out["server_timing_p50_ms"]["http_and_handoffs"] == pytest.approx(1.8)  # of 1.8, 1.7, 1.9
    assert _server_breakdown([(5.0, {})]) == {"overhead_paired_ms": None, "server_timing_p50_ms": None}
