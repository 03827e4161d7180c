"""Label assignment and the training loss, vectorised over the batch (targets padded to the largest count).

Assignment (FCOS, arXiv:1904.01355, with the centre sampling of its journal version, arXiv:2006.09214):

* each box goes to one pyramid level by its longer side (``cfg.scale_range_mult``);
* on that level, a location is a positive for the box if it lies inside the box and within
  ``cfg.center_radius`` strides of the box centre, or if it is the cell holding the centre (a 6 px wide far
  pedestrian can fall between stride-8 cell centres; this keeps one positive for it);
* a location claimed by several boxes takes the smallest (FCOS's rule);
* ignore regions are never positives, and locations inside one (on every level) that are not positives for a
  real box are left out of the classification loss: no push towards background where a poster or mannequin is.

Loss = focal (classes, arXiv:1708.02002) + ``box_loss_weight`` * GIoU (boxes, arXiv:1902.09630) +
``quality_loss_weight`` * BCE(quality logit, IoU of the predicted box) at positives (arXiv:1912.05992). Each sum
is divided by the number of positives in the batch, at least 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from crosswalk.data.targets import BatchTargets, as_batch_targets
from crosswalk.model.config import DetectorConfig
from crosswalk.model.detector import BOX, CLASSES, QUALITY, anchor_points


def pad_targets(targets: BatchTargets | list[dict[str, Tensor]], device: torch.device) -> dict[str, Tensor]:
    """Lay a batch's targets out as ``(B, G, ...)`` with a ``valid`` mask; G >= 1 even when every image is empty.

    One scatter per field from the flat form (``BatchTargets``, what the loader yields; a list of per-image
    dicts is flattened first). At batch 256 on a GPU a copy per image launched about a thousand tiny kernels
    a step."""
    targets = as_batch_targets(targets)
    counts = targets.counts
    b, g = len(targets), max([1] + counts.tolist())
    owner = targets.owner
    slot = torch.arange(len(owner)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    where = (owner.to(device), slot.to(device))

    def scattered(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        out = torch.zeros((b, g, *shape), dtype=dtype, device=device)
        if len(owner) and key in targets.fields:  # a field nobody has (hand-made targets) counts as zeros
            out[where] = targets.fields[key].reshape(-1, *shape).to(device, dtype)
        return out

    valid = torch.zeros(b, g, dtype=torch.bool, device=device)
    valid[where] = True
    boxes = scattered("boxes", (4,), torch.float32)
    labels = scattered("labels", (), torch.long)
    ignore = scattered("ignore", (), torch.bool)
    return {"boxes": boxes, "labels": labels, "ignore": ignore & valid, "real": valid & ~ignore}


def level_ranges(cfg: DetectorConfig) -> list[tuple[float, float]]:
    """(low, high] of a box's longer side, in pixels, for each level: high = scale_range_mult * stride."""
    highs = [cfg.scale_range_mult * s for s in cfg.strides[:-1]] + [float("inf")]
    return list(zip([0.0] + highs[:-1], highs, strict=True))


