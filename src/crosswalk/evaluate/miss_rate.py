"""Pedestrian log-average miss rate (MR⁻²), as in the CityPersons reference evaluation.

Source: cvgroup-njust/CityPersons ``evaluation/eval_script/eval_MR_multisetup.py`` (``Params.setDetParams``,
``evaluateImg``, ``accumulate``, ``summarize``), itself the Python port of Dollár's Caltech toolbox
(``bbGt.m compRoc``, ``dbEval.m``). Summary: Dollár, Wojek, Schiele, Perona, TPAMI 34(4) 2012.

Two places where this follows Dollár's Matlab rather than the Python port, both on purpose:

* An FPPI point before the first point of the curve (the highest-scoring kept detection is already a false
  positive beyond that FPPI) has recall 0, so miss rate 1. The Python port reads ``recall[-1]`` there (a
  negative index, so the *final* recall), which flatters detectors whose top detection is wrong.
* The summary floors each miss rate at 1e-10 before the log (``max(1e-10, mr)`` in ``dbEval.m``); the Python
  port takes ``log(0) = -inf`` and reports 0 for a perfect detector.

Everything here is a pure function over numpy arrays; :func:`pedestrian_miss_rates` is the dataset-level
entry point over per-image prediction dicts and schema annotations (crosswalk.data.schema).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# logspace(-2, 0, 9), written as in the reference (``Params.fppiThrs``).
FPPI_POINTS = np.array([0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0000])
IOU_THRESHOLD = 0.5
EXP_FILTER = 1.25  # detections outside [h_min / 1.25, h_max * 1.25) are dropped before matching
MAX_DETS = 1000  # per image, highest scores first (``Params.maxDets = [1000]``)
MISS_RATE_FLOOR = 1e-10  # dbEval.m: exp(mean(log(max(1e-10, mr))))


@dataclass(frozen=True)
class Setup:
    """Which ground truths count: both ranges are inclusive at both ends, as in the reference
    (a GT is ignored when ``height < lo or height > hi``, likewise visibility)."""

    height_px: tuple[float, float]
    visibility: tuple[float, float]


INF = math.inf
SETUPS: dict[str, Setup] = {
    "reasonable": Setup(height_px=(50.0, INF), visibility=(0.65, INF)),
    "small": Setup(height_px=(50.0, 75.0), visibility=(0.65, INF)),
    "heavy": Setup(height_px=(50.0, INF), visibility=(0.2, 0.65)),
    "all": Setup(height_px=(20.0, INF), visibility=(0.2, INF)),
}


def _as_boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def score_order(scores) -> np.ndarray:
    """Indices of ``scores`` highest first; stable (mergesort), like the reference, so ties keep input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")


