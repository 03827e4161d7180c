"""Network outputs of one image -> detections: threshold, top-k, class-aware NMS, back to original pixels.

The NumPy/OpenCV twin of ``crosswalk.model.decode`` (which uses torchvision's ``batched_nms``), so that the
onnxruntime serving path runs without torch; ``tests/test_infer.py`` checks the two give the same boxes.
OpenCV's ``NMSBoxesBatched`` offsets boxes per class exactly as torchvision's ``batched_nms`` does.
"""

from __future__ import annotations

from typing import TypedDict

import cv2
import numpy as np

from crosswalk.infer.image import Prepared

# box: x1, y1, x2, y2 in original image pixels; "class" is a Python keyword, hence the functional form.
Detection = TypedDict("Detection", {"box": list[float], "score": float, "label": int, "class": str})


def detection(box, score: float, label: int, name: str) -> Detection:
    return {"box": [float(v) for v in box], "score": float(score), "label": int(label), "class": name}


def select(
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    nms_iou: float,
    max_detections: int = 100,
    pre_nms_topk: int = 1000,
    classes: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """boxes (A, 4), scores (A, C) -> kept (K, 4) boxes, (K,) scores, (K,) labels, best first."""
    num_classes = scores.shape[1]
    if classes is not None:
        scores = scores * np.isin(np.arange(num_classes), classes)[None, :]
    flat = scores.reshape(-1)
    cand = np.flatnonzero(flat > score_threshold)
    if len(cand) > pre_nms_topk:
        cand = cand[np.argpartition(-flat[cand], pre_nms_topk - 1)[:pre_nms_topk]]
    cand = cand[np.argsort(-flat[cand], kind="stable")]
    location, label = np.divmod(cand, num_classes)
    b, s = boxes[location].astype(np.float64), flat[cand].astype(np.float32)
    if len(cand) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    keep = np.asarray(cv2.dnn.NMSBoxesBatched(xywh, s, label.astype(np.int32), 0.0, nms_iou), np.int64)
    keep = keep.reshape(-1)[:max_detections]
    return b[keep].astype(np.float32), s[keep], label[keep].astype(np.int64)


def postprocess(
    boxes: np.ndarray,
    scores: np.ndarray,
    prep: Prepared,
    class_names: list[str],
    score_threshold: float,
    nms_iou: float,
    max_detections: int = 100,
    classes: list[int] | None = None,
) -> list[Detection]:
    """One image's outputs -> ``[{"box", "score", "label", "class"}, ...]`` in original pixels, best first."""
    kept, s, labels = select(boxes, scores, score_threshold, nms_iou, max_detections, classes=classes)
    kept = prep.to_original(kept)
    return [detection(b, sc, lab, class_names[lab]) for b, sc, lab in zip(kept, s, labels, strict=True)]