@torch.no_grad()
def assign(points: Tensor, gt: dict[str, Tensor], cfg: DetectorConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Match locations ``points`` (A, 3) ``[x, y, stride]`` to padded targets ``gt`` (from ``pad_targets``).

    Returns ``positive`` (B, A) bool, ``matched`` (B, A) index into G (meaningful where positive) and
    ``cls_valid`` (B, A) bool: False at ignore-region locations that are not positives.
    """
    x, y, s = (points[:, i].view(1, -1, 1) for i in range(3))  # (1, A, 1)
    x1, y1, x2, y2 = (gt["boxes"][..., i].unsqueeze(1) for i in range(4))  # (B, 1, G)
    inside = (x > x1) & (x < x2) & (y > y1) & (y < y2)  # (B, A, G)

    ranges = torch.tensor(level_ranges(cfg), device=points.device)  # (L, 2)
    level = torch.searchsorted(
        torch.tensor(cfg.strides, device=points.device, dtype=s.dtype), points[:, 2].contiguous()
    )
    low, high = ranges[level, 0].view(1, -1, 1), ranges[level, 1].view(1, -1, 1)
    w, h = x2 - x1, y2 - y1
    size = torch.maximum(w, h)
    on_level = (size > low) & (size <= high)

    dx, dy = (x - (x1 + x2) / 2).abs(), (y - (y1 + y2) / 2).abs()
    radius = cfg.center_radius * s
    centre_cell = (dx <= s / 2) & (dy <= s / 2)
    candidate = on_level & ((inside & (dx < radius) & (dy < radius)) | centre_cell) & gt["real"].unsqueeze(1)

    area = torch.where(candidate, (w * h).expand_as(candidate), torch.full_like(x1, float("inf")))
    min_area, matched = area.min(dim=2)
    positive = torch.isfinite(min_area)
    in_ignore = (inside & gt["ignore"].unsqueeze(1)).any(dim=2)
    return positive, matched, positive | ~in_ignore


def box_iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``a[i]`` with ``b[i]`` (both (N, 4) x1y1x2y2); ``torchvision.ops.box_iou`` is all-pairs."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a + area_b - inter).clamp(min=1e-6)


def detection_loss(
    outputs: Tensor,
    targets: BatchTargets | list[dict[str, Tensor]],
    cfg: DetectorConfig,
    image_size: tuple[int, int] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Loss of ``Detector`` outputs ``(B, A, 5 + C)`` against per-image targets (``crosswalk.data.schema``).

    ``targets[i]``: ``boxes`` (N, 4) x1y1x2y2 pixels in the input frame, ``labels`` (N,), ``ignore`` (N,) bool.
    ``image_size`` (W, H) is the input the outputs came from, ``cfg.input_size`` by default.
    Returns the total and its parts as floats: ``cls``, ``box``, ``quality``, ``num_positives``.
    """
    b, a, d = outputs.shape
    if len(targets) != b:
        raise ValueError(f"detection_loss got {b} outputs but {len(targets)} targets")
    points = anchor_points(cfg, image_size, outputs.device)
    if a != len(points) or d != 5 + cfg.num_classes:
        raise ValueError(
            f"outputs {tuple(outputs.shape)} do not match {len(points)} locations x {5 + cfg.num_classes} values "
            f"for input {image_size or cfg.input_size} (W, H); pass image_size= for inputs other than cfg.input_size"
        )
    outputs = outputs.float()
    gt = pad_targets(targets, outputs.device)
    positive, matched, cls_valid = assign(points, gt, cfg)
    num_pos = positive.sum().clamp(min=1).float()

    labels = torch.gather(gt["labels"], 1, matched)  # (B, A)
    cls_target = F.one_hot(labels, cfg.num_classes).float() * positive.unsqueeze(-1)
    focal = sigmoid_focal_loss(
        outputs[..., CLASSES], cls_target, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, reduction="none"
    )
    cls_loss = (focal * cls_valid.unsqueeze(-1)).sum() / num_pos

    pred_boxes = outputs[..., BOX][positive]  # (P, 4)
    target_boxes = torch.gather(gt["boxes"], 1, matched.unsqueeze(-1).expand(-1, -1, 4))[positive]
    box_loss = generalized_box_iou_loss(pred_boxes, target_boxes, reduction="sum") / num_pos
    iou = box_iou_pairs(pred_boxes.detach(), target_boxes)
    quality_loss = (
        F.binary_cross_entropy_with_logits(outputs[..., QUALITY][positive], iou, reduction="sum") / num_pos
    )

    total = cls_loss + cfg.box_loss_weight * box_loss + cfg.quality_loss_weight * quality_loss
    parts = torch.stack([cls_loss, box_loss, quality_loss, positive.sum().float()]).tolist()  # one sync
    return total, dict(zip(("cls", "box", "quality", "num_positives"), parts, strict=True))
