"""Importers (COCO, YOLO, VOC, CityPersons) and the COCO exporter, on tiny datasets built in tmp folders.

One spec of images and boxes is written out in each format by the ``write_*`` helpers below, so every
importer is checked against the same expected shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from crosswalk.data.formats import DatasetImportError, export_coco, import_dataset
from crosswalk.data.formats.yolo import parse_yaml_names
from crosswalk.data.schema import make_object
from crosswalk.data.shards import DatasetError, ShardReader, ShardWriter

W, H = 64, 48


def encode(ext: str, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(f".{ext}", image)
    assert ok
    return buf.tobytes()


# (stem, image ext, objects as (source label, [x1, y1, x2, y2] pixels, ignore)); "write": False: no image
GOOD = [
    {
        "stem": "a",
        "ext": "jpg",
        "objects": [
            ("person", [10.0, 5.0, 30.0, 35.0], False),
            ("car", [40.0, 20.0, 62.0, 40.0], False),
            ("bicycle", [2.0, 30.0, 12.0, 46.0], False),  # a bicycle alone: dropped
        ],
    },
    {
        "stem": "b",
        "ext": "png",
        "objects": [("person", [50.0, 10.0, 70.0, 20.0], True)],
    },  # past the right edge
]
# what GOOD becomes: per key, (category, box, ignore, visibility)
EXPECTED = {
    "a": [
        ("pedestrian", [10.0, 5.0, 30.0, 35.0], False, 1.0),
        ("vehicle", [40.0, 20.0, 62.0, 40.0], False, 1.0),
    ],
    "b": [("pedestrian", [50.0, 10.0, 70.0, 20.0], True, 0.7)],  # 14 of its 20 px wide inside the image
}


def write_coco(root: Path, images: list[dict]) -> Path:
    (root / "images").mkdir(parents=True)
    labels = sorted({label for img in images for label, _, _ in img["objects"]})
    doc = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(labels)],
    }
    for image_id, img in enumerate(images, 1):
        file_name = f"{img['stem']}.{img['ext']}"
        if img.get("write", True):
            (root / "images" / file_name).write_bytes(encode(img["ext"], image_id))
        doc["images"].append({"id": image_id, "file_name": file_name, "width": W, "height": H})
        for label, (x1, y1, x2, y2), ignore in img["objects"]:
            ann = {
                "id": len(doc["annotations"]) + 1,
                "image_id": image_id,
                "category_id": labels.index(label) + 1,
            }
            doc["annotations"].append({**ann, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": int(ignore)})
    (root / "annotations.json").write_text(json.dumps(doc))
    return root / "annotations.json"


def write_yolo(root: Path, images: list[dict]) -> Path:
    labels = sorted({label for img in images for label, _, _ in img["objects"]})
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text(f"path: .\ntrain: images\nnames: [{', '.join(labels)}]\n")
    for i, img in enumerate(images):
        if img.get("write", True):
            (root / "images" / f"{img['stem']}.{img['ext']}").write_bytes(encode(img["ext"], i))
        lines = [
            " ".join(repr(v) for v in [labels.index(label), (x1 + x2) / 2 / W, (y1 + y2) / 2 / H])
            + f" {(x2 - x1) / W!r} {(y2 - y1) / H!r}"
            for label, (x1, y1, x2, y2), _ in img["objects"]
        ]
        (root / "labels" / f"{img['stem']}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_voc(root: Path, images: list[dict]) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i, img in enumerate(images):
        file_name = f"{img['stem']}.{img['ext']}"
        if img.get("write", True):
            (root / "JPEGImages" / file_name).write_bytes(encode(img["ext"], i))
        objects = "".join(
            f"<object><name>{label}</name><difficult>{int(ignore)}</difficult>"
            f"<truncated>{int(x2 > W)}</truncated><bndbox><xmin>{x1 + 1:g}</xmin><ymin>{y1 + 1:g}</ymin>"
            f"<xmax>{x2:g}</xmax><ymax>{y2:g}</ymax></bndbox></object>"
            for label, (x1, y1, x2, y2), ignore in img["objects"]
        )
        xml = (
            f"<annotation><filename>{file_name}</filename><size><width>{W}</width><height>{H}</height></size>"
        )
        (root / "Annotations" / f"{img['stem']}.xml").write_text(f"{xml}{objects}</annotation>")
    return root


def write_citypersons(root: Path, images: list[dict]) -> Path:
    """``person`` is written as CityPersons' ``pedestrian``, an ignored one as ``ignore``, and bboxVis is the
    part of bbox inside the image unless ``vis`` names another; CityPersons has no vehicles or bicycles."""
    ann_dir, img_dir = root / "gtBboxCityPersons/train/aachen", root / "leftImg8bit/train/aachen"
    ann_dir.mkdir(parents=True)
    img_dir.mkdir(parents=True)
    for i, img in enumerate(images):
        if img.get("write", True):
            (img_dir / f"{img['stem']}_leftImg8bit.png").write_bytes(encode("png", i))
        objects = []
        for label, (x1, y1, x2, y2), ignore in img["objects"]:
            if label in ("car", "bicycle"):
                continue
            label = "ignore" if ignore else {"person": "pedestrian"}.get(label, label)
            xywh = [x1, y1, x2 - x1, y2 - y1]
            vx1, vy1, vx2, vy2 = (
                max(x1, 0),
                max(y1, 0),
                min(x2, W),
                min(y2, H),
            )  # from a mask: inside the image
            vis = img.get("vis", {}).get(label, [vx1, vy1, vx2 - vx1, vy2 - vy1])
            objects.append({"label": label, "bbox": xywh, "bboxVis": vis})
        doc = {"imgWidth": W, "imgHeight": H, "objects": objects}
        (ann_dir / f"{img['stem']}_gtBboxCityPersons.json").write_text(json.dumps(doc))
    return root


WRITERS = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc, "citypersons": write_citypersons}


def objects_by_key(out: Path) -> dict[str, list[tuple]]:
    reader = ShardReader(out)
    return {
        a["key"]: [(o["category"], o["box"], o["ignore"], o["visibility"]) for o in a["objects"]]
        for a in reader.annotations()
    }


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_import_maps_categories_boxes_and_ignore(tmp_path, fmt):
    src = WRITERS[fmt](tmp_path / "src", GOOD)
    report = import_dataset(fmt, src, tmp_path / "out", progress=False)
    assert (report.imported, report.skipped, report.errors, report.dropped) == (2, 0, [], 1)
    got = objects_by_key(tmp_path / "out")
    if fmt == "yolo":  # YOLO has no ignore flag, and its normalised coordinates are exact to rounding only
        expected = {
            k: [(c, pytest.approx(box, abs=1e-9), False, v) for c, box, _, v in objs]
            for k, objs in EXPECTED.items()
        }
        assert got == expected
    else:
        assert got == EXPECTED
    reader = ShardReader(tmp_path / "out")
    assert [reader.key(i) for i in range(len(reader))] == ["a", "b"]
    assert reader.image_bytes(0)[:3] == b"\xff\xd8\xff" and reader.index[0]["ext"] == "jpg"
    assert reader.image_bytes(1)[:4] == b"\x89PNG" and reader.index[1]["ext"] == "png"
    if fmt == "voc":
        assert [o["voc_truncated"] for o in reader.annotation(1)["objects"]] == [True]


def test_citypersons_maps_labels_and_visibility(tmp_path):
    objects = [
        ("pedestrian", [10.0, 4.0, 20.0, 44.0], False),
        ("rider", [30.0, 4.0, 40.0, 24.0], False),
        ("sitting person", [42.0, 30.0, 50.0, 40.0], False),
        ("person group", [0.0, 0.0, 8.0, 10.0], False),
        ("ignore", [52.0, 0.0, 60.0, 10.0], True),
    ]
    src = write_citypersons(
        tmp_path / "src",
        [
            {
                "stem": "aachen_000000_000019",
                "ext": "png",
                "objects": objects,
                "vis": {"pedestrian": [10.0, 4.0, 10.0, 20.0]},
            }
        ],
    )
    report = import_dataset("citypersons", src, tmp_path / "out", progress=False)
    assert (report.imported, report.skipped) == (1, 0)
    ann = ShardReader(tmp_path / "out").annotation(0)
    assert ann["key"] == "aachen_000000_000019" and ann["extra"]["city"] == "aachen"
    got = [(o["category"], o["kind"], o["box"], o["ignore"], o["visibility"]) for o in ann["objects"]]
    assert got == [
        ("pedestrian", "pedestrian", [10.0, 4.0, 20.0, 44.0], False, 0.5),  # half the body visible
        ("cyclist", "rider", [30.0, 4.0, 40.0, 24.0], False, 1.0),
        ("pedestrian", "sitting person", [42.0, 30.0, 50.0, 40.0], False, 1.0),
        ("pedestrian", "person group", [0.0, 0.0, 8.0, 10.0], True, 1.0),
        ("pedestrian", "ignore", [52.0, 0.0, 60.0, 10.0], True, 1.0),
    ]
    assert ann["objects"][0]["visible_box"] == [10.0, 4.0, 20.0, 24.0]
    assert ann["objects"][0]["distance_m"] is None and ann["lighting"] is None and ann["camera"] is None


# Faults added to a good dataset; per format, the start of the error line each must produce (file: record).
FAULTS = {
    "missing_image": {
        "stem": "m",
        "ext": "jpg",
        "write": False,
        "objects": [("person", [1, 1, 9, 20], False)],
    },
    "outside": ("person", [100.0, 100.0, 120.0, 130.0], False),
    "unknown": ("unicorn", [20.0, 2.0, 30.0, 12.0], False),
}
PLACEHOLDER = ("person", [20.0, 2.0, 30.0, 12.0], False)
CP = "gtBboxCityPersons/train/aachen/"
EXPECTED_LINES = {
    "coco": {
        "missing_image": "annotations.json: image 3 (m.jpg): image file not found",
        "outside": "annotations.json: annotation id 4 (image 1): box [100.0, 100.0, 120.0, 130.0] lies",
        "unknown": "annotations.json: annotation id 5 (image 1): unknown category 'unicorn'",
    },
    "yolo": {
        "missing_image": "labels/m.txt: no image images/m",
        "outside": "labels/a.txt: line 4: box [100.0",
        "unknown": "labels/a.txt: line 5: unknown category 'unicorn'",
        "malformed": "labels/z.txt: line 2: expected 'class cx cy w h'",
    },
    "voc": {
        "missing_image": "Annotations/m.xml: cannot read image JPEGImages/m.jpg",
        "outside": "Annotations/a.xml: object 4 (person): box [100.0",
        "unknown": "Annotations/a.xml: object 5 (unicorn): unknown category 'unicorn'",
        "malformed": "Annotations/z.xml: malformed XML",
    },
    "citypersons": {
        "missing_image": CP + "m_gtBboxCityPersons.json: cannot read image leftImg8bit/",
        "outside": CP + "a_gtBboxCityPersons.json: object 2 (pedestrian): box [100.0",
        "unknown": CP + "a_gtBboxCityPersons.json: object 3 (unicorn): unknown category",
        "malformed": CP + "z_gtBboxCityPersons.json: not valid JSON",
    },
}
MALFORMED = {  # a file that does not parse, next to the good ones
    "yolo": ("labels/z.txt", "0 0.5 0.5 0.1 0.1\n0 0.5 zero 0.1 0.1\n"),
    "voc": ("Annotations/z.xml", "<annotation><object><name>person</name></annotation>"),
    "citypersons": (CP + "z_gtBboxCityPersons.json", '{"objects": [{"label": '),
}


def write_with_faults(fmt: str, root: Path, faults: list[str]) -> Path:
    """GOOD with the ``faults`` added; a fault not asked for leaves a good box in its place, so the records
    keep their numbers."""
    a = {**GOOD[0], "objects": list(GOOD[0]["objects"])}
    a["objects"] += [FAULTS[f] if f in faults else PLACEHOLDER for f in ("outside", "unknown")]
    images = [a, GOOD[1]] + ([FAULTS["missing_image"]] if "missing_image" in faults else [])
    src = WRITERS[fmt](root, images)
    if "malformed" in faults:
        if fmt == "yolo":
            (root / "images" / "z.jpg").write_bytes(encode("jpg"))
        path, text = MALFORMED[fmt]
        (root / path).write_text(text)
    return src


@pytest.mark.parametrize("fmt,fault", [(f, k) for f, lines in EXPECTED_LINES.items() for k in lines])
def test_first_bad_record_fails_with_one_line_and_leaves_no_dataset(tmp_path, fmt, fault):
    src = write_with_faults(fmt, tmp_path / "src", [fault])
    with pytest.raises(DatasetImportError) as err:
        import_dataset(fmt, src, tmp_path / "out", progress=False)
    message = str(err.value)
    assert message.startswith(EXPECTED_LINES[fmt][fault]) and "\n" not in message
    assert not (tmp_path / "out").exists()  # it created the folder, so it removed it with its shard files


@pytest.mark.parametrize("fmt", list(EXPECTED_LINES))
def test_skip_imports_the_rest_and_names_every_bad_record(tmp_path, fmt):
    faults = list(EXPECTED_LINES[fmt])
    report = import_dataset(
        fmt,
        write_with_faults(fmt, tmp_path / "src", faults),
        tmp_path / "out",
        on_error="skip",
        progress=False,
    )
    assert report.imported == 2 and report.skipped == len(faults) == len(report.errors)
    for fault in faults:
        assert sum(line.startswith(EXPECTED_LINES[fmt][fault]) for line in report.errors) == 1, report.errors
    got = objects_by_key(tmp_path / "out")
    assert len(got["a"]) == (1 if fmt == "citypersons" else 2)  # its good objects stay; the bad box and the
    # unicorn go
    assert ShardReader(tmp_path / "out").manifest["samples"] == 2


def test_unreadable_sources_fail_in_either_mode(tmp_path):
    bad = tmp_path / "annotations.json"
    bad.write_text('{"images": [')
    for on_error in ("fail", "skip"):
        with pytest.raises(DatasetImportError, match=r"^annotations.json: not valid JSON"):
            import_dataset("coco", bad, tmp_path / "out", on_error=on_error, progress=False)
    (tmp_path / "yolo" / "images").mkdir(parents=True)
    with pytest.raises(DatasetImportError, match="no data.yaml or classes.txt"):
        import_dataset("yolo", tmp_path / "yolo", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_corrupt_image_and_size_mismatch_are_errors(tmp_path):
    src = write_coco(tmp_path / "src", [*GOOD, {"stem": "c", "ext": "jpg", "objects": []}])
    (tmp_path / "src/images/a.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    doc = json.loads(src.read_text())
    doc["images"][1]["width"] = 640
    src.write_text(json.dumps(doc))
    with pytest.raises(
        DatasetImportError, match=r"^annotations.json: image 1 \(a.jpg\): image images/a.jpg does"
    ):
        import_dataset("coco", src, tmp_path / "out", progress=False)
    report = import_dataset("coco", src, tmp_path / "out", on_error="skip", progress=False)
    assert (report.imported, report.skipped) == (1, 2)
    assert (
        report.errors[1]
        == "annotations.json: image 2 (b.png): declared size 640x48 but image images/b.png is 64x48"
    )
    with pytest.raises(
        DatasetImportError, match=r"no image imported \(1 skipped\); first error: annotations.json"
    ):
        only_missing = write_coco(tmp_path / "src2", [FAULTS["missing_image"]])
        import_dataset("coco", only_missing, tmp_path / "out2", on_error="skip", progress=False)
    assert not (tmp_path / "out2").exists()


def test_existing_dataset_is_refused_and_left_intact(tmp_path):
    src = write_voc(tmp_path / "src", GOOD)
    import_dataset("voc", src, tmp_path / "out", progress=False)
    with pytest.raises(DatasetError):
        import_dataset("voc", src, tmp_path / "out", progress=False)
    assert len(ShardReader(tmp_path / "out")) == 2


@pytest.mark.parametrize(
    "text",
    [
        "names: [person, 'traffic light', car]",
        "nc: 3\nnames:\n  - person\n  - traffic light  # a comment\n  - car\nval: x\n",
        'names:\n  0: person\n  1: "traffic light"\n  2: car\n',
        "names: {0: person, 1: traffic light, 2: car}",
    ],
)
def test_yolo_names_forms(text):
    assert parse_yaml_names(text) == ["person", "traffic light", "car"]


def test_yolo_reads_classes_txt(tmp_path):
    src = write_yolo(tmp_path / "src", GOOD)
    (src / "data.yaml").unlink()
    (src / "classes.txt").write_text("bicycle\ncar\nperson\n")
    assert import_dataset("yolo", src, tmp_path / "out", progress=False).imported == 2


def test_synth_to_coco_to_shards_keeps_every_field(tmp_path):
    boxes = [
        [10.123456789012345, 5.987654321098765, 30.55555555555557, 35.11111111111113],
        [50.333333333333336, 10.1, 70.7, 20.000000000000004],
    ]
    anns = []
    for i in range(2):
        objects = [
            make_object(
                "pedestrian",
                boxes[0],
                W,
                H,
                kind="child",
                visible_box=[10.5, 6.25, 30.5, 22.125],
                visibility=0.51234,
                distance_m=23.456789012345,
            ),
            make_object("vehicle", boxes[1], W, H, kind="bus", ignore=True),
        ]
        camera = {
            "height_m": 1.4,
            "pitch_deg": -2.5,
            "roll_deg": 0.0,
            "hfov_deg": 70.0,
            "focal_px": 45.7,
            "cx": 32.0,
            "cy": 24.0,
        }
        anns.append(
            {
                "key": f"{i:06d}",
                "width": W,
                "height": H,
                "lighting": "dusk",
                "weather": "fog",
                "camera": camera,
                "objects": objects[i:] + objects[:i],
                "extra": {"seed": i},
            }
        )
    with ShardWriter(tmp_path / "synth", source={"test": "round trip"}) as writer:
        for i, ann in enumerate(anns):
            writer.write(ann["key"], encode("jpg", i), ann)
    doc = export_coco(tmp_path / "synth", tmp_path / "export" / "instances.json")
    assert [a["iscrowd"] for a in doc["annotations"]] == [0, 1, 1, 0]
    assert doc["annotations"][0]["bbox"][:2] == boxes[0][:2]
    report = import_dataset("coco", tmp_path / "export" / "instances.json", tmp_path / "back", progress=False)
    assert (report.imported, report.skipped, report.dropped) == (2, 0, 0)
    before, after = ShardReader(tmp_path / "synth"), ShardReader(tmp_path / "back")
    for i in range(2):
        a, b = before.annotation(i), after.annotation(i)
        assert b["objects"] == a["objects"]  # boxes bit for bit, visibility, ignore, kind, distance
        assert {k: b[k] for k in ("key", "lighting", "weather", "camera")} == {
            k: a[k] for k in ("key", "lighting", "weather", "camera")
        }
        assert b["extra"]["seed"] == i
        assert after.image_bytes(i) == before.image_bytes(i)


def test_coco_finds_images_in_cocos_own_layout(tmp_path):
    src = write_coco(tmp_path / "coco", GOOD)
    (tmp_path / "coco/annotations").mkdir()
    (tmp_path / "coco/images").rename(tmp_path / "coco/val2017")
    src = src.rename(tmp_path / "coco/annotations/instances_val2017.json")
    report = import_dataset("coco", src, tmp_path / "out", progress=True)
    assert report.imported == 2
    assert ShardReader(tmp_path / "out").annotation(0)["extra"]["import"]["image"] == "../val2017/a.jpg"
