"""The ``make demo`` step of the vehicle loop: a short sweep, its tables, JSON, plot and GIF."""

from __future__ import annotations

from pathlib import Path

from .sim import DriveConfig
from .sweep import run_drive

DEMO_SCENARIOS = "adult-walk-curb-day,adult-walk-curb-night"
DEMO_SPEEDS_KMH = (30.0, 50.0)


def demo_drive(model: str | Path | None, out_dir: str | Path, fps: float = 20.0) -> list[Path]:
    """Drive the adult step-out by day and by night at 30 and 50 km/h with ``model`` in process (measured
    latency), sweep the maximum safe latency, and write ``drive.json``, ``drive.png`` and ``drive.gif``.

    At the camera rate of ``crosswalk drive`` (20 fps): at 10 fps the tracker gets half the fixes and the
    reference model's car brakes too late at 50 km/h by day. About 1-2 min on 2 cores (rendering dominates).
    Returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "drive.json", out / "drive.png", out / "drive.gif"]
    run_drive(
        model,
        scenarios=DEMO_SCENARIOS,
        speeds_kmh=DEMO_SPEEDS_KMH,
        fps=fps,
        json_out=paths[0],
        plot=paths[1],
        gif=paths[2],
        cfg=DriveConfig(fps=fps),
    )
    return paths
