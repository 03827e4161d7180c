"""COCO box AP through faster-coco-eval (pycocotools when it is missing): conversion in memory, no files.

We do not re-implement AP. The numbers are COCOeval's own: ``map`` and ``map50`` are its ``stats[0]`` and
``stats[1]`` (mean of the precision array over entries > -1, all areas, 100 detections per image), and each
class's AP is the same mean restricted to that class's slice, as ``COCOeval._summarize`` computes it. A class
without any non-crowd ground truth has precision -1 everywhere; we report nan for it (pycocotools would
print -1) and, like pycocotools, leave it out of the means.

Conversion: image ``i`` gets id ``i + 1``, category ``k`` id ``k + 1`` and annotations ids from 1 (id 0 reads
as "unmatched" inside COCOeval). Boxes go from x1y1x2y2 to xywh; ``area`` is the full box's area; objects
flagged ``ignore`` become ``iscrowd=1`` regions (matched by intersection over the detection's area, and
detections on them count neither way).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .miss_rate import prediction_arrays

IgnoreObject = Callable[[Mapping], bool]


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def to_coco(
    predictions: Sequence[Mapping],
    annotations: Sequence[Mapping],
    categories: Sequence[str],
    ignore_object: IgnoreObject | None = None,
) -> tuple[dict, list[dict]]:
    """``(ground-truth dataset dict, detection results list)`` in COCO's format.

    ``ignore_object(obj)`` marks further objects as crowd (used by the per-condition breakdown).
    """
    if len(predictions) != len(annotations):
        raise ValueError(
            f"{len(predictions)} predictions for {len(annotations)} annotations; pass one prediction per image, "
            "in the same order"
        )
    cat_id = {name: k + 1 for k, name in enumerate(categories)}
    images, gts, dets = [], [], []
    for i, (pred, ann) in enumerate(zip(predictions, annotations, strict=True)):
        image_id = i + 1
        images.append(
            {
                "id": image_id,
                "width": ann.get("width", 0),
                "height": ann.get("height", 0),
                "file_name": ann.get("key"),
            }
        )
        for obj in ann.get("objects", []):
            if obj.get("category") not in cat_id:
                raise ValueError(
                    f"annotation {ann.get('key')!r} has category {obj.get('category')!r}, not one of "
                    f"{list(categories)}; pass the dataset's categories"
                )
            x, y, w, h = _xywh(obj["box"])
            crowd = bool(obj.get("ignore", False)) or (ignore_object is not None and ignore_object(obj))
            gts.append(
                {
                    "id": len(gts) + 1,
                    "image_id": image_id,
                    "category_id": cat_id[obj["category"]],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
        boxes, scores, labels = prediction_arrays(pred)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(categories)):
            raise ValueError(
                f"prediction labels must index categories 0..{len(categories) - 1}, got {labels}"
            )
        for box, score, label in zip(boxes, scores, labels, strict=True):
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": _xywh(box),
                    "score": float(score),
                }
            )
    dataset = {
        "images": images,
        "annotations": gts,
        "categories": [{"id": k, "name": name} for name, k in cat_id.items()],
    }
    return dataset, dets


def _coco_classes(backend: str | None) -> tuple[str, Any, Any]:
    if backend in (None, "faster_coco_eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            if backend is not None:
                raise
        else:

            def make_eval(gt, dt):
                return COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)

            return "faster_coco_eval", COCO, make_eval
    if backend not in (None, "pycocotools"):
        raise ValueError(f"backend must be None, 'faster_coco_eval' or 'pycocotools', got {backend!r}")
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError(
            "COCO AP needs faster-coco-eval or pycocotools: pip install faster-coco-eval"
        ) from e
    return "pycocotools", COCO, lambda gt, dt: COCOeval(gt, dt, "bbox")


def _mean_valid(s: np.ndarray) -> float:
    """``COCOeval._summarize``: the mean over entries > -1, nan (pycocotools: -1) when there are none."""
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else math.nan


def coco_ap(
    predictions: Sequence[Mapping],
    annotations: Sequence[Mapping],
    categories: Sequence[str],
    *,
    ignore_object: IgnoreObject | None = None,
    only: Sequence[str] | None = None,
    backend: str | None = None,
) -> dict:
    """COCO box AP: ``{"map", "map50", "per_class": {name: {"ap", "ap50"}}, "pr": {name: {"recall",
    "precision"}}, "backend"}``.

    ``pr`` is each class's precision at COCO's 101 recall points, IoU 0.5 (classes without ground truth are
    left out). ``only`` restricts the evaluation to those categories (COCOeval ``params.catIds``).
    ``backend``: None (faster-coco-eval, else pycocotools), "faster_coco_eval" or "pycocotools".
    """
    name, COCO, make_eval = _coco_classes(backend)
    dataset, dets = to_coco(predictions, annotations, categories, ignore_object)
    evaluated = list(categories) if only is None else [c for c in categories if c in set(only)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:  # pycocotools' loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": dataset["images"], "categories": dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = make_eval(gt, dt)
        ev.params.catIds = [list(categories).index(c) + 1 for c in evaluated]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # [T, R, K, A, M]: IoU, recall point, class, area range (0 = "all"), maxDets (-1 = 100)
    precision = np.asarray(ev.eval["precision"])
    at50 = int(np.where(np.isclose(ev.params.iouThrs, 0.5))[0][0])
    recall_points = np.asarray(ev.params.recThrs, dtype=np.float64)
    per_class, pr = {}, {}
    for k, cname in enumerate(evaluated):
        s = precision[:, :, k, 0, -1]
        per_class[cname] = {"ap": _mean_valid(s), "ap50": _mean_valid(s[at50])}
        if np.any(s[at50] > -1):
            pr[cname] = {"recall": recall_points.tolist(), "precision": s[at50].astype(float).tolist()}
    stats = [float(v) for v in ev.stats[:2]]
    return {
        "map": math.nan if stats[0] == -1 else stats[0],
        "map50": math.nan if stats[1] == -1 else stats[1],
        "per_class": per_class,
        "pr": pr,
        "backend": name,
    }
