"""Scenarios x speeds, and the maximum inference latency that still avoids a collision in each cell.

Each (scenario, speed) is driven once at the requested latency (measured, or fixed by ``latency_ms``), then,
with the model's detections of every frame cached, replayed at fixed latencies 0, step, 2 step, ... until
the first collision: the cell's maximum safe latency is the last latency before it (every shorter latency
was safe too). A scenario that collides even at 0 ms is unavoidable for this perception stack at that speed
(the frame rate, the tracker's confirmation and the actuation delay remain) and is listed as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .detector import Detector, HttpDetector, InProcessDetector
from .perception import box_ground_point
from .scenario import CONDITIONS, ScenarioSpec, build_world, parse_scenarios
from .sim import DriveConfig, FrameSource, Run, distance_error_summary, simulate

SPEEDS_KMH = (30.0, 50.0, 70.0)


def make_detector(model: str | Path | None = None, via: str = "inproc", min_score: float = 0.05) -> Detector:
    """``via`` is ``inproc`` (crosswalk.infer.Predictor in this process) or the base URL of ``crosswalk serve``."""
    if via == "inproc":
        return InProcessDetector(model, min_score=min_score)
    if via.startswith(("http://", "https://")):
        return HttpDetector(via, min_score=min_score)
    raise ValueError(f"--via must be 'inproc' or a server URL such as http://127.0.0.1:8000, got {via!r}")


def max_safe_latency_ms(
    source: FrameSource, cfg: DriveConfig, step_ms: float, max_ms: float
) -> tuple[float | None, bool]:
    """(largest safe latency on the grid, saturated); (None, False) if it collides even at 0 ms."""
    safe = None
    for latency in np.arange(0.0, max_ms + step_ms / 2, step_ms):
        if simulate(source.world, source, cfg, latency_ms=float(latency)).summary["collision"]:
            return safe, False
        safe = round(float(latency), 3)
    return safe, True


def drive_sweep(
    detector: Detector,
    specs: list[ScenarioSpec],
    speeds_kmh: tuple[float, ...] = SPEEDS_KMH,
    cfg: DriveConfig | None = None,
    latency_ms: float | None = None,
    seed: int = 0,
    sweep: bool = True,
    sweep_step_ms: float = 10.0,
    sweep_max_ms: float = 1500.0,
    progress: Callable[[str], None] | None = print,
) -> tuple[dict, list[tuple[Run, FrameSource]]]:
    """Drive every scenario at every speed; returns the JSON report and the runs (for plots and the GIF).

    With a fixed ``latency_ms`` the report holds no wall-clock figure, so the same seed gives the same JSON."""
    cfg = cfg or DriveConfig()
    runs, rows = [], []
    by_scenario: dict[str, dict[str, float | None]] = {}
    unavoidable, saturated = [], []
    errors_by_condition: dict[str, list] = {c: [] for c in CONDITIONS}
    geometry_by_condition: dict[str, list] = {c: [] for c in CONDITIONS}
    tracked_by_condition: dict[str, list] = {c: [] for c in CONDITIONS}
    for spec in specs:
        for speed in speeds_kmh:
            t0 = time.perf_counter()
            world = build_world(spec, speed, seed=seed)
            source = FrameSource(world, detector, cfg.fps, cfg.tracker.min_score)
            run = simulate(world, source, cfg, latency_ms=latency_ms)
            summary = run.summary
            tracked_by_condition[spec.condition] += run.tracked_errors
            if sweep:
                safe, sat = max_safe_latency_ms(source, cfg, sweep_step_ms, sweep_max_ms)
                summary["max_safe_latency_ms"] = safe
                by_scenario.setdefault(spec.name, {})[_key(speed)] = safe
                if safe is None:
                    unavoidable.append(f"{spec.name}@{_key(speed)}")
                if sat:
                    saturated.append(f"{spec.name}@{_key(speed)}")
            for obs in source.cache.values():
                if obs.match is not None:
                    est = box_ground_point(world.camera, obs.match["box"])[1]
                    errors_by_condition[spec.condition].append((obs.truth_distance_m, est))
                    # The same geometry on the simulator's own box: what is left is the ground-plane model's.
                    est = box_ground_point(world.camera, obs.truth_box)[1]
                    geometry_by_condition[spec.condition].append((obs.truth_distance_m, est))
            rows.append(summary)
            runs.append((run, source))
            if progress:
                progress(f"{_row(summary)}  ({time.perf_counter() - t0:.1f} s)")
    report = {
        "model": None,
        "via": getattr(detector, "name", "detector").split(":")[0],
        "seed": seed,
        "fps": cfg.fps,
        "latency_mode": "measured" if latency_ms is None else "fixed",
        "latency_ms": latency_ms,
        "config": asdict(cfg),
        "scenarios": rows,
        # Over every frame the detector saw (all of them once the sweep ran), where it found the pedestrian:
        # the estimate from the detector's box, and from the true box (the geometry's own error).
        "distance_error_by_condition": {
            c: distance_error_summary(e) for c, e in errors_by_condition.items() if e
        },
        "distance_error_truth_box_by_condition": {
            c: distance_error_summary(e) for c, e in geometry_by_condition.items() if e
        },
        # The tracks' estimates in the drives themselves (frames the detector processed before the decision).
        "distance_error_tracked_by_condition": {
            c: distance_error_summary(e) for c, e in tracked_by_condition.items() if e
        },
    }
    if sweep:
        cells: dict[str, dict[str, float | None]] = {}
        for speed in speeds_kmh:
            for cond in dict.fromkeys(s.condition for s in specs):
                values = [
                    by_scenario[s.name][_key(speed)]
                    for s in specs
                    if s.condition == cond and by_scenario[s.name][_key(speed)] is not None
                ]
                cells.setdefault(_key(speed), {})[cond] = min(values) if values else None
        report["max_safe_latency_ms"] = cells
        report["max_safe_latency_by_scenario"] = by_scenario
        report["sweep"] = {
            "step_ms": sweep_step_ms,
            "max_ms": sweep_max_ms,
            "rule": "per cell: the smallest, over the cell's scenarios avoidable at 0 ms, of the largest latency "
            "on the grid such that it and every shorter one avoid collision; null when none is avoidable",
            "unavoidable_at_0ms": unavoidable,
            "saturated": saturated,
        }
    return report, runs


def run_drive(
    model: str | Path | None = None,
    scenarios: str = "all",
    speeds_kmh: tuple[float, ...] = SPEEDS_KMH,
    via: str = "inproc",
    fps: float = 20.0,
    latency_ms: float | None = None,
    seed: int = 0,
    sweep: bool = True,
    json_out: str | Path | None = None,
    plot: str | Path | None = None,
    gif: str | Path | None = None,
    cfg: DriveConfig | None = None,
    progress: Callable[[str], None] | None = print,
) -> dict:
    """``crosswalk drive``: drive, sweep, print the tables, write the JSON, the plot and the GIF."""
    import json

    cfg = cfg or DriveConfig(fps=fps)
    specs = parse_scenarios(scenarios)
    detector = make_detector(model, via)
    try:
        report, runs = drive_sweep(
            detector, specs, tuple(speeds_kmh), cfg, latency_ms, seed, sweep=sweep, progress=progress
        )
        report["model"] = str(model) if model is not None else "reference"
        if gif and runs:
            from .plots import write_gif

            write_gif(*runs[0], gif)
            _say(progress, f"wrote {gif}")
    finally:
        detector.close()
    if progress:
        progress(format_tables(report))
    if plot and runs:
        from .plots import plot_runs

        plot_runs([r for r, _ in runs], plot)
        _say(progress, f"wrote {plot}")
    if json_out:
        path = Path(json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        _say(progress, f"wrote {path}")
    return report


def _say(progress, text: str) -> None:
    if progress:
        progress(text)


def _key(speed_kmh: float) -> str:
    return f"{speed_kmh:g}"


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


HEADER = (
    f"{'scenario':28s} {'km/h':>4s} {'seen@m':>7s} {'brake@m':>7s} {'lat ms':>6s} {'lat m':>5s} "
    f"{'stop gap':>8s} {'impact':>6s} {'phantom':>7s} {'safe ms':>7s}"
)


def _row(s: dict) -> str:
    stop = "HIT" if s["collision"] else _fmt(s["stop_gap_m"])
    impact = _fmt(s["impact_speed_kmh"], ".0f") if s["collision"] else "-"
    safe = _fmt(s.get("max_safe_latency_ms"), ".0f")
    return (
        f"{s['name']:28s} {s['speed_kmh']:4.0f} {_fmt(s['first_detection_m']):>7s} "
        f"{_fmt(s['brake_decision_m']):>7s} {_fmt(s['latency_ms'], '.0f'):>6s} "
        f"{_fmt(s['latency_travel_m'], '.2f'):>5s} {stop:>8s} {impact:>6s} {len(s['false_alarms']):7d} {safe:>7s}"
    )


def format_tables(report: dict) -> str:
    """The terminal tables: one row per run, then the maximum safe latency per speed and condition."""
    lines = [HEADER] + [_row(s) for s in report["scenarios"]]
    cells = report.get("max_safe_latency_ms")
    if cells:
        conds = list(next(iter(cells.values())))
        lines += ["", "max safe inference latency (ms): " + "  ".join(f"{c:>6s}" for c in conds)]
        for speed, row in cells.items():
            lines.append(f"{speed + ' km/h':>32s}  " + "  ".join(f"{_fmt(row[c], '.0f'):>6s}" for c in conds))
        if report["sweep"]["unavoidable_at_0ms"]:
            lines.append("collide even at 0 ms: " + ", ".join(report["sweep"]["unavoidable_at_0ms"]))
    lines += ["", "distance error 10-40 m, |estimate - truth| / truth: median (share within 10%)"]
    for label, key in (
        ("per box", "distance_error_by_condition"),
        ("tracked", "distance_error_tracked_by_condition"),
    ):
        cells = [
            f"{c} {e['median_abs_pct']:.1f}% ({e['within_10pct']:.0%})"
            for c, e in report[key].items()
            if e.get("n")
        ]
        lines.append(f"{label:>10s}: " + ("  ".join(cells) or "no fix in range"))
    return "\n".join(lines)
