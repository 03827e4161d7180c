"""Detections drawn on the image, for people to look at (``crosswalk predict``, the vehicle loop's GIF)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# One colour per class (RGB), in the montage's palette: pedestrians stand out in orange.
COLORS = {"pedestrian": (255, 140, 0), "cyclist": (60, 180, 255), "vehicle": (120, 220, 90)}


def draw_detections(image: np.ndarray, detections: list[dict], path: str | Path | None = None) -> np.ndarray:
    """A copy of RGB ``image`` with boxes and "class score" labels; written as JPEG when ``path`` is given."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for d in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in d["box"])
        color = COLORS.get(d["class"], (255, 255, 255))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        label = f"{d['class']} {d['score']:.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        y = max(th + 2, y1)
        cv2.rectangle(out, (x1, y - th - 3), (x1 + tw + 2, y), color, -1)
        cv2.putText(out, label, (x1 + 1, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    if path is not None:
        cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out
