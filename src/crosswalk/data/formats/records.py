"""What every format reader yields: one ``SourceImage`` per image, holding its ``SourceObject`` s.

Readers only parse. They turn a source's boxes into x1y1x2y2 float pixels and its class names into our
categories (``LABELS`` below, or their own table), and they describe every record so an error line can name
it: ``FILE: RECORD: REASON`` (``annotations.json: annotation id 17 (image 3): box [..] lies outside the
640x480 image``). Reading images, checking boxes against the schema and writing shards is done once, for all
formats, in ``importer.py``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Source class name (lower case) -> our category. "" marks classes that are known but not ours: their
# objects are dropped and counted, not reported as errors. A bicycle alone is not a cyclist (its rider is
# labelled "person" in COCO and VOC, and that box is the pedestrian-like shape the detector must find).
LABELS: dict[str, str] = {
    "person": "pedestrian",
    "pedestrian": "pedestrian",
    "people": "pedestrian",
    "rider": "cyclist",
    "cyclist": "cyclist",
    "car": "vehicle",
    "truck": "vehicle",
    "bus": "vehicle",
    "van": "vehicle",
    "vehicle": "vehicle",
    "motorcycle": "vehicle",
    "motorbike": "vehicle",
    "bicycle": "",
}
# The rest of COCO's 80 and VOC's 20 classes: nothing a crossing detector should learn, dropped.
_NOT_OURS = (
    "airplane, aeroplane, train, boat, traffic light, fire hydrant, stop sign, parking meter, bench, "
    "bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe, backpack, umbrella, handbag, tie,"
    " suitcase, frisbee, skis, snowboard, sports ball, kite, baseball bat, baseball glove, skateboard, "
    "surfboard, tennis racket, bottle, wine glass, cup, fork, knife, spoon, bowl, banana, apple, "
    "sandwich, orange, broccoli, carrot, hot dog, pizza, donut, cake, chair, couch, sofa, potted plant, "
    "pottedplant, bed, dining table, diningtable, toilet, tv, tvmonitor, laptop, mouse, remote, keyboard,"
    " cell phone, microwave, oven, toaster, sink, refrigerator, book, clock, vase, scissors, teddy bear, "
    "hair drier, toothbrush"
)
LABELS.update({name.strip(): "" for name in _NOT_OURS.split(",")})


def our_category(name: str) -> str | None:
    """Our category for a COCO/VOC/YOLO class name: "" when it is known but not ours, None when unknown."""
    return LABELS.get(name.strip().lower())


class DatasetImportError(ValueError):
    """A source record that cannot be imported; the message is one line naming the file and the record."""

    def __init__(self, file: str, record: str, reason: str):
        super().__init__(f"{file}: {record}: {reason}" if record else f"{file}: {reason}")
        self.file, self.record, self.reason = file, record, reason


@dataclass
class SourceObject:
    where: str  # the record, e.g. "annotation id 17 (image 3)", "line 4", "object 2 (person)"
    name: str  # the source's class name, for messages and for categories named in import_dataset
    category: str | None  # ours; "" = known but not imported (dropped); None = unknown (an error)
    box: list[float] | None  # x1y1x2y2 float pixels; None with ``error`` set
    normalized: bool = False  # box in fractions of the image size (YOLO): scaled once the image is read
    visible_box: list[float] | None = None
    visibility: float | None = None
    ignore: bool = False
    kind: str | None = None
    distance_m: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # set on the record as they are: our export's
    # exact visibility/truncation/height_px, VOC's truncated flag
    error: str | None = None  # a malformed record: skip this object


@dataclass
class SourceImage:
    file: str  # the annotation file the record comes from, relative to SRC where there is one
    where: str  # the record within it, "" when the file is the record
    stem: str = ""  # becomes the sample key, once sanitised and made unique
    image_path: Path | None = None
    declared_size: tuple[int, int] | None = None  # (width, height) the annotation claims: a cross-check
    objects: list[SourceObject] = field(default_factory=list)
    lighting: str | None = None
    weather: str | None = None
    camera: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a missing or malformed record: skip the whole image


def number(value: Any) -> float:
    """A finite float from a JSON/XML/txt field, or ValueError saying what was there."""
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {value!r}")
    return x


def xywh_to_xyxy(xywh: Any) -> list[float]:
    try:
        if not isinstance(xywh, (list, tuple)) or len(xywh) != 4:
            raise ValueError
        x, y, w, h = (number(v) for v in xywh)
    except ValueError:
        raise ValueError(f"bbox must be 4 numbers [x, y, w, h], got {xywh!r}") from None
    return [x, y, x + w, y + h]


def relative(path: Path, root: Path) -> str:
    """``path`` as error messages and provenance show it: relative to the source folder."""
    return Path(os.path.relpath(path, root)).as_posix()
