"""What ``crosswalk bench infer`` shows: the latency histogram PNG and the terminal table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crosswalk.bench.loadgen import RunResult


def plot_latency_histogram(
    runs_by_system: dict[str, dict[str, RunResult]], path: Path, p99_bound_ms: float
) -> None:
    """Per-sample latencies (the SUT's issue-to-answer timestamps) of the SingleStream and Server runs, one
    panel per scenario, with LoadGen's p50 and p99 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [s for s in ("SingleStream", "Server") if any(s in runs for runs in runs_by_system.values())]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, scenario in zip(axes[0], panels, strict=False):
        values = [runs[scenario].latencies_ms for runs in runs_by_system.values() if scenario in runs]
        top = max(float(np.percentile(v, 99.5)) for v in values if v) * 1.1
        bins = np.linspace(0, top, 60)
        for system, runs in runs_by_system.items():
            run = runs.get(scenario)
            if run is None or not run.latencies_ms:
                continue
            label = system
            if scenario == "Server" and run.settings is not None:
                label += f" @ {run.settings.server_target_qps:.0f} qps ({run.validity})"
            line = ax.hist(run.latencies_ms, bins=bins, alpha=0.55, label=label)[2][0]
            for p, style in (("50.00", "-"), ("99.00", ":")):
                value = run.percentile_ms(p)
                if value is not None:
                    ax.axvline(value, color=line.get_facecolor(), linestyle=style, alpha=1.0)
        if scenario == "Server":
            ax.axvline(p99_bound_ms, color="k", linestyle="--", label=f"p99 bound {p99_bound_ms:g} ms")
            ax.set_title("Server at the max valid QPS (else the lowest probe), Poisson")
        else:
            ax.set_title("SingleStream (batch 1)")
        ax.set_xlabel("latency (ms); solid = p50, dotted = p99 (LoadGen)")
        ax.set_ylabel("queries")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(result: dict) -> None:
    """A compact table of every LoadGen run, then the headline figures."""
    print(
        f"\n{'system':8s} {'scenario':12s} {'role':8s} {'target':>8s} {'rate/s':>8s} {'p50 ms':>8s} "
        f"{'p90 ms':>8s} {'p99 ms':>8s}  LoadGen"
    )
    for r in result["runs"]:
        cells = [r.get("target_qps"), r["samples_per_s"], r["p50_ms"], r["p90_ms"], r["p99_ms"]]
        text = " ".join("       -" if v is None else f"{v:8.2f}" for v in cells)
        print(f"{r['system']:8s} {r['scenario']:12s} {r['role']:8s} {text}  {r['loadgen_validity']}")
    keys = (
        "runtime_p50_ms",
        "runtime_p90_ms",
        "server_p50_ms",
        "overhead_ms",
        "overhead_paired_ms",
        "batch1_images_per_s",
        "batched_images_per_s",
        "batching_gain",
        "server_max_qps",
        "p99_bound_ms",
        "valid",
    )
    print("  ".join(f"{k}={result.get(k)}" for k in keys))
