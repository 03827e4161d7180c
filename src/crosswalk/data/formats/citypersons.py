"""CityPersons boxes in the Cityscapes layout (gtBboxCityPersons, as cityscapesScripts ships them).

``SRC/gtBboxCityPersons/SPLIT/CITY/NAME_gtBboxCityPersons.json`` per image, with its image at
``SRC/leftImg8bit/SPLIT/CITY/NAME_leftImg8bit.png``. Each file is ``{"imgWidth", "imgHeight", "objects":
[{"label", "bbox": [x, y, w, h], "bboxVis": [x, y, w, h], "instanceId"}]}``; ``bbox`` is the full body (drawn
as a well-aligned box for pedestrians and riders, equal to ``bboxVis`` otherwise) and ``bboxVis`` the visible
part, taken from the segmentation mask (cvgroup-njust/CityPersons, annotations/README.txt).

Mapping: pedestrian -> pedestrian; rider -> cyclist; sitting person, person (other) -> pedestrian;
person group and ignore (posters, mannequins, reflections) -> pedestrian with ``ignore: true``. The label is
kept as ``kind``; ``visible_box`` is ``bboxVis``; ``visibility`` is area(bboxVis) / area(bbox).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from crosswalk.data.formats.records import (
    DatasetImportError,
    SourceImage,
    SourceObject,
    relative,
    xywh_to_xyxy,
)

LABELS: dict[str, tuple[str, bool]] = {  # CityPersons label -> (our category, ignore)
    "pedestrian": ("pedestrian", False),
    "rider": ("cyclist", False),
    "sitting person": ("pedestrian", False),
    "person (other)": ("pedestrian", False),
    "person group": ("pedestrian", True),
    "ignore": ("pedestrian", True),
}
ANNOTATION_SUFFIX, IMAGE_SUFFIX = "_gtBboxCityPersons.json", "_leftImg8bit.png"


def _area(box: list[float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _object(n: int, entry: object) -> SourceObject:
    label = entry.get("label") if isinstance(entry, dict) else None
    where = f"object {n} ({label})"
    if not isinstance(label, str):
        return SourceObject(where, str(label), None, None, error=f"needs a label, got {entry!r}")
    try:
        box = xywh_to_xyxy(entry.get("bbox"))
        visible = xywh_to_xyxy(entry.get("bboxVis", entry.get("bbox")))
    except ValueError as e:
        return SourceObject(where, label, None, None, error=str(e))
    category, ignore = LABELS.get(label, (None, False))
    visibility = min(1.0, _area(visible) / _area(box)) if _area(box) > 0 else None
    return SourceObject(
        where, label, category, box, visible_box=visible, visibility=visibility, ignore=ignore, kind=label
    )


def read_citypersons(src: Path) -> Iterator[SourceImage]:
    root = src / "gtBboxCityPersons"
    if not root.is_dir():
        raise DatasetImportError(
            str(src), "", "no gtBboxCityPersons/ folder (expected SPLIT/CITY/*.json under it)"
        )
    for path in sorted(root.glob(f"*/*/*{ANNOTATION_SUFFIX}")):
        file = relative(path, src)
        split, city = path.parent.parent.name, path.parent.name
        name = path.name.removesuffix(ANNOTATION_SUFFIX)
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            yield SourceImage(file, "", error=f"not valid JSON: {e}")
            continue
        if not (isinstance(doc, dict) and isinstance(doc.get("objects"), list)):
            yield SourceImage(file, "", error="expected an object with an objects list")
            continue
        size = (doc.get("imgWidth"), doc.get("imgHeight"))
        yield SourceImage(
            file,
            "",
            stem=name,
            image_path=src / "leftImg8bit" / split / city / f"{name}{IMAGE_SUFFIX}",
            declared_size=size if all(isinstance(v, int) for v in size) else None,
            objects=[_object(n, o) for n, o in enumerate(doc["objects"], 1)],
            extra={"split": split, "city": city},
        )
