"""One writer for every format: records from a reader -> checked annotations -> shards.

``import_dataset(fmt, SRC, OUT)`` reads each image's header for its true size (a size the source declares is
only a cross-check), keeps JPEG and PNG bytes as they are (other types are re-encoded as PNG), turns each
object into the schema's record with ``make_object`` (fields a source lacks get neutral values: visibility
from the visible box, else 1.0; distance, lighting, weather and camera null) and checks it with the schema's
own rules: a box may reach past the border (a truncated object) but not lie wholly outside or be empty.
Nothing is clipped silently.

Errors are one line, ``FILE: RECORD: REASON``. ``on_error="fail"`` raises ``DatasetImportError`` at the first
and removes the shard files this call wrote (no manifest is written, so nothing looks like a dataset).
``on_error="skip"`` leaves out the record and goes on: a missing, corrupt or malformed image record skips that
image; a bad box, a malformed object line or an unknown category skips that object only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from tqdm import tqdm

from crosswalk.data.formats import citypersons, coco, voc, yolo
from crosswalk.data.formats.records import DatasetImportError, SourceImage, SourceObject, relative
from crosswalk.data.schema import DEFAULT_CATEGORIES, annotation_errors, make_object
from crosswalk.data.shards import DEFAULT_SHARD_SIZE, INDEX_NAME, MANIFEST_NAME, ShardWriter

READERS: dict[str, Callable[[Path], Iterator[SourceImage]]] = {
    "coco": coco.read_coco,
    "yolo": yolo.read_yolo,
    "voc": voc.read_voc,
    "citypersons": citypersons.read_citypersons,
}
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-]+")
_MAX_KEY_CHARS = 56  # the shard index stores keys as <U64; leave room for a "_NNN" uniqueness suffix


@dataclass
class ImportReport:
    imported: int = 0  # images written
    skipped: int = 0  # records left out, whole images or single objects: one line each in ``errors``
    errors: list[str] = field(default_factory=list)
    dropped: int = 0  # objects of classes not imported: a lone bicycle, a dog, a category not asked for


def read_image(path: Path) -> tuple[bytes, str, int, int]:
    """(bytes, ext, width, height); JPEG and PNG bytes unchanged. ValueError when it does not decode."""
    data = path.read_bytes()
    # Decoded as the loader and verify decode it (EXIF orientation applied), so the size is the one they see;
    # a full decode, not just the header, so a corrupt file is caught here rather than in training.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ValueError("does not decode as an image (corrupt or not an image)")
    height, width = image.shape[:2]
    if data[:3] == b"\xff\xd8\xff":
        return data, "jpg", width, height
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data, "png", width, height
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("decodes but cannot be re-encoded as PNG")
    return png.tobytes(), "png", width, height


def unique_key(stem: str, taken: set[str]) -> str:
    base = _UNSAFE_KEY_CHARS.sub("_", stem)[:_MAX_KEY_CHARS] or "image"
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}_{n}"
    taken.add(key)
    return key


class _Policy:
    """Raise on the first error, or count it and let the caller skip the record."""

    def __init__(self, on_error: str, report: ImportReport):
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        self.fail, self.report = on_error == "fail", report

    def __call__(self, file: str, where: str, reason: str) -> None:
        error = DatasetImportError(file, where, reason)
        if self.fail:
            raise error
        self.report.skipped += 1
        self.report.errors.append(str(error))


def _convert_object(obj: SourceObject, w: int, h: int, categories: tuple[str, ...]) -> dict | str | None:
    """The schema record, an error reason, or None when the object's class is not imported."""
    if obj.error:
        return obj.error
    category = obj.name if obj.name in categories else obj.category
    if category is None:
        return (
            f"unknown category {obj.name!r}: add it to LABELS in crosswalk/data/formats/records.py "
            f"or pass categories=(..., {obj.name!r})"
        )
    if category not in categories:
        return None
    box = obj.box if not obj.normalized else [v * s for v, s in zip(obj.box, (w, h, w, h), strict=True)]
    record = make_object(
        category,
        box,
        w,
        h,
        kind=obj.kind,
        visible_box=obj.visible_box,
        visibility=obj.visibility,
        distance_m=obj.distance_m,
        ignore=obj.ignore,
    )
    record.update(obj.fields)
    errors = [e.removeprefix("objects[0].") for e in annotation_errors(_shell(w, h, [record]), categories)]
    # a box wholly outside also leaves an empty clipped visible_box: name the cause only
    box_errors = [e for e in errors if e.startswith("box ")]
    return "; ".join(box_errors or errors) or record


