"""``crosswalk bench infer``: latency, throughput and the Server-scenario capacity, measured by MLPerf LoadGen.

Two systems under test on the same in-memory JPEGs of generated frames (``crosswalk.scenes.render_frame``):

- ``runtime``: ``crosswalk.infer.Predictor`` in this process. SingleStream answers each query on LoadGen's
  thread with the whole per-image path (JPEG decode + letterbox + network + postprocess/NMS), batch 1.
  Offline and Server hand samples to worker threads that each take whatever is waiting, up to ``max_batch``,
  so one batch's decode and NMS overlap the next one's network.
- ``server``: the HTTP server, ``POST /v1/detect`` with the JPEG bytes, one keep-alive connection per client
  thread (never a new client per request: that costs ~20 ms, env.md sec. 7; see ``HttpSUT``). ``--url``
  points at a running server; without it the benchmark starts one with ``crosswalk.serve.running_server``
  and stops it afterwards.

Per system, three scenarios (MLPerf's rules, serving.md sec. 3.1): SingleStream (one query at a time: the
latency a lone camera sees), Offline (all samples at once: throughput) and Server (Poisson arrivals: the highest
rate whose p99 stays within ``p99_ms``, found by bisection between 0 and the Offline throughput, each probe a
full LoadGen run judged by LoadGen's early-stopping rule). LoadGen's logs stay under the JSON's folder, in
``loadgen/<system>/<scenario>[/<probe>]``, and every latency and rate in the JSON is read back from them.

Headline keys: ``runtime_p50_ms``/``runtime_p90_ms`` (SingleStream, runtime), ``server_p50_ms`` (SingleStream,
HTTP), ``overhead_ms`` = server p50 - runtime p50 (what HTTP, JSON and the server's queue add),
``batch1_images_per_s`` (runtime SingleStream rate) and ``batched_images_per_s`` (runtime Offline at
``max_batch``), ``batching_gain`` = their ratio, ``server_max_qps`` (HTTP Server scenario), ``p99_bound_ms``,
and ``valid``: every reported LoadGen run (the SingleStream and Offline runs, and the Server run at each
reported max QPS) says VALID and had no failed request. Search probes above the max are INVALID by design;
they are listed in ``runs`` with ``role: "search"`` and do not count.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from crosswalk.bench.infer_plots import plot_latency_histogram, print_summary
from crosswalk.bench.loadgen import (
    P99_EARLY_STOPPING_MIN_QUERIES,
    RunResult,
    RunSettings,
    run_loadgen,
    search_server_qps,
)
from crosswalk.bench.suts import HttpSUT, RuntimeSUT

SYSTEMS = ("runtime", "server")
CALIBRATION_CALLS = 4  # single-image calls before the runs: warm-up, and LoadGen's expected latency


@dataclass(frozen=True)
class InferBenchConfig:
    seconds: float = 3.0  # LoadGen min_duration of each SingleStream and Offline run
    server_seconds: float = 3.0  # min_duration of each Server probe
    server_min_queries: int = 600  # >= 460, so that LoadGen's p99 early stopping can pass
    server_max_seconds: float = 0.0  # cap per Server probe (0 = none); cut short of queries = INVALID
    server_probes: int = 4  # bisection steps per system
    # Per system: the last probe is cut short at it, then the search stops. A probe at a low rate needs
    # server_min_queries / rate seconds (600 at 13 QPS: 46 s); 45 s cut such probes short (INVALID: "min
    # queries satisfied: NO") although their p99 met the bound, measured here.
    search_budget_s: float = 120.0
    first_probe_fraction: float = 0.75  # of the Offline throughput
    single_stream_min_queries: int = 256
    max_batch: int = 8
    p99_ms: float = 50.0
    frames: int = 32  # QSL size: distinct JPEGs held in memory
    seed: int = 7  # frames are render_frame(seed, 0..frames-1)
    threads: int | None = None  # runtime threads; None = all cores
    backend: str = "onnxruntime"
    runtime_workers: int = 2  # runtime Offline/Server threads (see RuntimeSUT)
    http_clients: int = 8  # client threads for Offline and Server over HTTP
    # The started server's --latency-target-ms. Its admission control answers 503 at once to requests it
    # predicts would miss the target; a shed query counts as failed here. What is measured is latency under
    # load, judged by LoadGen against p99_ms, so the server is told to queue rather than shed (on a busy
    # machine serve's default of 100 ms shed most of an 8-client Offline run: its estimate was ~13 ms/image).
    server_latency_target_ms: float = 1000.0
    systems: tuple[str, ...] = SYSTEMS

    def __post_init__(self) -> None:
        unknown = set(self.systems) - set(SYSTEMS)
        if unknown or not self.systems:
            raise ValueError(f"systems must be a non-empty subset of {SYSTEMS}, got {self.systems}")
        if self.max_batch < 1 or self.frames < 1 or self.p99_ms <= 0:
            raise ValueError("max_batch and frames must be >= 1 and p99_ms > 0")

    @classmethod
    def quick(cls, **overrides) -> InferBenchConfig:
        """A few seconds per system (the demo and tests): one Server probe, still long enough to be VALID."""
        base = cls(
            seconds=1.0,
            server_seconds=1.0,
            server_min_queries=P99_EARLY_STOPPING_MIN_QUERIES,
            server_max_seconds=8.0,
            server_probes=1,
            first_probe_fraction=0.5,
            single_stream_min_queries=64,
            frames=8,
        )
        return replace(base, **overrides)


# ---- the benchmark ------------------------------------------------------------------------------------


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _run_record(system: str, role: str, result: RunResult, base: Path, **extra) -> dict:
    return {
        "system": system,
        "scenario": result.scenario,
        "role": role,
        "valid": result.valid,
        "loadgen_validity": result.validity,
        "samples_per_s": None if result.samples_per_s is None else round(result.samples_per_s, 2),
        "p50_ms": _ms(result.percentile_ms("50.00")),
        "p90_ms": _ms(result.percentile_ms("90.00")),
        "p99_ms": _ms(result.percentile_ms("99.00")),
        "queries": result.detail.get("result_query_count"),
        "early_stopping_met": result.detail.get("early_stopping_met"),
        "errors": result.errors,
        "first_error": result.first_error,
        "log_dir": str(result.log_dir.relative_to(base)),
        **extra,
    }


def _check_reachable(url: str) -> None:
    """Any HTTP answer will do; fail fast and clearly if nothing listens (ConnectionError)."""
    import httpx

    try:
        httpx.get(url, timeout=10.0)
    except httpx.TransportError as e:
        raise ConnectionError(f"no server answers at {url}: {e}") from e


@contextlib.contextmanager
def _server(url: str | None, model, cfg: InferBenchConfig) -> Iterator[tuple[str, str]]:
    """Yield (url, source): the given URL, or a server started here for the duration of the benchmark."""
    if url is not None:
        _check_reachable(url)
        yield url, "url"
        return
    from crosswalk.serve import running_server

    with running_server(
        model=model,
        max_batch=cfg.max_batch,
        latency_target_ms=cfg.server_latency_target_ms,
        threads=cfg.threads,
        backend=cfg.backend,
    ) as started:
        yield started, "started by the benchmark (crosswalk.serve.running_server)"


def _measure_system(
    system: str,
    single: Callable[[list[int]], None],
    batched: Callable[[list[int]], None],
    workers: int,
    max_batch: int,
    cfg: InferBenchConfig,
    base: Path,
    say: Callable[..., None],
) -> tuple[dict[str, RunResult], dict[str, RunResult], float | None, list[dict]]:
    """SingleStream, Offline, then the Server search, for one system. Returns the reported runs by scenario
    (Server = the run at the max QPS), the runs to plot (the same, or the lowest-rate probe when none passed),
    the max QPS and every run's record."""
    n = cfg.frames
    logs = base / "loadgen" / system
    # Calibrate LoadGen's expectations (and warm caches and connections): a few single and batched calls.
    t0 = time.perf_counter()
    for i in range(CALIBRATION_CALLS):
        single([i % n])
    single_ms = (time.perf_counter() - t0) / CALIBRATION_CALLS * 1e3
    t0 = time.perf_counter()
    batch = [i % n for i in range(2 * max_batch)]
    batched(batch)
    batched_per_s = len(batch) / (time.perf_counter() - t0)

    records: list[dict] = []
    reported: dict[str, RunResult] = {}
    ss = run_loadgen(
        single,
        n,
        RunSettings(
            "SingleStream",
            min_duration_s=cfg.seconds,
            min_query_count=cfg.single_stream_min_queries,
            expected_latency_ms=single_ms,
        ),
        logs / "SingleStream",
    )
    reported["SingleStream"] = ss
    records.append(_run_record(system, "reported", ss, base))
    say(f"{system:8s} SingleStream  {ss.validity:7s} p50 {ss.percentile_ms('50.00'):.2f} ms")

    # Offline issues 1.1 x expected_qps x min_duration samples; a run that finishes early is INVALID, so the
    # guess is 1.5x the calibration (the run then lasts ~1.65x min_duration if the guess was right). If it
    # still ends too soon (the calibration ran on a busier moment), one rerun with 1.5x the measured rate.
    expected_qps = 1.5 * batched_per_s
    for _ in range(2):
        off = run_loadgen(
            batched,
            n,
            RunSettings("Offline", min_duration_s=cfg.seconds, offline_expected_qps=expected_qps),
            logs / "Offline",
            workers=workers,
            max_batch=max_batch,
        )
        if off.detail.get("result_min_duration_met", True) or off.errors or not off.samples_per_s:
            break
        expected_qps = 1.5 * off.samples_per_s
    reported["Offline"] = off
    records.append(_run_record(system, "reported", off, base))
    say(f"{system:8s} Offline       {off.validity:7s} {off.samples_per_s:.1f} images/s")

    search_end = time.perf_counter() + cfg.search_budget_s

    def probe(qps: float) -> RunResult:
        # A probe at a low rate needs long to reach its query count; none runs past the search's budget
        # (LoadGen then ends it short of queries: INVALID), nor past server_max_seconds when that is set.
        max_s = max(cfg.server_seconds, search_end - time.perf_counter())
        if cfg.server_max_seconds:
            max_s = min(max_s, cfg.server_max_seconds)
        result = run_loadgen(
            batched,
            n,
            RunSettings(
                "Server",
                min_duration_s=cfg.server_seconds,
                min_query_count=cfg.server_min_queries,
                server_target_qps=qps,
                server_p99_bound_ms=cfg.p99_ms,
                max_duration_s=max_s,
            ),
            logs / "Server" / f"qps_{qps:.1f}",
            workers=workers,
            max_batch=max_batch,
        )
        say(
            f"{system:8s} Server {qps:7.1f} qps {result.validity:7s} p99 {result.percentile_ms('99.00'):.2f} ms"
            + (f" ({result.errors} errors: {result.first_error})" if result.errors else "")
        )
        return result

    # The search's upper bound: the Offline throughput, unless failed (fast) answers inflated it.
    capacity = off.samples_per_s if off.samples_per_s and not off.errors else batched_per_s
    best, tried = search_server_qps(
        probe,
        capacity,
        probes=cfg.server_probes,
        first_fraction=cfg.first_probe_fraction,
        budget_s=cfg.search_budget_s,
    )
    for qps, result in tried:
        role = "reported" if qps == best else "search"
        records.append(_run_record(system, role, result, base, target_qps=round(qps, 2)))
        if qps == best:
            reported["Server"] = result
    plotted = dict(reported)
    if "Server" not in plotted and tried:
        plotted["Server"] = min(tried, key=lambda t: t[0])[1]
    return reported, plotted, best, records


