"""Evaluate a detector on a shard dataset, sharded over all ranks and reduced on rank 0.

Every rank runs the same number of padded steps over its part of the data (Ultralytics validates on rank 0
alone while the others wait at a collective, the source of its NCCL-timeout reports,
../shared/reference/training.md §6), then predictions are gathered to rank 0, which scores them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crosswalk.data.loader import LoaderConfig, ShardLoader, batch_images
from crosswalk.data.shards import ShardReader
from crosswalk.data.transforms import letterbox_params
from crosswalk.evaluate import evaluate_predictions
from crosswalk.model import decode
from crosswalk.train.distributed import Dist, all_gather_objects


def to_model_input(images01: torch.Tensor) -> torch.Tensor:
    """float [0, 1] (B, 3, H, W) -> the model's normalised input (crosswalk.model.MEAN_RGB / STD_RGB)."""
    from crosswalk.model import MEAN_RGB, STD_RGB

    mean = torch.tensor(MEAN_RGB, device=images01.device).view(1, 3, 1, 1) / 255.0
    std = torch.tensor(STD_RGB, device=images01.device).view(1, 3, 1, 1) / 255.0
    return ((images01 - mean) / std).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    data_dir: str | Path,
    d: Dist,
    batch_size: int = 32,
    workers: int = 2,
    score_threshold: float = 0.01,
    amp: bool = True,
) -> dict[int, dict]:
    """Rank 0 gets ``{sample index: {"boxes", "scores", "labels"}}`` in original image pixels; others ``{}``."""
    cfg = model.cfg
    size = tuple(cfg.input_size)
    batch_size = max(d.world_size, batch_size - batch_size % d.world_size)
    loader = ShardLoader(
        data_dir,
        LoaderConfig(batch_size=batch_size, image_size=size, workers=workers, train=False, shuffle=False),
        rank=d.rank,
        world_size=d.world_size,
    )
    reader = loader.dataset.reader
    model.eval()
    mine: dict[int, dict] = {}
    for batch in loader:
        x = to_model_input(batch_images(batch, d.device))
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(x)
        dets = decode(outputs.float(), cfg, score_threshold=score_threshold, max_detections=300)
        for i, valid, det in zip(batch["index"].tolist(), batch["valid"].tolist(), dets, strict=True):
            if not valid:
                continue
            ann = reader.annotation(i)
            scale, tx, ty = letterbox_params((ann["width"], ann["height"]), size)
            boxes = det["boxes"].float().cpu().numpy()
            boxes = (boxes - np.array([tx, ty, tx, ty], np.float32)) / scale
            mine[i] = {
                "boxes": boxes,
                "scores": det["scores"].float().cpu().numpy(),
                "labels": det["labels"].cpu().numpy(),
            }
    loader.close()
    gathered = all_gather_objects(mine, d)
    if not d.main:
        return {}
    merged: dict[int, dict] = {}
    for part in gathered:
        merged.update(part)
    return merged


def evaluate_model(model: torch.nn.Module, data_dir: str | Path, d: Dist, **kw) -> dict | None:
    """COCO AP and pedestrian MR-2 of ``model`` on ``data_dir``; the results on rank 0, None elsewhere."""
    preds = predict_dataset(model, data_dir, d, **kw)
    if not d.main:
        return None
    reader = ShardReader(data_dir)
    annotations = list(reader.annotations())
    empty = {
        "boxes": np.zeros((0, 4), np.float32),
        "scores": np.zeros(0, np.float32),
        "labels": np.zeros(0, np.int64),
    }
    predictions = [preds.get(i, empty) for i in range(len(annotations))]
    return evaluate_predictions(predictions, annotations, list(reader.categories))
