"""Letterboxing: fit an image into the model's canvas keeping its aspect, and map boxes back.

NumPy and OpenCV only, so the serving path (``crosswalk.infer`` with onnxruntime) never imports torch.
"""

from __future__ import annotations

import cv2
import numpy as np

LETTERBOX_FILL = 114  # the grey YOLO-family letterboxes use, so padded borders look the same everywhere


def letterbox_params(in_size: tuple[int, int], out_size: tuple[int, int]) -> tuple[float, float, float]:
    """Scale and integer centring offsets that fit ``in_size`` (W, H) into ``out_size``, keeping the aspect."""
    (w, h), (out_w, out_h) = in_size, out_size
    scale = min(out_w / w, out_h / h)
    return scale, float(round((out_w - scale * w) / 2.0)), float(round((out_h - scale * h) / 2.0))


def warp_image(
    image: np.ndarray, out_size: tuple[int, int], scale: float, tx: float, ty: float, flip: bool = False
) -> np.ndarray:
    """CPU reference of the map: flip, resize, paste at integer offset (tx, ty) into a grey canvas."""
    h, w = image.shape[:2]
    out_w, out_h = out_size
    sw, sh = round(w * scale), round(h * scale)
    tx, ty = round(tx), round(ty)
    if (sw, sh, tx, ty) == (out_w, out_h, 0, 0) and (w, h) == (out_w, out_h):
        return cv2.flip(image, 1) if flip else image
    if flip:
        image = cv2.flip(image, 1)
    if (sw, sh) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (sw, sh), interpolation=interp)
    canvas = np.full((out_h, out_w, 3), LETTERBOX_FILL, np.uint8)
    x0, y0, x1, y1 = max(tx, 0), max(ty, 0), min(tx + sw, out_w), min(ty + sh, out_h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = image[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
    return canvas
