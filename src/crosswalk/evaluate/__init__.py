"""Evaluation: COCO AP for every class, the pedestrian log-average miss rate (MR⁻²), a per-condition breakdown,
and plots. Metrics are pure functions over arrays; this module reads no dataset, the caller passes:

* ``annotations``: one schema dict per image (crosswalk.data.schema);
* ``predictions``: one dict per image, aligned with ``annotations``::

      {"boxes": (N, 4) x1y1x2y2 float, original image pixels,
       "scores": (N,) float,
       "labels": (N,) int, an index into ``categories``}   (numpy arrays or lists)

:func:`evaluate_predictions` returns JSON-serialisable results (nan becomes null)::

    {"images": int, "map": AP@[.5:.95], "map50": AP50,
     "per_class": {name: {"ap", "ap50"}},                      # null for a class without ground truth
     "pedestrian_mr": {"reasonable" | "small" | "heavy" | "all": MR⁻²},   # null without pedestrians
     "by_condition": {"lighting" | "weather" | "distance_m" | "occlusion": {bin: {...}}},
     "curves": {"miss_rate": {setup: {"fppi": [...], "miss_rate": [...]}},
                "pr": {name: {"recall": [...], "precision": [...]}}},
     "coco_backend": "faster_coco_eval" | "pycocotools"}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .breakdown import condition_breakdown
from .coco import coco_ap
from .miss_rate import (
    FPPI_POINTS,
    SETUPS,
    Setup,
    dataset_miss_rate_curve,
    evaluate_image,
    log_average_miss_rate,
    match_image,
    miss_rate_curve,
    miss_rates_at,
    pedestrian_images,
    pedestrian_miss_rates,
)

__all__ = [
    "FPPI_POINTS",
    "SETUPS",
    "Setup",
    "coco_ap",
    "condition_breakdown",
    "evaluate_image",
    "evaluate_predictions",
    "log_average_miss_rate",
    "match_image",
    "miss_rate_curve",
    "miss_rates_at",
    "pedestrian_miss_rates",
    "write_plots",
]


def _json_safe(x: Any) -> Any:
    """Plain Python types, nan and inf as None (strict JSON has neither)."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _curve_corners(fppi: np.ndarray, miss_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last point at each FPPI value: the step curve's corners, enough to redraw it and to recompute
    MR⁻² exactly, at most one point per false positive."""
    keep = np.r_[fppi[1:] != fppi[:-1], True] if len(fppi) else np.zeros(0, bool)
    fppi, miss_rate = fppi[keep], miss_rate[keep]
    positive = fppi[fppi > 0]
    if len(fppi) > CURVE_POINTS and len(positive):
        # Thinned for the JSON and the plot (a real validation set has tens of thousands of corners):
        # the corner at or before each of CURVE_POINTS log-spaced FPPI values. MR-2 is computed before this.
        grid = np.logspace(np.log10(positive.min()), np.log10(fppi.max()), CURVE_POINTS)
        idx = np.unique(np.r_[np.searchsorted(fppi, grid, side="right") - 1, len(fppi) - 1])
        fppi, miss_rate = fppi[idx[idx >= 0]], miss_rate[idx[idx >= 0]]
    return fppi, miss_rate


CURVE_POINTS = 400


def evaluate_predictions(
    predictions: Sequence[Mapping],
    annotations: Sequence[Mapping],
    categories: Sequence[str],
    *,
    pedestrian_category: str = "pedestrian",
    coco_backend: str | None = None,
) -> dict:
    """Every metric of this package over one dataset; see the module docstring for inputs and the result."""
    if len(predictions) != len(annotations):
        raise ValueError(
            f"{len(predictions)} predictions for {len(annotations)} annotations; pass one prediction per image, "
            "in the same order"
        )
    coco = coco_ap(predictions, annotations, categories, backend=coco_backend)
    mr: dict[str, float] = {name: math.nan for name in SETUPS}
    mr_curves: dict[str, dict] = {}
    by_condition: dict = {}
    if pedestrian_category in categories:
        label = list(categories).index(pedestrian_category)
        images = pedestrian_images(predictions, annotations, label, pedestrian_category)
        for name, setup in SETUPS.items():
            fppi, miss_rate, num_gt = dataset_miss_rate_curve(images, setup)
            if num_gt:
                mr[name] = log_average_miss_rate(fppi, miss_rate)
            fppi, miss_rate = _curve_corners(fppi, miss_rate)
            mr_curves[name] = {"fppi": fppi, "miss_rate": miss_rate}
        by_condition = condition_breakdown(
            predictions, annotations, categories, pedestrian_category, backend=coco_backend
        )
    return _json_safe(
        {
            "images": len(annotations),
            "map": coco["map"],
            "map50": coco["map50"],
            "per_class": coco["per_class"],
            "pedestrian_mr": mr,
            "by_condition": by_condition,
            "curves": {"miss_rate": mr_curves, "pr": coco["pr"]},
            "coco_backend": coco["backend"],
        }
    )


def write_plots(results: Mapping, out_dir: str | Path) -> list[Path]:
    """PR curves, miss rate against FPPI and per-condition bars from ``evaluate_predictions``' results,
    as PNG files in ``out_dir``; returns their paths (plots without data are skipped)."""
    from .plots import plot_condition_bars, plot_miss_rate_curves, plot_pr_curves

    out_dir = Path(out_dir)
    curves = results.get("curves", {})
    paths = []
    if curves.get("pr"):
        paths.append(plot_pr_curves(curves["pr"], out_dir / "pr_curves.png"))
    if curves.get("miss_rate"):
        paths.append(
            plot_miss_rate_curves(
                curves["miss_rate"], results.get("pedestrian_mr", {}), out_dir / "miss_rate.png"
            )
        )
    if results.get("by_condition"):
        paths.append(plot_condition_bars(results["by_condition"], out_dir / "by_condition.png"))
    return paths
