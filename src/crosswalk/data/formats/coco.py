"""COCO instances JSON: read it, and write our shards as one.

Import: ``SRC`` is the JSON file (``images``, ``annotations``, ``categories``). Each image's ``file_name`` is
looked up beside the JSON first, then in an ``images/`` folder beside it, and for COCO's own layout
(``annotations/instances_val2017.json``) in ``val2017/`` or ``images/val2017/`` beside ``annotations/``.
``bbox`` is ``[x, y, w, h]`` in pixels; ``iscrowd: 1`` becomes ``ignore: true``. Category names map through
``records.LABELS``: person, pedestrian -> pedestrian; rider, cyclist -> cyclist; car, truck, bus, van,
vehicle, motorcycle -> vehicle; a bicycle alone and COCO's other classes are dropped; any other name is an
error naming it.

Export: ``export_coco(data_dir, out_file)`` writes that JSON, with ``images/KEY.jpg`` beside it, and keeps
what COCO has no field for under ``"crosswalk"``: per annotation the exact float ``box`` (COCO's xywh would
round x2 = x + w), ``visible_box``, ``visibility``, ``truncation``, ``kind``, ``distance_m``, ``height_px``;
per image ``lighting``, ``weather``, ``camera`` and ``extra``. The importer reads these back, so shards ->
COCO -> shards keeps every box bit for bit."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crosswalk.data.formats.records import (
    DatasetImportError,
    SourceImage,
    SourceObject,
    number,
    our_category,
    xywh_to_xyxy,
)
from crosswalk.data.shards import ShardReader, atomic_write_bytes

_EXACT_FIELDS = ("visibility", "truncation", "height_px")  # restored as exported, not re-derived


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _box4(value: Any) -> list[float]:
    if not (isinstance(value, list) and len(value) == 4):
        raise ValueError(f"expected 4 numbers, got {value!r}")
    return [number(v) for v in value]


def _agrees(exact: list[float], box: list[float]) -> bool:
    return all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(exact, box, strict=True))


def _apply_crosswalk(obj: SourceObject, cw: dict) -> None:
    """Our export's extra fields. Its geometry is used only while it agrees with ``bbox`` (not re-edited)."""
    if "box" in cw and _agrees(exact := _box4(cw["box"]), obj.box):
        obj.box = exact
        if cw.get("visible_box") is not None:
            obj.visible_box = _box4(cw["visible_box"])
        obj.fields = {k: number(cw[k]) for k in _EXACT_FIELDS if k in cw}
    if isinstance(cw.get("kind"), str):
        obj.kind = cw["kind"]
    if cw.get("distance_m") is not None:
        obj.distance_m = number(cw["distance_m"])


def _object(ann: dict, category_names: dict, image_id: Any) -> SourceObject:
    where = f"annotation id {ann.get('id')} (image {image_id})"
    category_id = ann.get("category_id")
    name = category_names.get(category_id) if _is_id(category_id) else None
    if name is None:
        return SourceObject(
            where, str(category_id), None, None, error=f"category_id {category_id!r} is not in categories"
        )
    try:
        obj = SourceObject(where, name, our_category(name), xywh_to_xyxy(ann.get("bbox")))
    except ValueError as e:
        return SourceObject(where, name, None, None, error=str(e))
    obj.ignore = bool(ann.get("iscrowd", 0))
    if isinstance(ann.get("crosswalk"), dict):
        try:
            _apply_crosswalk(obj, ann["crosswalk"])
        except ValueError as e:
            return SourceObject(where, name, None, None, error=f"crosswalk fields: {e}")
    return obj


