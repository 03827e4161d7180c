"""Detector outputs -> per-image boxes, scores and labels: top-k, score threshold, class-aware NMS.

Kept out of ``Detector.forward`` so the network exports with ``torch.onnx.export(dynamo=True)``: NMS and
threshold filtering have data-dependent shapes (../shared/reference/env.md sec. 4).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from crosswalk.model.config import DetectorConfig
from crosswalk.model.detector import BOX, CLASSES, QUALITY


def scores_from_outputs(outputs: Tensor) -> Tensor:
    """(B, A, C) detection scores: the geometric mean of class probability and predicted IoU.

    The IoU-aware detector's ``p^(1-a) * IoU^a`` with a = 0.5 (arXiv:1912.05992): boxes that are
    well localised rank above equally confident loose ones, and the score stays on the probability's scale.
    """
    outputs = outputs.float()
    return torch.sqrt(outputs[..., CLASSES].sigmoid() * outputs[..., QUALITY : QUALITY + 1].sigmoid())


@torch.no_grad()
def decode(
    outputs: Tensor,
    cfg: DetectorConfig,
    score_threshold: float = 0.05,
    nms_iou: float = 0.6,
    max_detections: int = 100,
    pre_nms_topk: int = 1000,
) -> list[dict[str, Tensor]]:
    """Per image: ``{"boxes": (K, 4) x1y1x2y2 input pixels, "scores": (K,), "labels": (K,) int64}``, best first.

    A location may yield boxes for several classes (as in RetinaNet/FCOS); NMS runs per class. Boxes are not
    clipped to the image: like the ground truth's full boxes, they may reach past the border.
    """
    if outputs.ndim != 3 or outputs.shape[-1] != 5 + cfg.num_classes:
        raise ValueError(f"decode expects (B, A, {5 + cfg.num_classes}) outputs, got {tuple(outputs.shape)}")
    scores = scores_from_outputs(outputs).flatten(1)  # (B, A*C), location-major
    boxes = outputs[..., BOX].float()
    results = []
    for b in range(outputs.shape[0]):
        top, index = scores[b].topk(min(pre_nms_topk, scores.shape[1]))
        keep = top > score_threshold
        top, index = top[keep], index[keep]
        location, label = index // cfg.num_classes, index % cfg.num_classes
        kept = batched_nms(boxes[b, location], top, label, nms_iou)[:max_detections]
        results.append({"boxes": boxes[b, location[kept]], "scores": top[kept], "labels": label[kept]})
    return results