def bench_infer(
    json_out: str | Path,
    cfg: InferBenchConfig = InferBenchConfig(),
    model: str | Path | None = None,
    url: str | None = None,
    progress: bool = True,
) -> dict:
    """Run the LoadGen scenarios on the runtime and the HTTP server; return the result dict.

    Writes ``json_out``, and beside it ``<stem>_latency.png`` and ``loadgen/`` (every run's LoadGen logs,
    replacing an earlier run's). ``model`` is any folder ``Predictor`` accepts (None = the reference model);
    ``url`` is a running server's base URL (None = start one with the same model and ``max_batch`` for the
    duration of the benchmark). Raises ConnectionError at once if nothing answers at ``url``."""
    from crosswalk.infer import Predictor
    from crosswalk.scenes import render_frame

    say = print if progress else (lambda *a, **k: None)
    if url is not None and "server" in cfg.systems:
        _check_reachable(url)
    load_before = os.getloadavg()[0]
    json_out = Path(json_out)
    base = json_out.parent
    base.mkdir(parents=True, exist_ok=True)
    if (base / "loadgen").exists():
        shutil.rmtree(base / "loadgen")  # keep only this run's logs beside its JSON
    jpegs = [render_frame(cfg.seed, i)[0] for i in range(cfg.frames)]

    records: list[dict] = []
    reported: dict[str, dict[str, RunResult]] = {}
    plotted: dict[str, dict[str, RunResult]] = {}
    max_qps: dict[str, float | None] = {}
    result: dict = {}
    network_ms: list[float] = []
    server_timings: list[tuple[float, dict[str, float]]] = []
    started = time.perf_counter()

    if "runtime" in cfg.systems:
        predictor = Predictor(model=model, backend=cfg.backend, threads=cfg.threads)
        sut = RuntimeSUT(predictor, jpegs)
        reported["runtime"], plotted["runtime"], max_qps["runtime"], recs = _measure_system(
            "runtime", sut.single, sut.batch, cfg.runtime_workers, cfg.max_batch, cfg, base, say
        )
        records += recs
        result["runtime_info"] = {
            "model": str(predictor.path.name),
            "backend": predictor.backend,
            "providers": list(predictor.providers),
            "threads": predictor.threads,
            "input_size": list(predictor.input_size),
        }
        network_ms = sut.network_ms[CALIBRATION_CALLS:]  # the SingleStream run's calls only
        del predictor, sut  # free its threads and memory before the server starts

    if "server" in cfg.systems:
        with _server(url, model, cfg) as (server_url, source):
            http = HttpSUT(server_url, jpegs)
            try:
                reported["server"], plotted["server"], max_qps["server"], recs = _measure_system(
                    "server", http.single, http.handle, cfg.http_clients, 1, cfg, base, say
                )
            finally:
                http.close()
        server_timings = http.timings[CALIBRATION_CALLS:]  # the SingleStream run's requests only
        records += recs
        result["server_info"] = {
            "url": server_url,
            "source": source,
            "settings": None
            if url is not None
            else {"max_batch": cfg.max_batch, "latency_target_ms": cfg.server_latency_target_ms},
            "client": f"{cfg.http_clients} threads, one keep-alive http.client connection each",
        }

    rt, sv = reported.get("runtime", {}), reported.get("server", {})

    def pct(runs: dict, scenario: str, p: str) -> float | None:
        return _ms(runs[scenario].percentile_ms(p)) if scenario in runs else None

    def rate(runs: dict, scenario: str) -> float | None:
        value = runs[scenario].samples_per_s if scenario in runs else None
        return None if value is None else round(value, 2)

    batch1, batched = rate(rt, "SingleStream"), rate(rt, "Offline")
    runtime_p50, server_p50 = pct(rt, "SingleStream", "50.00"), pct(sv, "SingleStream", "50.00")
    reported_runs = [r for runs in reported.values() for r in runs.values()]
    result = {
        "runtime_p50_ms": runtime_p50,
        "runtime_p90_ms": pct(rt, "SingleStream", "90.00"),
        "runtime_p99_ms": pct(rt, "SingleStream", "99.00"),
        "runtime_network_only_p50_ms": _ms(float(np.percentile(network_ms, 50))) if rt else None,
        "runtime_network_only_p90_ms": _ms(float(np.percentile(network_ms, 90))) if rt else None,
        "server_p50_ms": server_p50,
        "server_p90_ms": pct(sv, "SingleStream", "90.00"),
        "server_p99_ms": pct(sv, "SingleStream", "99.00"),
        "overhead_ms": None if None in (runtime_p50, server_p50) else round(server_p50 - runtime_p50, 3),
        **_server_breakdown(server_timings),
        "batch1_images_per_s": batch1,
        "batched_images_per_s": batched,
        "batching_gain": None if None in (batch1, batched) else round(batched / batch1, 3),
        "server_batch1_images_per_s": rate(sv, "SingleStream"),
        "server_batched_images_per_s": rate(sv, "Offline"),
        "server_max_qps": _round(max_qps.get("server")),
        "server_max_qps_p99_ms": pct(sv, "Server", "99.00"),
        "runtime_max_qps": _round(max_qps.get("runtime")),
        "runtime_max_qps_p99_ms": pct(rt, "Server", "99.00"),
        "p99_bound_ms": cfg.p99_ms,
        "max_batch": cfg.max_batch,
        "valid": bool(reported_runs)
        and all(r.valid for r in reported_runs)
        and all(max_qps.get(s) is not None for s in reported),
        "runs": records,
        **result,
        "definitions": {
            "runtime_p50_ms": "LoadGen SingleStream through the in-process Predictor, per image: JPEG decode "
            "+ letterbox + network + postprocess (NMS), batch 1",
            "runtime_network_only_p50_ms": "Predictor.run alone (the neural network, batch 1), timed by the SUT "
            "during the same SingleStream run",
            "server_p50_ms": "LoadGen SingleStream over HTTP: POST /v1/detect with the JPEG, JSON answer parsed",
            "overhead_paired_ms": "per SingleStream request over HTTP, the client's time minus the server's own "
            "decode and compute of that request (its Server-Timing header), median: what HTTP, JSON, the "
            "queue and the hand-offs add, free of the host's speed changes between the two runs of overhead_ms",
            "server_timing_p50_ms": "medians of the same requests' client time and Server-Timing parts; "
            "http_and_handoffs = client - decode - queue - compute",
            "batched_images_per_s": f"LoadGen Offline through the Predictor, batches of up to {cfg.max_batch}",
            "server_max_qps": f"highest Poisson rate whose LoadGen Server run is VALID at p99 <= {cfg.p99_ms} ms "
            "(bisection between 0 and the Offline throughput)",
            "valid": "every reported LoadGen run is VALID with no failed request (search probes excluded)",
        },
        "frames": {
            "count": cfg.frames,
            "seed": cfg.seed,
            "mean_jpeg_bytes": int(np.mean([len(j) for j in jpegs])),
        },
        "config": {**asdict(cfg), "systems": list(cfg.systems)},
        "loadgen_version": importlib.metadata.version("mlcommons-loadgen"),
        "cpu_cores": len(os.sched_getaffinity(0)),
        # The cores may be shared: the 1-minute load average around the run says how busy the machine was.
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    histogram = base / f"{json_out.stem}_latency.png"
    plot_latency_histogram(plotted, histogram, cfg.p99_ms)
    result["latency_histogram"] = histogram.name
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    if progress:
        print_summary(result)
        say(f"wrote {json_out}, {histogram} and LoadGen logs in {base / 'loadgen'}")
    return result


def _server_breakdown(timings: list[tuple[float, dict[str, float]]]) -> dict:
    """``overhead_paired_ms`` and ``server_timing_p50_ms`` from (client ms, Server-Timing parts) per request;
    None for both when there are none or the server sent no decode and compute parts."""
    parts = ("decode", "queue", "compute")
    rows = [(client, t) for client, t in timings if all(k in t for k in parts)]
    if not rows:
        return {"overhead_paired_ms": None, "server_timing_p50_ms": None}
    client = np.array([c for c, _ in rows])
    server = {k: np.array([t[k] for _, t in rows]) for k in parts}
    p50 = {"client": client, **server, "http_and_handoffs": client - sum(server.values())}
    return {
        "overhead_paired_ms": _ms(float(np.median(client - server["decode"] - server["compute"]))),
        "server_timing_p50_ms": {k: _ms(float(np.median(v))) for k, v in p50.items()},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