def overlaps(det_boxes, gt_boxes, gt_ignore) -> np.ndarray:
    """(D, G) overlap: IoU for regular GTs, intersection over the *detection's* area for ignore GTs."""
    d, g = _as_boxes(det_boxes), _as_boxes(gt_boxes)
    ignore = np.asarray(gt_ignore, dtype=bool).reshape(-1)
    iw = np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
    ih = np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    d_area = ((d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1]))[:, None]
    g_area = ((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]))[None, :]
    union = np.where(ignore[None, :], d_area, d_area + g_area - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def match_image(
    det_boxes, det_scores, gt_boxes, gt_ignore, iou_threshold: float = IOU_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one image's detections, highest score first (``evaluateImg``).

    A detection takes the unmatched regular GT with the best IoU >= ``iou_threshold`` (a tie goes to the later
    GT, as in the reference); failing that, it is absorbed by the ignore GT with the best intersection over
    the detection's area >= the threshold. Ignore GTs absorb any number of detections.

    Returns ``(tp, fp)``: bool arrays in score order (see :func:`score_order`). A detection absorbed by an ignore
    region is neither.
    """
    order = score_order(det_scores)
    d = _as_boxes(det_boxes)[order]
    ignore = np.asarray(gt_ignore, dtype=bool).reshape(-1)
    ov = overlaps(d, gt_boxes, ignore)
    threshold = min(iou_threshold, 1 - 1e-10)
    matched = np.zeros(len(ignore), dtype=bool)
    tp = np.zeros(len(d), dtype=bool)
    fp = np.zeros(len(d), dtype=bool)
    for i in range(len(d)):
        candidates = np.where(~ignore & ~matched & (ov[i] >= threshold))[0]
        if len(candidates):
            best = ov[i, candidates]
            j = candidates[len(best) - 1 - np.argmax(best[::-1])]  # last of the maxima
            matched[j] = True
            tp[i] = True
        elif not np.any(ignore & (ov[i] >= threshold)):
            fp[i] = True
    return tp, fp


def setup_ignore(gt_ignore, gt_height_px, gt_visibility, setup: Setup) -> np.ndarray:
    """GTs flagged ignore, or outside the setup's height or visibility range (bounds inclusive)."""
    h = np.asarray(gt_height_px, dtype=np.float64).reshape(-1)
    v = np.asarray(gt_visibility, dtype=np.float64).reshape(-1)
    (h_lo, h_hi), (v_lo, v_hi) = setup.height_px, setup.visibility
    outside = (h < h_lo) | (h > h_hi) | (v < v_lo) | (v > v_hi)
    return np.asarray(gt_ignore, dtype=bool).reshape(-1) | outside


def evaluate_image(
    det_boxes,
    det_scores,
    gt_boxes,
    gt_ignore,
    gt_height_px,
    gt_visibility,
    setup: Setup,
    max_dets: int = MAX_DETS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image under one setup: out-of-range GTs become ignore, the top ``max_dets`` detections are kept,
    those whose height is outside ``[h_min / 1.25, h_max * 1.25)`` dropped, and the rest matched.

    Returns ``(scores, tp, fp)`` of the kept detections, in score order.
    """
    boxes, scores = _as_boxes(det_boxes), np.asarray(det_scores, dtype=np.float64).reshape(-1)
    keep = score_order(scores)[:max_dets]
    boxes, scores = boxes[keep], scores[keep]
    h = boxes[:, 3] - boxes[:, 1]
    h_lo, h_hi = setup.height_px
    in_range = (h >= h_lo / EXP_FILTER) & (h < h_hi * EXP_FILTER)
    boxes, scores = boxes[in_range], scores[in_range]
    ignore = setup_ignore(gt_ignore, gt_height_px, gt_visibility, setup)
    tp, fp = match_image(boxes, scores, gt_boxes, ignore)
    return scores, tp, fp  # already in score order


def miss_rate_curve(scores, tp, fp, num_gt: int, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Miss rate against false positives per image over a dataset (``accumulate``).

    ``scores``, ``tp``, ``fp`` are the per-image results concatenated (image order, each image in score order);
    they are stably re-sorted by score, detections that are neither TP nor FP are dropped, and the curve has
    one point per remaining detection: ``fppi = cum FP / num_images``, ``miss_rate = 1 - cum TP / num_gt``.
    """
    if num_gt < 1:
        raise ValueError("miss rate needs at least one non-ignore ground truth (num_gt >= 1)")
    if num_images < 1:
        raise ValueError("FPPI needs at least one image (num_images >= 1)")
    order = score_order(scores)
    tp = np.asarray(tp, dtype=bool).reshape(-1)[order]
    fp = np.asarray(fp, dtype=bool).reshape(-1)[order]
    counted = tp | fp
    fppi = np.cumsum(fp[counted]) / num_images
    miss_rate = 1.0 - np.cumsum(tp[counted]) / num_gt
    return fppi, miss_rate


def miss_rates_at(fppi, miss_rate, points=FPPI_POINTS) -> np.ndarray:
    """Miss rate at each FPPI point: the value at the last curve point with FPPI <= the point, 1 where the
    curve has no such point (Dollár's ``compRoc`` prepends (-inf, recall 0))."""
    fppi = np.asarray(fppi, dtype=np.float64).reshape(-1)
    miss_rate = np.asarray(miss_rate, dtype=np.float64).reshape(-1)
    idx = np.searchsorted(fppi, np.asarray(points, dtype=np.float64), side="right") - 1
    return np.where(idx >= 0, miss_rate[np.maximum(idx, 0)] if len(miss_rate) else 1.0, 1.0)


def log_average_miss_rate(fppi, miss_rate, points=FPPI_POINTS) -> float:
    """MR⁻²: geometric mean of the miss rates at the nine FPPI points, each floored at 1e-10.

    A perfect detector scores 1e-10 (the floor), a curve with no points 1.0.
    """
    mr = miss_rates_at(fppi, miss_rate, points)
    return float(np.exp(np.mean(np.log(np.maximum(mr, MISS_RATE_FLOOR)))))


# ---------------------------------------------------------------- dataset level


@dataclass(frozen=True)
class PedestrianImage:
    """One image's pedestrian GTs and pedestrian detections as arrays (G or D rows)."""

    gt_boxes: np.ndarray  # (G, 4) full boxes x1y1x2y2
    gt_ignore: np.ndarray  # (G,) bool, the annotation's own flag
    gt_height_px: np.ndarray  # (G,)
    gt_visibility: np.ndarray  # (G,)
    gt_distance_m: np.ndarray  # (G,), nan when unknown
    det_boxes: np.ndarray  # (D, 4)
    det_scores: np.ndarray  # (D,)
    lighting: str | None = None
    weather: str | None = None


def _number(value, default: float) -> float:
    return default if value is None else float(value)


def prediction_arrays(prediction: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (N, 4), scores (N,), labels (N,))`` from one prediction dict (arrays or lists)."""
    boxes = _as_boxes(prediction.get("boxes", []))
    scores = np.asarray(prediction.get("scores", []), dtype=np.float64).reshape(-1)
    labels = np.asarray(prediction.get("labels", []), dtype=np.int64).reshape(-1)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(
            f"prediction has {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels; "
            "they must have the same length"
        )
    return boxes, scores, labels


def pedestrian_images(
    predictions: Sequence[Mapping],
    annotations: Sequence[Mapping],
    pedestrian_label: int = 0,
    pedestrian_category: str = "pedestrian",
) -> list[PedestrianImage]:
    """Pedestrian GTs (``category == pedestrian_category``) and detections (``label == pedestrian_label``)
    per image. ``height_px`` falls back to the box height, ``visibility`` to 1, ``distance_m`` to nan."""
    if len(predictions) != len(annotations):
        raise ValueError(
            f"{len(predictions)} predictions for {len(annotations)} annotations; pass one prediction per image, "
            "in the same order"
        )
    images = []
    for pred, ann in zip(predictions, annotations, strict=True):
        objs = [o for o in ann.get("objects", []) if o.get("category") == pedestrian_category]
        gt_boxes = _as_boxes([o["box"] for o in objs])
        boxes, scores, labels = prediction_arrays(pred)
        is_ped = labels == pedestrian_label
        images.append(
            PedestrianImage(
                gt_boxes=gt_boxes,
                gt_ignore=np.array([bool(o.get("ignore", False)) for o in objs], dtype=bool),
                gt_height_px=np.array(
                    [_number(o.get("height_px"), b[3] - b[1]) for o, b in zip(objs, gt_boxes, strict=True)],
                    dtype=np.float64,
                ),
                gt_visibility=np.array([_number(o.get("visibility"), 1.0) for o in objs], dtype=np.float64),
                gt_distance_m=np.array(
                    [_number(o.get("distance_m"), math.nan) for o in objs], dtype=np.float64
                ),
                det_boxes=boxes[is_ped],
                det_scores=scores[is_ped],
                lighting=ann.get("lighting"),
                weather=ann.get("weather"),
            )
        )
    return images


def dataset_miss_rate_curve(
    images: Sequence[PedestrianImage], setup: Setup, gt_selected: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(fppi, miss_rate, num_gt)`` over ``images`` under ``setup``; FPPI divides by ``len(images)``.

    ``gt_selected`` (one bool array per image) narrows the positives further: unselected GTs become ignore
    regions, as out-of-range GTs do. ``num_gt == 0`` gives empty curves (the miss rate is undefined).
    """
    scores, tps, fps, num_gt = [], [], [], 0
    for i, im in enumerate(images):
        ignore = (
            im.gt_ignore if gt_selected is None else im.gt_ignore | ~np.asarray(gt_selected[i], dtype=bool)
        )
        s, tp, fp = evaluate_image(
            im.det_boxes, im.det_scores, im.gt_boxes, ignore, im.gt_height_px, im.gt_visibility, setup
        )
        scores.append(s)
        tps.append(tp)
        fps.append(fp)
        num_gt += int(np.count_nonzero(~setup_ignore(ignore, im.gt_height_px, im.gt_visibility, setup)))
    if num_gt == 0 or not images:
        return np.zeros(0), np.zeros(0), num_gt
    fppi, miss_rate = miss_rate_curve(
        np.concatenate(scores), np.concatenate(tps), np.concatenate(fps), num_gt, len(images)
    )
    return fppi, miss_rate, num_gt


def pedestrian_miss_rates(
    predictions: Sequence[Mapping],
    annotations: Sequence[Mapping],
    pedestrian_label: int = 0,
    pedestrian_category: str = "pedestrian",
    setups: Mapping[str, Setup] = SETUPS,
) -> dict[str, float]:
    """MR⁻² per setup over a dataset; nan for a setup without any non-ignore pedestrian.

    ``predictions[i]`` is ``{"boxes": (N, 4) x1y1x2y2 pixels, "scores": (N,), "labels": (N,)}`` for the image of
    ``annotations[i]`` (crosswalk.data.schema); GT filters use each object's full ``box``, ``height_px`` and
    ``visibility``, as CityPersons does.
    """
    images = pedestrian_images(predictions, annotations, pedestrian_label, pedestrian_category)
    out = {}
    for name, setup in setups.items():
        fppi, miss_rate, num_gt = dataset_miss_rate_curve(images, setup)
        out[name] = log_average_miss_rate(fppi, miss_rate) if num_gt else math.nan
    return out
