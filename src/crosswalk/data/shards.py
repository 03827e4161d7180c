"""Checksummed, randomly addressable, WebDataset-compatible shards.

A dataset folder holds:

- ``shard-000000.tar`` ...: POSIX tar files with ``KEY.jpg`` (or ``.png``) followed by ``KEY.json`` per
  sample, the layout WebDataset reads. Headers are deterministic (mtime 0, uid 0), so the same samples give
  byte-identical shards and the same sha256.
- ``index.npy``: one row per sample (shard, key, byte offsets and lengths, crc32 of image and annotation).
  A NumPy structured array, loaded without pickle, so a loader can seek to any sample and millions of
  rows cost a few tens of MB instead of Python objects per worker.
- ``manifest.json``: format version, categories, sample count, per-class counts,
  ``shards: [{file, samples, bytes, sha256}]``, the index file and its hash, and the source (generator
  config or import source). Written last, atomically: a folder without a manifest is an unfinished write.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crosswalk.data.schema import DEFAULT_CATEGORIES, validate_annotation

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.npy"
OBJECTS_NAME = "objects.npy"
DEFAULT_SHARD_SIZE = 64 * 1024 * 1024  # 64 MB, as WebDataset and MosaicML Streaming default to
IMAGE_EXTS = ("jpg", "png")

INDEX_DTYPE = np.dtype(
    [
        ("shard", "<i4"),
        ("key", "<U64"),
        ("ext", "<U4"),
        ("image_offset", "<i8"),
        ("image_bytes", "<i8"),
        ("ann_offset", "<i8"),
        ("ann_bytes", "<i8"),
        ("image_crc", "<u4"),
        ("ann_crc", "<u4"),
    ]
)


# Every annotated object as one row: what a loader worker needs for targets without parsing JSON, and a
# table, not Python objects, so that forked workers do not copy it page by page through refcount writes.
OBJECTS_DTYPE = np.dtype(
    [
        ("sample", "<i4"),
        ("label", "<i2"),  # index into the manifest's categories
        ("ignore", "?"),
        ("box", "<f4", (4,)),
        ("visible_box", "<f4", (4,)),
        ("visibility", "<f4"),
        ("height_px", "<f4"),
        ("distance_m", "<f4"),  # nan when unknown
    ]
)


def object_rows(sample: int, annotation: dict, categories: tuple[str, ...]) -> list[tuple]:
    """The OBJECTS_DTYPE rows of one annotation (objects of other categories are left out)."""
    rows = []
    for o in annotation["objects"]:
        if o.get("category") not in categories:
            continue
        d = o.get("distance_m")
        rows.append(
            (
                sample,
                categories.index(o["category"]),
                bool(o["ignore"]),
                o["box"],
                o.get("visible_box") or o["box"],
                o["visibility"],
                o["height_px"],
                np.nan if d is None else d,
            )
        )
    return rows


def objects_as_targets(rows: np.ndarray) -> dict:
    """OBJECTS_DTYPE rows as target arrays (see schema.py for the target contract)."""
    return {
        "boxes": rows["box"].astype(np.float32),
        "visible_boxes": rows["visible_box"].astype(np.float32),
        "labels": rows["label"].astype(np.int64),
        "ignore": rows["ignore"].copy(),
        "visibility": rows["visibility"].copy(),
        "height_px": rows["height_px"].copy(),
        "distance_m": rows["distance_m"].copy(),
    }


class DatasetError(RuntimeError):
    """The dataset folder is missing, unfinished or of another format version."""


class CorruptSampleError(RuntimeError):
    """A sample whose bytes do not match the index, or that does not decode; names shard and key."""

    def __init__(self, shard: str, key: str, reason: str):
        super().__init__(f"{shard}: sample {key}: {reason}")
        self.shard, self.key, self.reason = shard, key, reason

    def __reduce__(self):  # pickled from a loader worker to the main process
        return type(self), (self.shard, self.key, self.reason)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file, fsync, rename: a reader sees the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _append(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes) -> int:
    """Add one member; return the byte offset of its data (the stream ends with data padded to 512)."""
    tar.addfile(info, io.BytesIO(data))
    return tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _save_array(path: Path, array: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def encode_annotation(ann: dict) -> bytes:
    return json.dumps(ann, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class _OpenShard:
    path: Path
    tar: tarfile.TarFile
    samples: int = 0


class ShardWriter:
    """Append samples in order; shards roll over at ``shard_size_bytes``; ``close()`` writes the manifest.

    >>> with ShardWriter(out_dir, source={"generator": ...}) as w:
    ...     w.write(key, jpeg_bytes, annotation)
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        source: dict[str, Any],
        categories: tuple[str, ...] = DEFAULT_CATEGORIES,
        shard_size_bytes: int = DEFAULT_SHARD_SIZE,
        validate: bool = True,
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if (self.out_dir / MANIFEST_NAME).exists() or any(self.out_dir.glob("shard-*.tar")):
            raise DatasetError(f"{self.out_dir} already holds a dataset; choose an empty folder")
        self.source, self.categories = source, tuple(categories)
        self.shard_size_bytes, self.validate = shard_size_bytes, validate
        self._rows: list[tuple] = []
        self._objects: list[tuple] = []
        self._shards: list[dict] = []
        self._current: _OpenShard | None = None
        self._keys: set[str] = set()
        self.class_counts: Counter[str] = Counter()
        self.ignore_count = 0
        self.manifest: dict | None = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._current is not None:
            self._current.tar.close()

    def _open_next(self) -> _OpenShard:
        path = self.out_dir / f"shard-{len(self._shards):06d}.tar"
        return _OpenShard(path, tarfile.open(path, "w", format=tarfile.USTAR_FORMAT))

    def _finish_current(self) -> None:
        cur = self._current
        if cur is None:
            return
        cur.tar.close()
        self._shards.append(
            {
                "file": cur.path.name,
                "samples": cur.samples,
                "bytes": cur.path.stat().st_size,
                "sha256": sha256_file(cur.path),
            }
        )
        self._current = None

    def write(self, key: str, image: bytes, annotation: dict, ext: str = "jpg") -> None:
        if ext not in IMAGE_EXTS:
            raise ValueError(f"image extension must be one of {IMAGE_EXTS}, got {ext!r}")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r}")
        if annotation.get("key") != key:
            raise ValueError(f"annotation key {annotation.get('key')!r} differs from sample key {key!r}")
        if self.validate:
            validate_annotation(annotation, self.categories)
        ann_bytes = encode_annotation(annotation)
        sample_bytes = len(image) + len(ann_bytes) + 2048  # two headers plus padding, roughly
        cur = self._current
        if cur is not None and cur.samples and cur.tar.offset + sample_bytes > self.shard_size_bytes:
            self._finish_current()
            cur = None
        if cur is None:
            cur = self._current = self._open_next()
        img_info, ann_info = _tarinfo(f"{key}.{ext}", len(image)), _tarinfo(f"{key}.json", len(ann_bytes))
        image_offset = _append(cur.tar, img_info, image)
        ann_offset = _append(cur.tar, ann_info, ann_bytes)
        self._rows.append(
            (
                len(self._shards),
                key,
                ext,
                image_offset,
                len(image),
                ann_offset,
                len(ann_bytes),
                zlib.crc32(image),
                zlib.crc32(ann_bytes),
            )
        )
        try:
            self._objects += object_rows(len(self._rows) - 1, annotation, self.categories)
        except (KeyError, TypeError, ValueError):
            pass  # reachable only with validate=False (tests of verify); verify reports the record
        cur.samples += 1
        self._keys.add(key)
        for obj in annotation["objects"]:
            if obj.get("ignore"):
                self.ignore_count += 1
            else:
                self.class_counts[str(obj.get("category"))] += 1

    def close(self) -> dict:
        self._finish_current()
        index_hash = _save_array(self.out_dir / INDEX_NAME, np.array(self._rows, dtype=INDEX_DTYPE))
        objects_hash = _save_array(self.out_dir / OBJECTS_NAME, np.array(self._objects, dtype=OBJECTS_DTYPE))
        manifest = {
            "format": "crosswalk-shards",
            "format_version": FORMAT_VERSION,
            "categories": list(self.categories),
            "samples": len(self._rows),
            "class_counts": {c: self.class_counts.get(c, 0) for c in self.categories},
            "ignore_regions": self.ignore_count,
            "shards": self._shards,
            "index": {"file": INDEX_NAME, "sha256": index_hash},
            "objects": {"file": OBJECTS_NAME, "sha256": objects_hash, "rows": len(self._objects)},
            "source": self.source,
        }
        atomic_write_bytes(self.out_dir / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
        self.manifest = manifest
        return manifest


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST_NAME
    if not path.exists():
        raise DatasetError(
            f"{path} not found: not a crosswalk dataset, or its write did not finish "
            "(create one with `crosswalk data synth` or `crosswalk data import`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format version {manifest.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return manifest


def read_index(data_dir: str | Path) -> np.ndarray:
    return np.load(Path(data_dir) / INDEX_NAME, allow_pickle=False)


class ShardReader:
    """Random access to samples by global index. Safe to use after fork: file handles are per process."""

    def __init__(self, data_dir: str | Path, check_crc: bool = True):
        self.data_dir = Path(data_dir)
        self.manifest = read_manifest(self.data_dir)
        self.categories: tuple[str, ...] = tuple(self.manifest["categories"])
        self.index = read_index(self.data_dir)
        self.objects = np.load(self.data_dir / OBJECTS_NAME, allow_pickle=False)
        self._object_starts = np.searchsorted(self.objects["sample"], np.arange(len(self.index) + 1))
        self.shard_files = [s["file"] for s in self.manifest["shards"]]
        self.check_crc = check_crc
        self._fds: dict[int, int] = {}
        self._maps: dict[int, memoryview] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fds"], state["_maps"] = {}, {}
        return state

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors share a file offset; reopen
            self._fds, self._maps, self._pid = {}, {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.data_dir / self.shard_files[shard], os.O_RDONLY)
        return fd

    def _map(self, shard: int) -> memoryview:
        """The whole shard, mapped read-only (the page cache itself, no copy); opened on first use."""
        view = self._maps.get(shard) if self._pid == os.getpid() else None
        if view is None:
            fd = self._fd(shard)
            try:
                view = self._maps[shard] = memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
            except ValueError:  # an empty file cannot be mapped
                view = self._maps[shard] = memoryview(b"")
        return view

    def close(self) -> None:
        for view in self._maps.values():
            view.release()  # the mapping itself closes when the last slice handed out is gone
        for fd in self._fds.values():
            os.close(fd)
        self._fds, self._maps = {}, {}

    def key(self, i: int) -> str:
        return str(self.index[i]["key"])

    def where(self, i: int) -> tuple[str, str]:
        row = self.index[i]
        return self.shard_files[int(row["shard"])], str(row["key"])

    def _read(self, i: int, field: str, what: str, mapped: bool = False) -> bytes | memoryview:
        """Sample ``i``'s image or annotation bytes (``field``: "image" or "ann"), checked against the index:
        a pread copy, or with ``mapped`` a view into the shard's memory map."""
        row = self.index[i]
        shard, size, offset = int(row["shard"]), int(row[f"{field}_bytes"]), int(row[f"{field}_offset"])
        if mapped:
            data = self._map(shard)[offset : offset + size]
        else:
            data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise CorruptSampleError(self.shard_files[shard], str(row["key"]), f"{what} truncated")
        if self.check_crc and zlib.crc32(data) != int(row[f"{field}_crc"]):
            raise CorruptSampleError(self.shard_files[shard], str(row["key"]), f"{what} bytes fail crc32")
        return data

    def image_bytes(self, i: int) -> bytes:
        return self._read(i, "image", "image")

    def image_view(self, i: int) -> memoryview:
        """``image_bytes`` without the copy: a checked view into the shard's memory map, for the loader's hot
        path (pread's copy and the allocation of each image's bytes cost about 2% of a decode here). A shard
        that is truncated while mapped ends the process with SIGBUS on access: do not rewrite shards in use."""
        return self._read(i, "image", "image", mapped=True)

    def annotation(self, i: int) -> dict:
        data = self._read(i, "ann", "annotation")
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            shard, key = self.where(i)
            raise CorruptSampleError(shard, key, f"annotation is not valid JSON: {e}") from e

    def object_rows(self, i: int) -> np.ndarray:
        """Sample ``i``'s rows of the objects table (no JSON parsing)."""
        return self.objects[self._object_starts[i] : self._object_starts[i + 1]]

    def annotations(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self.annotation(i)