def _shell(w: int, h: int, objects: list[dict]) -> dict:
    return {"key": "k", "width": w, "height": h, "objects": objects}


def _convert(
    rec: SourceImage,
    root: Path,
    fmt: str,
    categories: tuple[str, ...],
    problem: _Policy,
    report: ImportReport,
) -> tuple[dict, bytes, str] | None:
    if rec.error or rec.image_path is None:
        return problem(rec.file, rec.where, rec.error or "no image for this record")
    image_name = relative(rec.image_path, root)
    try:
        data, ext, w, h = read_image(rec.image_path)
    except OSError as e:
        return problem(rec.file, rec.where, f"cannot read image {image_name}: {e.strerror or e}")
    except ValueError as e:
        return problem(rec.file, rec.where, f"image {image_name} {e}")
    if rec.declared_size is not None and rec.declared_size != (w, h):
        dw, dh = rec.declared_size
        return problem(rec.file, rec.where, f"declared size {dw}x{dh} but image {image_name} is {w}x{h}")
    objects = []
    for obj in rec.objects:
        result = _convert_object(obj, w, h, categories)
        if result is None:
            report.dropped += 1
        elif isinstance(result, str):
            problem(rec.file, obj.where, result)
        else:
            objects.append(result)
    ann = {
        **_shell(w, h, objects),
        "lighting": rec.lighting,
        "weather": rec.weather,
        "camera": rec.camera,
        "extra": {**rec.extra, "import": {"format": fmt, "file": rec.file, "image": image_name}},
    }
    errors = annotation_errors(ann, categories)
    if errors:
        return problem(rec.file, rec.where, "; ".join(errors))
    return ann, data, ext


def _remove_partial(out: Path, created: bool) -> None:
    for path in [
        *out.glob("shard-*.tar"),
        out / INDEX_NAME,
        out / f"{INDEX_NAME}.tmp",
        out / f"{MANIFEST_NAME}.tmp",
    ]:
        path.unlink(missing_ok=True)
    if created and not any(out.iterdir()):
        out.rmdir()


def import_dataset(
    fmt: str,
    src: str | Path,
    out: str | Path,
    *,
    on_error: Literal["fail", "skip"] = "fail",
    categories: tuple[str, ...] | None = None,
    shard_size_bytes: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
) -> ImportReport:
    """Import the ``fmt`` dataset at ``src`` into a new shard folder ``out``; see the module docstring.

    ``categories`` are the output dataset's categories (default pedestrian, cyclist, vehicle): source classes
    that map to one outside them are dropped, and a source class named like one of them is kept as itself.
    Raises DatasetImportError when the source itself is unreadable or no image could be imported.
    """
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(READERS)}")
    src, out = Path(src), Path(out)
    root = src if src.is_dir() else src.parent  # image paths in messages are relative to it
    categories = tuple(categories or DEFAULT_CATEGORIES)
    report = ImportReport()
    problem = _Policy(on_error, report)
    created = not out.exists()
    source = {"import": {"format": fmt, "path": str(src.resolve()), "on_error": on_error}}
    writer = ShardWriter(out, source=source, categories=categories, shard_size_bytes=shard_size_bytes)
    try:
        with writer:
            keys: set[str] = set()
            for rec in tqdm(READERS[fmt](src), desc=f"import {fmt}", unit=" images", disable=not progress):
                converted = _convert(rec, root, fmt, categories, problem, report)
                if converted is not None:
                    ann, data, ext = converted
                    ann["key"] = unique_key(rec.stem, keys)
                    writer.write(ann["key"], data, ann, ext)
                    report.imported += 1
            if report.imported == 0:
                first = f"; first error: {report.errors[0]}" if report.errors else ""
                raise DatasetImportError(str(src), "", f"no image imported ({report.skipped} skipped){first}")
    except BaseException:
        if not (out / MANIFEST_NAME).exists():
            _remove_partial(out, created)
        raise
    return report


IMPORTERS: dict[str, Callable[..., ImportReport]] = {
    fmt: functools.partial(import_dataset, fmt) for fmt in READERS
}
