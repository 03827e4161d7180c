"""Shared fixtures: tiny datasets built in tmp folders, never downloaded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from crosswalk.data.schema import make_object
from crosswalk.data.shards import ShardWriter


def write_tiny_dataset(out: Path, n: int = 24, size: tuple[int, int] = (64, 48), seed: int = 0, **kw) -> Path:
    """``n`` noise images with 0-3 random boxes each: enough for loader and shard tests, built in ms."""
    rng = np.random.default_rng(seed)
    w, h = size
    with ShardWriter(out, source={"test": "tiny"}, **kw) as writer:
        for i in range(n):
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            objects = []
            for _ in range(int(rng.integers(0, 4))):
                x1, y1 = rng.uniform(0, w - 12), rng.uniform(0, h - 16)
                bw, bh = rng.uniform(4, 12), rng.uniform(8, 16)
                cat = ["pedestrian", "cyclist", "vehicle"][int(rng.integers(0, 3))]
                objects.append(
                    make_object(cat, [x1, y1, x1 + bw, y1 + bh], w, h, ignore=bool(rng.random() < 0.1))
                )
            key = f"{i:06d}"
            ann = {
                "key": key,
                "width": w,
                "height": h,
                "lighting": "day",
                "weather": "clear",
                "camera": None,
                "objects": objects,
                "extra": {},
            }
            writer.write(key, jpeg.tobytes(), ann)
    return out


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")