def _load(src: Path) -> dict:
    if src.is_dir():
        raise DatasetImportError(str(src), "", "is a folder; pass the COCO instances JSON file")
    try:
        doc = json.loads(src.read_bytes())
    except OSError as e:
        raise DatasetImportError(src.name, "", f"cannot read: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetImportError(src.name, "", f"not valid JSON: {e}") from e
    if not (isinstance(doc, dict) and all(isinstance(doc.get(k), list) for k in ("images", "annotations"))):
        raise DatasetImportError(
            src.name, "", "not a COCO instances file: needs lists images and annotations"
        )
    return doc


def image_dirs(src: Path) -> list[Path]:
    """Where ``file_name`` is looked for, in order (see the module docstring)."""
    dirs = [src.parent, src.parent / "images"]
    if src.stem.startswith("instances_"):
        split = src.stem.removeprefix("instances_")
        dirs += [src.parent.parent / split, src.parent.parent / "images" / split]
    return dirs


def read_coco(src: Path) -> Iterator[SourceImage]:
    doc = _load(src)
    name, dirs = src.name, image_dirs(src)
    category_names = {}
    for i, c in enumerate(doc.get("categories") or []):
        if not (isinstance(c, dict) and _is_id(c.get("id")) and isinstance(c.get("name"), str)):
            raise DatasetImportError(name, f"categories[{i}]", f"needs an id and a name, got {c!r}")
        category_names[c["id"]] = c["name"]
    images = doc["images"]
    image_ids = {img["id"] for img in images if isinstance(img, dict) and _is_id(img.get("id"))}
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for i, ann in enumerate(doc["annotations"]):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not (_is_id(image_id) and image_id in image_ids):
            where = f"annotation id {ann.get('id')}" if isinstance(ann, dict) else f"annotations[{i}]"
            yield SourceImage(name, where, error=f"image_id {image_id!r} is not in images")
            continue
        by_image[image_id].append(ann)
    seen: set = set()
    for i, img in enumerate(images):
        image_id = img.get("id") if isinstance(img, dict) else None
        file_name = img.get("file_name") if isinstance(img, dict) else None
        if not (_is_id(image_id) and isinstance(file_name, str) and file_name) or image_id in seen:
            yield SourceImage(name, f"images[{i}]", error="needs a unique id and a file_name")
            continue
        seen.add(image_id)
        where = f"image {image_id} ({file_name})"
        path = next((d / file_name for d in dirs if (d / file_name).is_file()), None)
        if path is None:
            yield SourceImage(name, where, error=f"image file not found in {', '.join(map(str, dirs))}")
            continue
        size = (img.get("width"), img.get("height"))
        cw = img.get("crosswalk") if isinstance(img.get("crosswalk"), dict) else {}
        yield SourceImage(
            name,
            where,
            stem=Path(file_name).stem,
            image_path=path,
            declared_size=size if all(isinstance(v, int) for v in size) else None,
            objects=[_object(a, category_names, image_id) for a in by_image.get(image_id, [])],
            lighting=cw.get("lighting"),
            weather=cw.get("weather"),
            camera=cw.get("camera"),
            extra={**(cw["extra"] if isinstance(cw.get("extra"), dict) else {}), "coco_image_id": image_id},
        )


def export_coco(data_dir: str | Path, out_file: str | Path, *, write_images: bool = True) -> dict:
    """Write the shard dataset at ``data_dir`` as one COCO JSON (and ``images/`` beside it); return it.

    Ignore regions become ``iscrowd: 1``; category ids are 1.. in the dataset's category order.
    """
    reader = ShardReader(data_dir)
    out_file = Path(out_file)
    image_dir = out_file.parent / "images"
    if write_images:
        image_dir.mkdir(parents=True, exist_ok=True)
    category_ids = {c: i + 1 for i, c in enumerate(reader.categories)}
    images, annotations = [], []
    for i in range(len(reader)):
        ann = reader.annotation(i)
        file_name = f"{ann['key']}.{reader.index[i]['ext']}"
        if write_images:
            (image_dir / file_name).write_bytes(reader.image_bytes(i))
        cw = {k: ann.get(k) for k in ("lighting", "weather", "camera", "extra")}
        images.append(
            {
                "id": i + 1,
                "file_name": file_name,
                "width": ann["width"],
                "height": ann["height"],
                "crosswalk": cw,
            }
        )
        for obj in ann["objects"]:
            x1, y1, x2, y2 = obj["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category_ids[obj["category"]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(obj["ignore"]),
                    "crosswalk": {k: v for k, v in obj.items() if k not in ("category", "ignore")},
                }
            )
    doc = {
        "info": {"description": "exported by crosswalk", "source": reader.manifest.get("source")},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": c, "supercategory": "road_user"} for c, i in category_ids.items()],
    }
    reader.close()
    atomic_write_bytes(out_file, (json.dumps(doc) + "\n").encode())
    return doc
