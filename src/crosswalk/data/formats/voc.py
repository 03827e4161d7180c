"""Pascal VOC XML annotations.

``SRC/Annotations/*.xml``, one file per image, naming its image in ``<filename>`` under ``SRC/JPEGImages/``
(``STEM.jpg`` when the tag is missing). Each ``<object>`` has ``<name>``, ``<bndbox>`` with ``xmin ymin xmax
ymax``, and optionally ``<difficult>`` and ``<truncated>``. VOC coordinates are 1-based inclusive pixel
indices (the devkit's convention), so the box in continuous pixels is ``[xmin - 1, ymin - 1, xmax, ymax]``.
``difficult=1`` becomes ``ignore: true`` (VOC's own evaluation neither rewards nor penalises them); the
``truncated`` flag is kept on each object as ``voc_truncated`` (the schema's ``truncation`` is the
measured fraction outside the image). ``<size>`` is a cross-check on the image.
Names map to ours through ``records.LABELS``: person -> pedestrian; car, bus, motorbike -> vehicle; bicycle
and VOC's other classes are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

try:  # refuses entity-expansion bombs; VOC files are local, so the standard library will do without it
    import defusedxml.ElementTree as ElementTree
except ImportError:
    import xml.etree.ElementTree as ElementTree

from crosswalk.data.formats.records import (
    DatasetImportError,
    SourceImage,
    SourceObject,
    number,
    our_category,
    relative,
)


def _flag(element, tag: str) -> bool:
    return (element.findtext(tag) or "0").strip() in ("1", "true", "True")


def _object(n: int, element) -> SourceObject:
    name = (element.findtext("name") or "").strip()
    where = f"object {n} ({name})"
    bndbox = element.find("bndbox")
    try:
        if bndbox is None:
            raise ValueError("no <bndbox>")
        xmin, ymin, xmax, ymax = (number(bndbox.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError as e:
        return SourceObject(where, name, None, None, error=f"bndbox: {e}")
    box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
    obj = SourceObject(where, name, our_category(name), box, ignore=_flag(element, "difficult"))
    obj.fields = {"voc_truncated": _flag(element, "truncated")}
    return obj


def _declared_size(root) -> tuple[int, int] | None:
    try:
        w, h = (int(number(root.findtext(f"size/{t}"))) for t in ("width", "height"))
    except ValueError:
        return None  # no <size>: nothing to cross-check
    return (w, h) if w > 0 and h > 0 else None  # some converters write 0 for "unknown"


def read_voc(src: Path) -> Iterator[SourceImage]:
    annotations = src / "Annotations"
    if not annotations.is_dir():
        raise DatasetImportError(
            str(src), "", "no Annotations/ folder (expected Annotations/ and JPEGImages/)"
        )
    for path in sorted(annotations.glob("*.xml")):
        file = relative(path, src)
        try:
            root = ElementTree.parse(path).getroot()
        except (ElementTree.ParseError, OSError) as e:
            yield SourceImage(file, "", error=f"malformed XML: {e}")
            continue
        filename = (root.findtext("filename") or f"{path.stem}.jpg").strip()
        yield SourceImage(
            file,
            "",
            stem=Path(filename).stem,
            image_path=src / "JPEGImages" / filename,
            declared_size=_declared_size(root),
            objects=[_object(n, e) for n, e in enumerate(root.findall("object"), 1)],
        )
