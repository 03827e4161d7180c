"""A small MLPerf LoadGen harness: in-memory samples, three kinds of SUT, and LoadGen's own logs read back.

LoadGen (``mlcommons-loadgen``, imported as ``mlperf_loadgen``) owns the clock, the arrival process (Poisson in
Server), the percentiles and the pass/fail rules (early stopping). This module only hands it samples and
answers its queries; every figure it returns comes from LoadGen's ``mlperf_log_detail.txt`` (the ``:::MLLOG``
JSON lines), never from our own timers. Our timers only add what LoadGen does not log: per-sample latencies
for the histogram and, through the handler, extra timings such as network-only time.

A SUT is one ``handle(indices) -> None`` function that processes a list of QSL indices (a batch), run in one
of two ways (both are the usual shapes of LoadGen's Python reference harnesses, e.g. the vision harness's
``RunnerBase`` and ``QueueRunner`` in mlcommons/inference ``vision/classification_and_detection/python/main.py``):

- ``workers=0``: inline. The query is answered on LoadGen's issue thread before ``issue_queries`` returns. This
  is the lowest-overhead path for SingleStream, where exactly one query is ever outstanding.
- ``workers=N``: N threads take samples from a queue; each takes what is waiting, up to ``max_batch``, so
  batches form under load and never wait for stragglers (greedy batching; no delay window).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SCENARIOS = ("SingleStream", "Server", "Offline")
# LoadGen's p99 early-stopping estimate needs at least this many queries with none over the bound
# (0.99^n <= 0.01 at 99% confidence gives 459; measured: a 288-query Server run was told "~171 more").
P99_EARLY_STOPPING_MIN_QUERIES = 460
PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")


@dataclass
class RunSettings:
    """What one LoadGen run is asked to do. Units in the names; LoadGen itself wants ns and ms integers."""

    scenario: str
    min_duration_s: float = 2.0
    min_query_count: int = 100
    expected_latency_ms: float = 5.0  # SingleStream: LoadGen's guess of the first queries' pace
    offline_expected_qps: float = 100.0  # Offline: LoadGen issues 1.1 x this x min_duration samples
    server_target_qps: float = 10.0
    server_p99_bound_ms: float = 50.0
    max_duration_s: float = 0.0  # 0 = no cap


@dataclass
class RunResult:
    """One LoadGen run: its verdict and figures from the detail log, plus our per-sample timestamps."""

    scenario: str
    log_dir: Path
    validity: str  # LoadGen's "VALID" / "INVALID"
    detail: dict  # every result_* and early_stopping_* key of mlperf_log_detail.txt
    latencies_ms: list[float] = field(default_factory=list)  # issue -> complete, per sample, from the SUT
    errors: int = 0  # samples the handler failed (LoadGen still gets an answer, so it never hangs)
    first_error: str | None = None
    settings: RunSettings | None = None

    @property
    def valid(self) -> bool:
        return self.validity == "VALID" and self.errors == 0

    def percentile_ms(self, pct: str) -> float | None:
        value = self.detail.get(f"result_{pct}_percentile_latency_ns")
        return None if value is None else value / 1e6

    @property
    def samples_per_s(self) -> float | None:
        """LoadGen's throughput figure for the scenario: SingleStream QPS without LoadGen's own overhead,
        Offline samples/s, Server completed samples/s."""
        for key in (
            "result_samples_per_second",
            "result_completed_samples_per_sec",
            "result_qps_without_loadgen_overhead",
        ):
            if key in self.detail:
                return float(self.detail[key])
        return None


def read_detail_log(log_dir: str | Path) -> dict:
    """All ``:::MLLOG`` entries of LoadGen's detail log, as ``{key: value}`` (the last one wins)."""
    entries = {}
    with open(Path(log_dir) / "mlperf_log_detail.txt", encoding="utf-8") as f:
        for line in f:
            if line.startswith(":::MLLOG "):
                record = json.loads(line[len(":::MLLOG ") :])
                entries[record["key"]] = record["value"]
    return entries


