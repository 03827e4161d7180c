"""``crosswalk data verify``: recompute every hash, decode every image, validate every annotation.

Each problem is one line that names the shard file and, where it can be pinned down, the sample key. The
per-sample crc32 in the index is what pins a flipped byte to one sample; the shard's sha256 catches
everything else (a changed tar header, bytes appended).
"""

from __future__ import annotations

import hashlib
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from crosswalk.data.schema import annotation_errors
from crosswalk.data.shards import (
    INDEX_NAME,
    OBJECTS_NAME,
    CorruptSampleError,
    DatasetError,
    ShardReader,
    sha256_file,
)


@dataclass
class VerifyReport:
    data_dir: str
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_tar_layout(path: Path, rows: np.ndarray) -> list[str]:
    """The tar members, in order, must be KEY.ext then KEY.json at the offsets the index records."""
    expected = []
    for row in rows:
        expected.append((f"{row['key']}.{row['ext']}", int(row["image_offset"]), int(row["image_bytes"])))
        expected.append((f"{row['key']}.json", int(row["ann_offset"]), int(row["ann_bytes"])))
    problems = []
    try:
        with tarfile.open(path, "r:") as tar:
            members = [(m.name, m.offset_data, m.size) for m in tar.getmembers()]
    except (tarfile.TarError, OSError) as e:
        return [f"{path.name}: not a readable tar file ({e})"]
    for i, want in enumerate(expected):
        got = members[i] if i < len(members) else None
        if got != want:
            key = want[0].rsplit(".", 1)[0]
            problems.append(f"{path.name}: sample {key}: tar member {got} differs from index entry {want}")
            break  # everything after a broken header is misaligned; one line says it
    if len(members) > len(expected):
        problems.append(f"{path.name}: {len(members) - len(expected)} tar members not in the index")
    return problems


def verify_dataset(data_dir: str | Path, progress: bool = True) -> VerifyReport:
    data_dir = Path(data_dir)
    report = VerifyReport(str(data_dir))
    start = time.perf_counter()
    try:
        reader = ShardReader(data_dir)
    except (DatasetError, OSError, ValueError) as e:
        report.problems.append(str(e))
        return report
    manifest = reader.manifest
    for name, entry in ((INDEX_NAME, manifest["index"]), (OBJECTS_NAME, manifest["objects"])):
        if hashlib.sha256((data_dir / name).read_bytes()).hexdigest() != entry["sha256"]:
            report.problems.append(f"{name}: sha256 differs from the manifest")
    categories = tuple(manifest["categories"])
    report.shards, report.samples = len(manifest["shards"]), len(reader)
    bar = tqdm(total=len(reader), desc="verify", unit="sample", disable=not progress)
    for shard_id, entry in enumerate(manifest["shards"]):
        path = data_dir / entry["file"]
        rows_at = np.flatnonzero(reader.index["shard"] == shard_id)
        if not path.exists():
            report.problems.append(f"{entry['file']}: missing")
            bar.update(len(rows_at))
            continue
        if path.stat().st_size != entry["bytes"]:
            report.problems.append(
                f"{entry['file']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}"
            )
        if sha256_file(path) != entry["sha256"]:
            report.problems.append(f"{entry['file']}: sha256 differs from the manifest")
        if len(rows_at) != entry["samples"]:
            report.problems.append(
                f"{entry['file']}: index lists {len(rows_at)} samples, manifest {entry['samples']}"
            )
        report.problems += _check_tar_layout(path, reader.index[rows_at])
        for i in rows_at:
            report.problems += _check_sample(reader, int(i), categories)
            bar.update()
    bar.close()
    reader.close()
    report.seconds = time.perf_counter() - start
    return report


def _check_sample(reader: ShardReader, i: int, categories: tuple[str, ...]) -> list[str]:
    shard, key = reader.where(i)
    where = f"{shard}: sample {key}"
    problems = []
    try:
        data = reader.image_bytes(i)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
        if image is None:
            problems.append(f"{where}: image does not decode")
    except CorruptSampleError as e:
        problems.append(str(e))
        image = None
    try:
        ann = reader.annotation(i)
    except CorruptSampleError as e:
        return problems + [str(e)]
    problems += [f"{where}: {e}" for e in annotation_errors(ann, categories)]
    if ann.get("key") != key:
        problems.append(f"{where}: annotation key {ann.get('key')!r} differs from the sample key")
    if image is not None and (ann.get("width"), ann.get("height")) != (image.shape[1], image.shape[0]):
        problems.append(
            f"{where}: image is {image.shape[1]}x{image.shape[0]}, annotation says "
            f"{ann.get('width')}x{ann.get('height')}"
        )
    return problems
