"""Evaluation plots as PNG files, drawn from the JSON results (crosswalk.evaluate.evaluate_predictions).

Each function selects matplotlib's Agg backend when called (never at import) and returns the path written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def _value(x: Any) -> float:
    return math.nan if x is None else float(x)


def plot_pr_curves(pr: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path) -> Path:
    """Precision against recall per class at IoU 0.5 (COCOeval's 101 recall points)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, curve in pr.items():
        precision = [max(_value(p), 0.0) for p in curve["precision"]]
        ax.plot(curve["recall"], precision, label=name)
    ax.set(
        xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall, IoU 0.5"
    )
    ax.grid(alpha=0.3)
    if pr:
        ax.legend(loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_miss_rate_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    miss_rates: Mapping[str, float | None],
    path: str | Path,
) -> Path:
    """Miss rate against false positives per image, log-log, one line per setup, MR⁻² in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    x_min = 1e-3
    for name, curve in curves.items():
        # FPPI 0 (before the first false positive) is drawn at the left edge; miss rate 0 cannot be drawn.
        pts = [(max(f, x_min), m) for f, m in zip(curve["fppi"], curve["miss_rate"], strict=True) if m > 0]
        mr = _value(miss_rates.get(name))
        label = f"{name} (MR⁻² {100 * mr:.1f}%)" if math.isfinite(mr) else f"{name} (no data)"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], drawstyle="steps-post", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlim=(x_min, 1e1), ylim=(5e-2, 1.0), xlabel="false positives per image", ylabel="miss rate")
    ax.grid(which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_condition_bars(
    by_condition: Mapping[str, Mapping[str, Mapping[str, Any]]],
    path: str | Path,
    metrics: Sequence[str] = ("recall", "ap50"),
) -> Path:
    """One panel per condition (lighting, weather, ...), grouped bars per bin; missing values are left blank."""
    plt = _pyplot()
    n = max(len(by_condition), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    width = 0.8 / max(len(metrics), 1)
    for ax, (condition, bins) in zip(axes[0], by_condition.items(), strict=False):
        names = list(bins)
        for m, metric in enumerate(metrics):
            values = [_value(bins[b].get(metric)) for b in names]
            xs = [i + (m - (len(metrics) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, [0.0 if math.isnan(v) else v for v in values], width, label=metric)
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize="small")
        ax.set(ylim=(0, 1), title=condition)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)
