"""The annotation contract: one JSON document per image, the same for synthetic and imported data.

Every stage reads and writes this shape; it is defined here once.

Annotation (``KEY.json`` next to ``KEY.jpg`` in a shard)::

    {
      "key": "000000042",                  # unique within the dataset, [A-Za-z0-9_-]+
      "width": 512, "height": 288,         # image size in pixels
      "lighting": "day" | "dusk" | "night" | null,
      "weather": "clear" | "fog" | "rain" | null,
      "camera": {                          # null when unknown (most real datasets)
        "height_m", "pitch_deg", "roll_deg", "hfov_deg", "focal_px", "cx", "cy"
      },
      "objects": [
        {
          "category": "pedestrian",        # one of the dataset's categories
          "kind": "adult",                 # finer type: adult, child, car, bus, poster, ... (free text)
          "box": [x1, y1, x2, y2],         # full extent, float pixels, may reach outside the image
          "visible_box": [x1, y1, x2, y2], # visible part, inside the image
          "visibility": 0.83,              # visible pixel fraction of the object's own mask, 0..1
          "truncation": 0.0,               # fraction of the full box outside the image, 0..1
          "distance_m": 23.4 | null,       # from the camera along the ground, when known
          "height_px": 61.0,               # full-box height in pixels
          "ignore": false                  # a region that counts neither as positive nor as negative
        }
      ],
      "extra": {...}                       # anything else: generator settings, import provenance
    }

Ignore regions (CityPersons' label 0: posters, mannequins, reflections) carry the category they would be
confused with and ``"ignore": true``.

Training target (what the loader yields per image, and what the model and evaluator consume)::

    {"boxes": float32 (N, 4) x1y1x2y2 pixels, "labels": int64 (N,), "ignore": bool (N,),
     "visibility": float32 (N,), "height_px": float32 (N,), "distance_m": float32 (N,) (nan if unknown)}
"""

from __future__ import annotations

import math
import re
from typing import Any

DEFAULT_CATEGORIES: tuple[str, ...] = ("pedestrian", "cyclist", "vehicle")
LIGHTING = ("day", "dusk", "night")
WEATHER = ("clear", "fog", "rain")
CAMERA_KEYS = ("height_m", "pitch_deg", "roll_deg", "hfov_deg", "focal_px", "cx", "cy")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")

# How far a full box may reach outside the image before it is surely a bad record (truncated objects
# legitimately extend past the border, but not by more than the image itself).
_MAX_OUTSIDE = 1.0


class AnnotationError(ValueError):
    """A record that breaks the contract above; the message names the record and the field."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_box(box: Any, name: str, width: int, height: int, inside: bool) -> list[str]:
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_number(v) for v in box)):
        return [f"{name} must be 4 finite numbers [x1, y1, x2, y2], got {box!r}"]
    x1, y1, x2, y2 = box
    errors = []
    if not (x2 > x1 and y2 > y1):
        errors.append(f"{name} {list(box)} has non-positive width or height")
    if inside:
        tol = 0.5
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            errors.append(f"{name} {list(box)} lies outside the {width}x{height} image")
    else:
        mx, my = _MAX_OUTSIDE * width, _MAX_OUTSIDE * height
        if (
            x2 < 0
            or y2 < 0
            or x1 > width
            or y1 > height
            or x1 < -mx
            or y1 < -my
            or x2 > width + mx
            or y2 > height + my
        ):
            errors.append(f"{name} {list(box)} lies outside the {width}x{height} image")
    return errors


def annotation_errors(ann: Any, categories: tuple[str, ...] = DEFAULT_CATEGORIES) -> list[str]:
    """Every way ``ann`` breaks the contract, as readable messages (empty when valid)."""
    if not isinstance(ann, dict):
        return [f"annotation must be a JSON object, got {type(ann).__name__}"]
    errors: list[str] = []
    key = ann.get("key")
    if not (isinstance(key, str) and KEY_PATTERN.match(key)):
        errors.append(f"key must match {KEY_PATTERN.pattern}, got {key!r}")
    width, height = ann.get("width"), ann.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        return errors + [f"width and height must be positive integers, got {width!r} x {height!r}"]
    if ann.get("lighting") not in (*LIGHTING, None):
        errors.append(f"lighting must be one of {LIGHTING} or null, got {ann.get('lighting')!r}")
    if ann.get("weather") not in (*WEATHER, None):
        errors.append(f"weather must be one of {WEATHER} or null, got {ann.get('weather')!r}")
    camera = ann.get("camera")
    if camera is not None:
        if not isinstance(camera, dict) or any(not _is_number(camera.get(k)) for k in CAMERA_KEYS):
            errors.append(f"camera must be null or hold numbers {CAMERA_KEYS}")
    objects = ann.get("objects")
    if not isinstance(objects, list):
        return errors + ["objects must be a list"]
    for i, obj in enumerate(objects):
        where = f"objects[{i}]"
        if not isinstance(obj, dict):
            errors.append(f"{where} must be an object")
            continue
        if obj.get("category") not in categories:
            errors.append(f"{where}.category {obj.get('category')!r} is not one of {list(categories)}")
        errors += [f"{where}.{e}" for e in _check_box(obj.get("box"), "box", width, height, inside=False)]
        if obj.get("visible_box") is not None:
            errors += [
                f"{where}.{e}" for e in _check_box(obj.get("visible_box"), "visible_box", width, height, True)
            ]
        for field in ("visibility", "truncation"):
            v = obj.get(field)
            if not (_is_number(v) and 0.0 <= v <= 1.0):
                errors.append(f"{where}.{field} must be a number in [0, 1], got {v!r}")
        d = obj.get("distance_m")
        if d is not None and not (_is_number(d) and d >= 0):
            errors.append(f"{where}.distance_m must be null or a non-negative number, got {d!r}")
        if not isinstance(obj.get("ignore"), bool):
            errors.append(f"{where}.ignore must be true or false, got {obj.get('ignore')!r}")
    return errors


def validate_annotation(ann: Any, categories: tuple[str, ...] = DEFAULT_CATEGORIES) -> dict:
    """Return ``ann`` unchanged if it meets the contract, else raise AnnotationError listing every problem."""
    errors = annotation_errors(ann, categories)
    if errors:
        raise AnnotationError("; ".join(errors))
    return ann


def make_object(
    category: str,
    box: list[float],
    width: int,
    height: int,
    *,
    kind: str | None = None,
    visible_box: list[float] | None = None,
    visibility: float | None = None,
    distance_m: float | None = None,
    ignore: bool = False,
) -> dict:
    """An object record with derived fields filled in: truncation and height from the box, and
    visibility from the visible box when the source gives no mask (1.0 when it gives nothing)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    inside = max(cx2 - cx1, 0.0) * max(cy2 - cy1, 0.0)
    truncation = 0.0 if area <= 0 else 1.0 - inside / area
    if visible_box is None:
        visible_box = [cx1, cy1, cx2, cy2]
    if visibility is None:
        vx1, vy1, vx2, vy2 = visible_box
        vis_area = max(vx2 - vx1, 0.0) * max(vy2 - vy1, 0.0)
        visibility = 1.0 if area <= 0 else min(1.0, vis_area / area)
    return {
        "category": category,
        "kind": kind or category,
        "box": [x1, y1, x2, y2],
        "visible_box": [float(v) for v in visible_box],
        "visibility": round(float(visibility), 4),
        "truncation": round(min(max(truncation, 0.0), 1.0), 4),
        "distance_m": None if distance_m is None else float(distance_m),
        "height_px": round(y2 - y1, 2),
        "ignore": bool(ignore),
    }