def summary_validity(log_dir: str | Path) -> str | None:
    """The "Result is : VALID" line of ``mlperf_log_summary.txt`` (a cross-check of the detail log)."""
    for line in (Path(log_dir) / "mlperf_log_summary.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("Result is"):
            return line.split(":", 1)[1].strip()
    return None


def _test_settings(lg, s: RunSettings):
    if s.scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {s.scenario!r}")
    t = lg.TestSettings()
    t.scenario = getattr(lg.TestScenario, s.scenario)
    t.mode = lg.TestMode.PerformanceOnly
    t.min_duration_ms = int(s.min_duration_s * 1000)
    t.min_query_count = int(s.min_query_count)
    if s.max_duration_s:
        t.max_duration_ms = int(s.max_duration_s * 1000)
    t.single_stream_expected_latency_ns = int(s.expected_latency_ms * 1e6)
    t.offline_expected_qps = float(s.offline_expected_qps)
    t.server_target_qps = float(s.server_target_qps)
    t.server_target_latency_ns = int(s.server_p99_bound_ms * 1e6)
    t.server_target_latency_percentile = 0.99
    return t


def run_loadgen(
    handle: Callable[[list[int]], None],
    sample_count: int,
    settings: RunSettings,
    log_dir: str | Path,
    *,
    workers: int = 0,
    max_batch: int = 1,
) -> RunResult:
    """Run one LoadGen test of ``handle`` over a QSL of ``sample_count`` in-memory samples; keep its logs.

    ``handle(indices)`` processes QSL indices (already in memory: LoadGen's load/unload calls are no-ops) and
    returns when they are done; this function answers LoadGen for them. An exception in ``handle`` counts
    as an error for those samples and is kept as ``first_error``: the query is still answered, so LoadGen
    finishes instead of waiting forever."""
    import mlperf_loadgen as lg

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    issued_ns: dict[int, int] = {}
    latencies_ms: list[float] = []
    errors = [0, None]
    lock = threading.Lock()

    def process(samples: Sequence) -> None:
        try:
            handle([s.index for s in samples])
        except Exception as e:  # isolate failures per query; counted and reported, never swallowed
            with lock:
                errors[0] += len(samples)
                errors[1] = errors[1] or f"{type(e).__name__}: {e}"
        done_ns = time.perf_counter_ns()
        with lock:
            for s in samples:
                latencies_ms.append((done_ns - issued_ns.pop(s.id)) / 1e6)
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    work: queue.Queue = queue.Queue()

    def worker() -> None:
        while True:
            first = work.get()
            if first is None:
                work.put(None)  # one stop signal, passed on to every worker
                return
            batch = [first]
            while len(batch) < max_batch:
                try:
                    nxt = work.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    work.put(None)
                    break
                batch.append(nxt)
            process(batch)

    def issue_queries(samples) -> None:
        now = time.perf_counter_ns()
        with lock:
            for s in samples:
                issued_ns[s.id] = now
        if workers == 0:
            process(samples)
        else:
            for s in samples:
                work.put(s)

    threads = [threading.Thread(target=worker, daemon=True, name=f"sut-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    sut = lg.ConstructSUT(issue_queries, lambda: None)
    qsl = lg.ConstructQSL(sample_count, sample_count, lambda indices: None, lambda indices: None)
    try:
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(log_dir)
        log_settings.enable_trace = False
        lg.StartTestWithLogSettings(sut, qsl, _test_settings(lg, settings), log_settings)
    finally:
        work.put(None)
        for t in threads:
            t.join(timeout=30)
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    detail = read_detail_log(log_dir)
    keep = {k: v for k, v in detail.items() if k.startswith(("result_", "early_stopping_"))}
    validity = str(detail.get("result_validity", summary_validity(log_dir) or "UNKNOWN"))
    return RunResult(settings.scenario, log_dir, validity, keep, latencies_ms, errors[0], errors[1], settings)


def search_server_qps(
    probe: Callable[[float], RunResult],
    upper_qps: float,
    *,
    probes: int = 5,
    budget_s: float = 60.0,
    first_fraction: float = 0.75,
    lower_fraction: float = 0.05,
) -> tuple[float | None, list[tuple[float, RunResult]]]:
    """Bisect for the highest Poisson rate whose Server run LoadGen calls VALID (p99 within its bound).

    ``upper_qps`` should be a capacity no Server run can exceed (the Offline throughput of the same SUT). The
    first probe is at ``first_fraction`` of it (3/4: with a p99 bound much longer than one batch the answer is
    usually high, and a pass there leaves the remaining probes to refine upwards). Stops after ``probes`` runs or once
    ``budget_s`` is spent. Returns the best valid rate (None if no probe passed) and every probe."""
    lo, hi = lower_fraction * upper_qps, upper_qps
    best: float | None = None
    tried: list[tuple[float, RunResult]] = []
    start = time.perf_counter()
    qps = first_fraction * upper_qps
    for _ in range(probes):
        result = probe(qps)
        tried.append((qps, result))
        if result.valid:
            best = qps if best is None else max(best, qps)
            lo = qps
        else:
            hi = qps
        if time.perf_counter() - start > budget_s:
            break
        qps = (lo + hi) / 2
    return best, tried
