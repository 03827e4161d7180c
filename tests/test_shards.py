import json

import numpy as np
import pytest

from conftest import write_tiny_dataset
from crosswalk.data.shards import CorruptSampleError, DatasetError, ShardReader, read_manifest
from crosswalk.data.verify import verify_dataset


def test_manifest_and_random_access(tiny_dataset):
    m = read_manifest(tiny_dataset)
    assert m["samples"] == 24 and m["categories"] == ["pedestrian", "cyclist", "vehicle"]
    assert sum(s["samples"] for s in m["shards"]) == 24
    reader = ShardReader(tiny_dataset)
    ann = reader.annotation(7)
    assert ann["key"] == "000007" and reader.key(7) == "000007"
    assert reader.image_bytes(7)[:2] == b"\xff\xd8"  # a JPEG
    total = sum(len(a["objects"]) - sum(o["ignore"] for o in a["objects"]) for a in reader.annotations())
    assert total == sum(m["class_counts"].values())


def test_shards_roll_over_and_are_webdataset_tars(tmp_path):
    import tarfile

    out = write_tiny_dataset(tmp_path / "d", n=10, shard_size_bytes=8000)
    m = read_manifest(out)
    assert len(m["shards"]) > 2
    with tarfile.open(out / m["shards"][0]["file"]) as tar:
        names = tar.getnames()
    assert names[0].endswith(".jpg") and names[1] == names[0][:-4] + ".json"


def test_same_input_same_hashes(tmp_path):
    a = read_manifest(write_tiny_dataset(tmp_path / "a"))
    b = read_manifest(write_tiny_dataset(tmp_path / "b"))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a["index"]["sha256"] == b["index"]["sha256"]


def test_verify_clean_dataset(tiny_dataset):
    report = verify_dataset(tiny_dataset, progress=False)
    assert report.ok, report.problems
    assert report.samples == 24


def _flip_byte_inside(data_dir, sample: int, field: str) -> tuple[str, str]:
    reader = ShardReader(data_dir)
    row = reader.index[sample]
    shard, key = reader.where(sample)
    offset = int(row[f"{field}_offset"]) + int(row[f"{field}_bytes"]) // 2
    path = data_dir / shard
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    return shard, key


@pytest.mark.parametrize("field", ["image", "ann"])
def test_verify_names_shard_and_sample_of_a_flipped_byte(tiny_dataset, field):
    shard, key = _flip_byte_inside(tiny_dataset, 5, field)
    report = verify_dataset(tiny_dataset, progress=False)
    assert not report.ok
    assert any(shard in p and "sha256" in p for p in report.problems)
    assert any(shard in p and key in p for p in report.problems), report.problems


@pytest.mark.parametrize("read", ["image_bytes", "image_view"])
def test_reader_raises_naming_shard_and_key(tiny_dataset, read):
    shard, key = _flip_byte_inside(tiny_dataset, 3, "image")
    reader = ShardReader(tiny_dataset)
    with pytest.raises(CorruptSampleError) as err:
        getattr(reader, read)(3)
    assert shard in str(err.value) and key in str(err.value)
    assert bytes(reader.image_view(4)) == reader.image_bytes(4)  # the other samples still read


def test_image_view_of_a_truncated_shard_names_shard_and_key(tmp_path):
    data = write_tiny_dataset(tmp_path / "d")
    reader = ShardReader(data)
    last = len(reader) - 1
    shard, key = reader.where(last)
    offset = int(reader.index[last]["image_offset"])
    with open(data / shard, "r+b") as f:
        f.truncate(offset + 10)
    with pytest.raises(CorruptSampleError, match=f"{shard}: sample {key}: image truncated"):
        ShardReader(data).image_view(last)


def test_verify_catches_a_broken_tar_header(tiny_dataset):
    m = read_manifest(tiny_dataset)
    path = tiny_dataset / m["shards"][0]["file"]
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0x20  # inside the first member's name
    path.write_bytes(bytes(raw))
    report = verify_dataset(tiny_dataset, progress=False)
    assert any(m["shards"][0]["file"] in p and "000000" in p for p in report.problems), report.problems


def test_verify_catches_an_invalid_annotation(tmp_path):
    from crosswalk.data.shards import ShardWriter

    with ShardWriter(tmp_path / "d", source={}, validate=False) as w:
        import cv2

        jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        w.write("a", jpeg, {"key": "a", "width": 8, "height": 8, "objects": [{"category": "dog"}]})
    report = verify_dataset(tmp_path / "d", progress=False)
    assert any("sample a" in p and "dog" in p for p in report.problems), report.problems


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not a crosswalk dataset"):
        ShardReader(tmp_path)
    report = verify_dataset(tmp_path, progress=False)
    assert not report.ok


def test_writer_refuses_a_non_empty_folder(tiny_dataset):
    with pytest.raises(DatasetError, match="already holds"):
        write_tiny_dataset(tiny_dataset)


def test_manifest_is_json(tiny_dataset):
    json.loads((tiny_dataset / "manifest.json").read_text())


def test_verify_checks_the_index_and_objects_tables(tiny_dataset):
    for name in ("index.npy", "objects.npy"):
        path = tiny_dataset / name
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0x01
        path.write_bytes(bytes(raw))
    problems = verify_dataset(tiny_dataset, progress=False).problems
    assert any(p.startswith("objects.npy: sha256") for p in problems), problems
    assert any(p.startswith("index.npy: sha256") for p in problems), problems
