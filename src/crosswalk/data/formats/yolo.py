"""YOLO (Darknet / Ultralytics) detection labels.

``SRC/images/**/NAME.{jpg,jpeg,png,bmp}`` with ``SRC/labels/**/NAME.txt`` at the same relative path, one
object per line: ``class cx cy w h``, the box centre and size as fractions of the image width and height. An
image without a label file has no objects (YOLO's convention for background images); a label file without an
image is an error. Class names come from ``SRC/data.yaml`` (``names: [a, b]``, ``names:`` followed by ``- a``
lines, or by ``0: a`` lines; read by the small parser below, so PyYAML is not needed) or else
``SRC/classes.txt`` (one name a line). Names map to ours through ``records.LABELS`` (person -> pedestrian,
rider -> cyclist, car, bus, truck -> vehicle, ...). YOLO has no ignore flag, visibility or difficulty: those
take neutral values."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from crosswalk.data.formats.records import (
    DatasetImportError,
    SourceImage,
    SourceObject,
    number,
    our_category,
    relative,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_COMMENT = re.compile(r"(^|\s)#.*$")
_INDEXED = re.compile(r"^(\d+)\s*:\s*(.*)$")


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_yaml_names(text: str, file: str = "data.yaml") -> list[str]:
    """The ``names:`` entry of an Ultralytics data.yaml, as a list indexed by class id."""
    lines = [_COMMENT.sub("", line).rstrip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if not line.startswith("names:"):
            continue
        value = line[len("names:") :].strip()
        j = i
        while value[:1] in "[{" and value and value[-1] not in "]}" and j + 1 < len(lines):
            j += 1
            value += " " + lines[j].strip()
        if value.startswith("[") and value.endswith("]"):
            return [_unquote(t) for t in value[1:-1].split(",") if t.strip()]
        if value.startswith("{") and value.endswith("}"):
            items = [_INDEXED.match(t.strip()) for t in value[1:-1].split(",") if t.strip()]
        elif value:
            raise DatasetImportError(file, "names", f"expected a list or an id: name mapping, got {value!r}")
        else:
            block = []
            for raw in lines[i + 1 :]:
                if raw.strip() and not (raw[0].isspace() or raw.startswith("-")):
                    break  # the next top-level key
                block += [raw.strip()] if raw.strip() else []
            if all(b.startswith("-") for b in block):
                return [_unquote(b[1:]) for b in block]
            items = [_INDEXED.match(b) for b in block]
        if not all(items):
            raise DatasetImportError(file, "names", "expected '- name' or 'ID: name' entries")
        names = {int(m.group(1)): _unquote(m.group(2)) for m in items}
        if sorted(names) != list(range(len(names))):
            raise DatasetImportError(
                file, "names", f"class ids must be 0..{len(names) - 1}, got {sorted(names)}"
            )
        return [names[k] for k in range(len(names))]
    raise DatasetImportError(file, "", "no names: entry")


def read_class_names(src: Path) -> list[str]:
    if (src / "data.yaml").is_file():
        return parse_yaml_names((src / "data.yaml").read_text(), "data.yaml")
    if (src / "classes.txt").is_file():
        return [line.strip() for line in (src / "classes.txt").read_text().splitlines() if line.strip()]
    raise DatasetImportError(str(src), "", "no data.yaml or classes.txt naming the classes")


def _parse_labels(text: str, names: list[str]) -> list[SourceObject]:
    """Objects of one label file; ValueError(line, reason) when the file is malformed."""
    objects = []
    for n, line in enumerate(text.splitlines(), 1):
        fields, where = line.split(), f"line {n}"
        if not fields:
            continue
        try:
            cls, cx, cy, w, h = (number(v) for v in fields) if len(fields) == 5 else ()
        except ValueError as e:
            raise ValueError(where, f"expected 'class cx cy w h' (5 numbers), got {line.strip()!r}") from e
        if cls != int(cls) or not 0 <= cls < len(names):
            objects.append(
                SourceObject(where, fields[0], None, None, error=f"class {fields[0]} is not a class id")
            )
            continue
        name = names[int(cls)]
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        objects.append(SourceObject(where, name, our_category(name), box, normalized=True))
    return objects


def read_yolo(src: Path) -> Iterator[SourceImage]:
    names = read_class_names(src)
    images_dir, labels_dir = src / "images", src / "labels"
    if not images_dir.is_dir():
        raise DatasetImportError(str(src), "", "no images/ folder (expected images/ and labels/)")

    def by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[PurePosixPath, Path]:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        return {PurePosixPath(p.relative_to(folder).with_suffix("").as_posix()): p for p in files}

    images = by_stem(images_dir, IMAGE_SUFFIXES)
    labels = by_stem(labels_dir, (".txt",)) if labels_dir.is_dir() else {}
    for stem in sorted(set(images) | set(labels)):
        label, image = labels.get(stem), images.get(stem)
        file = relative(label or image, src)
        if image is None:
            yield SourceImage(file, "", error=f"no image images/{stem}{{.jpg,.png}}")
            continue
        record = SourceImage(file, "", stem=stem.name, image_path=image)
        if label is not None:
            try:
                record.objects = _parse_labels(label.read_text(), names)
            except (OSError, UnicodeDecodeError) as e:
                record.error = f"cannot read: {e}"
            except ValueError as e:
                record.where, record.error = e.args
        yield record
