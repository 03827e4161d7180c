"""Pedestrian recall, AP50 and MR⁻² broken down by condition: lighting, weather, distance and occlusion.

Every bin is evaluated like CityPersons' "all" setup (pedestrians >= 20 px tall and >= 0.2 visible), narrowed
to the bin, so bins are comparable with each other (not with the "reasonable" headline number):

* lighting / weather select images (null metadata -> "unknown"); FPPI divides by the bin's image count;
* distance / occlusion select ground truths; the others become ignore regions, exactly as out-of-range GTs do
  in the setups, so a detection on an unselected pedestrian is neither TP nor FP. Occlusion bins replace
  the setup's visibility range; an unknown distance goes to "unknown".

Per bin: ``images``, ``pedestrians`` (non-ignore GTs counted), ``recall`` (matched at IoU 0.5 by any
detection: the end of the miss-rate curve), ``ap50`` (COCOeval, unselected pedestrians as crowd) and ``mr``
(MR⁻², only with at least ``min_pedestrians_for_mr`` pedestrians; nan otherwise and for empty bins).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from ..data.schema import LIGHTING, WEATHER
from .coco import coco_ap
from .miss_rate import (
    SETUPS,
    Setup,
    dataset_miss_rate_curve,
    log_average_miss_rate,
    pedestrian_images,
)

DISTANCE_EDGES_M = (10.0, 20.0, 40.0)  # bins <10, 10-20, 20-40, >=40 m
VISIBILITY_EDGES = (0.2, 0.65)  # bins <0.2, 0.2-0.65, >=0.65 (CityPersons' heavy / reasonable split)
UNKNOWN = "unknown"

ObjectTest = Callable[[Mapping], bool]


def _bins(edges: Sequence[float]) -> dict[str, tuple[float, float]]:
    """Half-open ranges ``[lo, hi)`` named as in crosswalk.data.inspect: "<a", "a-b", ">=c"."""
    bounds = [-math.inf, *edges, math.inf]
    names = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:], strict=False)]
    names.append(f">={edges[-1]:g}")
    return {name: (lo, hi) for name, lo, hi in zip(names, bounds, bounds[1:], strict=False)}


def _field_in(field: str, lo: float, hi: float) -> ObjectTest:
    def test(obj: Mapping) -> bool:
        v = obj.get(field)
        return v is not None and lo <= float(v) < hi

    return test


def _field_unknown(field: str) -> ObjectTest:
    return lambda obj: obj.get(field) is None


def _in_setup(obj: Mapping, setup: Setup) -> bool:
    """The object passes the setup's filters (the same test as miss_rate.setup_ignore, on one dict)."""
    x1, y1, x2, y2 = obj["box"]
    h = float(obj["height_px"]) if obj.get("height_px") is not None else y2 - y1
    v = float(obj["visibility"]) if obj.get("visibility") is not None else 1.0
    (h_lo, h_hi), (v_lo, v_hi) = setup.height_px, setup.visibility
    return not obj.get("ignore", False) and h_lo <= h <= h_hi and v_lo <= v <= v_hi


def _bin_metrics(
    predictions: Sequence[Mapping],
    annotations: Sequence[Mapping],
    categories: Sequence[str],
    pedestrian_category: str,
    setup: Setup,
    selected: ObjectTest,
    min_pedestrians_for_mr: int,
    backend: str | None,
) -> dict:
    empty = {
        "images": len(annotations),
        "pedestrians": 0,
        "recall": math.nan,
        "ap50": math.nan,
        "mr": math.nan,
    }
    if not annotations:
        return empty
    label = list(categories).index(pedestrian_category)
    images = pedestrian_images(predictions, annotations, label, pedestrian_category)
    gt_selected = [
        np.array(
            [selected(o) for o in ann.get("objects", []) if o.get("category") == pedestrian_category], bool
        )
        for ann in annotations
    ]
    fppi, miss_rate, num_gt = dataset_miss_rate_curve(images, setup, gt_selected)
    if num_gt == 0:
        return empty
    ap = coco_ap(
        predictions,
        annotations,
        categories,
        ignore_object=lambda o: not (selected(o) and _in_setup(o, setup)),
        only=[pedestrian_category],
        backend=backend,
    )
    return {
        "images": len(annotations),
        "pedestrians": num_gt,
        "recall": float(1.0 - miss_rate[-1]) if len(miss_rate) else 0.0,
        "ap50": ap["per_class"][pedestrian_category]["ap50"],
        "mr": log_average_miss_rate(fppi, miss_rate) if num_gt >= min_pedestrians_for_mr else math.nan,
    }


def condition_breakdown(
    predictions: Sequence[Mapping],
    annotations: Sequence[Mapping],
    categories: Sequence[str],
    pedestrian_category: str = "pedestrian",
    *,
    setup: Setup = SETUPS["all"],
    min_pedestrians_for_mr: int = 10,
    backend: str | None = None,
) -> dict[str, dict[str, dict]]:
    """``{"lighting" | "weather" | "distance_m" | "occlusion": {bin: metrics}}`` (see the module docstring).

    Bins for the schema's lighting and weather values are always present; "unknown" only when some image or
    pedestrian lacks the value.
    """
    if len(predictions) != len(annotations):
        raise ValueError(
            f"{len(predictions)} predictions for {len(annotations)} annotations; pass one per image"
        )

    def run(idx: Sequence[int], bin_setup: Setup, selected: ObjectTest) -> dict:
        return _bin_metrics(
            [predictions[i] for i in idx],
            [annotations[i] for i in idx],
            categories,
            pedestrian_category,
            bin_setup,
            selected,
            min_pedestrians_for_mr,
            backend,
        )

    everything = range(len(annotations))
    out: dict[str, dict[str, dict]] = {}
    for field, values in (("lighting", LIGHTING), ("weather", WEATHER)):
        groups: dict[str, list[int]] = {v: [] for v in values}
        for i, ann in enumerate(annotations):
            groups.setdefault(ann.get(field) or UNKNOWN, []).append(i)
        out[field] = {name: run(idx, setup, lambda o: True) for name, idx in groups.items()}

    peds = [
        o for ann in annotations for o in ann.get("objects", []) if o.get("category") == pedestrian_category
    ]
    distance = {name: _field_in("distance_m", lo, hi) for name, (lo, hi) in _bins(DISTANCE_EDGES_M).items()}
    if any(o.get("distance_m") is None for o in peds):
        distance[UNKNOWN] = _field_unknown("distance_m")
    out["distance_m"] = {name: run(everything, setup, test) for name, test in distance.items()}

    any_visibility = replace(setup, visibility=(-math.inf, math.inf))
    occlusion = {name: _field_in("visibility", lo, hi) for name, (lo, hi) in _bins(VISIBILITY_EDGES).items()}
    if any(o.get("visibility") is None for o in peds):
        occlusion[UNKNOWN] = _field_unknown("visibility")
    out["occlusion"] = {name: run(everything, any_visibility, test) for name, test in occlusion.items()}
    return out
