"""An exactly resumable, elastic loader over crosswalk shards.

The order is a pure function of (seed, epoch): each epoch is a seeded permutation of global sample indices,
and global step ``t`` covers the slice ``perm[t*B:(t+1)*B]`` for the global batch size ``B``. Rank ``r`` of
``W`` takes the ``r``-th of ``W`` equal parts of that slice, so every rank gets exactly ``B/W`` samples and
the concatenation over ranks is the same global batch whatever ``W`` is. The loader's whole state is
``{seed, epoch, step}`` (plus ``B`` and the dataset size, checked on load): resuming at any step, with any
world size that divides ``B`` and any worker count, yields the identical global sample sequence.

Why not an existing loader: WebDataset cannot resume mid-epoch, torchdata's StatefulDataLoader keeps state
per rank (so no world-size change), MosaicML Streaming has this property but is stale and pins old NumPy,
and LitData only recently added elastic resume (../shared/reference/training.md §1, §6).

Workers decode JPEGs (libjpeg-turbo, straight to RGB) and draw augmentations seeded by (seed, epoch, index), so
nothing depends on which worker or rank touched a sample. They move the boxes; by default the pixels are
moved on the training device, batched (``batch_images`` below; see transforms.py for why). Batches are
uint8 NHWC plus per-image ``theta`` and ``photometric``; ``batch_images`` returns float channels_last NCHW.
With ``decode="device"`` the workers only read and check the JPEG bytes, and ``batch_images`` decodes them on
the training device, batched (``torchvision.io.decode_jpeg``: nvJPEG on a GPU), as DALI does.

Training drops the last partial batch. Evaluation pads it with index -1 and ``valid=False`` so every rank
runs the same number of steps (no collective waits on a rank that ran out).
"""

from __future__ import annotations

import multiprocessing as mp
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import simplejpeg
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from crosswalk.data.shards import CorruptSampleError, ShardReader, objects_as_targets
from crosswalk.data.targets import BatchTargets
from crosswalk.data.transforms import (
    IDENTITY_PHOTOMETRIC,
    IDENTITY_THETA,
    N_UNIFORMS,
    AugmentConfig,
    Geometry,
    augment_on_device,
    device_theta,
    draw_params,
    letterbox_params,
    sample_uniforms,
    transform_targets,
    warp_image,
)

PAD_INDEX = -1


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 32  # global: summed over all ranks, fixed for the whole run
    image_size: tuple[int, int] = (512, 288)  # (W, H) of the batches
    workers: int = 2  # decode processes per rank
    seed: int = 0
    shuffle: bool = True
    train: bool = True  # True: augment, drop the last partial batch; False: letterbox, pad it
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    on_corrupt: Literal["fail", "skip"] = "fail"
    prefetch_batches: int = 2  # per worker
    decode: Literal["workers", "device"] = "workers"  # where JPEGs become pixels (see the module docstring)

    def __post_init__(self) -> None:
        if self.decode not in ("workers", "device"):
            raise ValueError(f"decode must be 'workers' or 'device', got {self.decode!r}")

    @property
    def ring_slots(self) -> int:
        """BatchRing slots per worker: its prefetched batches, the one it is filling and the one the training
        step holds."""
        return self.prefetch_batches + 2


def decode_image(data: bytes | memoryview, out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 HxWx3 from JPEG or PNG bytes; raises ValueError when they do not decode.

    JPEGs go through simplejpeg (libjpeg-turbo), which can write into a caller's buffer: decoding straight
    into the batch slot saves the copy of a separately allocated image, which cost 0.12 ms of a 0.72 ms
    decode here. Other formats go through OpenCV."""
    if data[:2] == b"\xff\xd8":
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        if out is not None and out.shape == (h, w, 3) and out.flags.c_contiguous:
            simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
            return out
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ValueError("not a decodable image")
    return image


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The global sample order of one epoch: a permutation seeded by (seed, epoch) alone."""
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(num_samples).astype(np.int64)


def steps_per_epoch(num_samples: int, batch_size: int, train: bool) -> int:
    return num_samples // batch_size if train else -(-num_samples // batch_size)


def rank_indices(order: np.ndarray, step: int, batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's part of global step ``step``: equal for every rank, padded with PAD_INDEX at the end."""
    per_rank = batch_size // world_size
    chunk = order[step * batch_size : (step + 1) * batch_size]
    chunk = np.concatenate([chunk, np.full(batch_size - len(chunk), PAD_INDEX, np.int64)])
    return chunk[rank * per_rank : (rank + 1) * per_rank]


class _RankBatches(Sampler):
    """Yields this rank's items ``(epoch, step, index)`` per step, from a start point on, epoch after epoch.

    The stream crosses epoch boundaries so that worker processes live for the whole run instead of being
    restarted every epoch (which costs more than an epoch of a small dataset takes to decode)."""

    def __init__(self, num_samples: int, cfg: LoaderConfig, epoch: int, step: int, rank: int, world: int):
        self.num_samples, self.cfg, self.epoch, self.step = num_samples, cfg, epoch, step
        self.rank, self.world = rank, world
        self.steps = steps_per_epoch(num_samples, cfg.batch_size, cfg.train)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, start = self.epoch, self.step
        while True:
            order = epoch_order(self.num_samples, self.cfg.seed, epoch, self.cfg.shuffle)
            for step in range(start, self.steps):
                idx = rank_indices(order, step, self.cfg.batch_size, self.rank, self.world)
                yield [(epoch, step, int(i)) for i in idx]
            epoch, start = epoch + 1, 0


class ShardSamples(Dataset):
    """Fetches whole batches: ``__getitems__`` receives one step's ``(epoch, step, index)`` items.

    Per image only the read and the JPEG decode happen one at a time; targets come from the objects table
    (no JSON parsing) and every box is moved by one vectorised pass over the batch."""

    def __init__(self, data_dir: str | Path, cfg: LoaderConfig):
        self.reader = ShardReader(data_dir)
        self.cfg = cfg
        self.categories = self.reader.categories
        self._fitted_cache: tuple[dict, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.reader)

    def _fitted(self) -> tuple[dict, np.ndarray]:
        """Every object as the letterbox pass leaves it for an image already at the batch size (clipped to the
        canvas, slivers dropped, mostly-cut objects ignored), as plain column arrays, and where each sample's
        rows start. That pass does not depend on the epoch, so it runs once for the dataset, vectorised, instead
        of once per batch; and gathering rows from plain columns is faster than from the structured table."""
        if self._fitted_cache is None:
            raw = objects_as_targets(self.reader.objects)
            samples = self.reader.objects["sample"].astype(np.int64)
            n, size = len(self.reader), self.cfg.image_size
            fitted, kept = transform_targets(
                raw, samples, Geometry.identity(n, size[0]), size, self.cfg.augment
            )
            self._fitted_cache = fitted, np.searchsorted(kept, np.arange(n + 1))
        return self._fitted_cache

    def objects_of(self, indices: np.ndarray, fitted: bool = False) -> tuple[dict, np.ndarray]:
        """Target arrays of all objects of ``indices`` (-1: none), as annotated or ``fitted``, and the batch
        position owning each."""
        columns, starts = self._fitted() if fitted else (None, self.reader._object_starts)
        safe = np.maximum(indices, 0)
        counts = np.where(indices >= 0, starts[safe + 1] - starts[safe], 0)
        owner = np.repeat(np.arange(len(indices)), counts)
        offsets = np.repeat(starts[safe] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        rows = offsets + np.arange(len(owner))
        if columns is None:
            return objects_as_targets(self.reader.objects[rows]), owner
        return {k: v[rows] for k, v in columns.items()}, owner

    def fitted_objects(self, indices: np.ndarray, pre: Geometry) -> tuple[dict, np.ndarray]:
        """Objects of ``indices`` (-1: none) in the batch's canvas: from the ``fitted`` table, except for images
        of another size, whose objects go through their own letterbox ``pre``."""
        objects, owner = self.objects_of(indices, fitted=True)
        w = self.cfg.image_size[0]
        odd = (pre.scale != 1) | (pre.tx != 0) | (pre.ty != 0) | (pre.in_width != w)
        if not odd.any():
            return objects, owner
        other, other_owner = self.objects_of(np.where(odd, indices, -1))
        other, other_owner = transform_targets(other, other_owner, pre, self.cfg.image_size, self.cfg.augment)
        same = ~odd[owner]
        owner = np.concatenate([owner[same], other_owner])
        order = np.argsort(owner, kind="stable")
        return {k: np.concatenate([v[same], other[k]])[order] for k, v in objects.items()}, owner[order]

    def decode(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Sample ``i`` as RGB uint8 HxWx3, decoded straight into ``out`` when it is a JPEG of that shape."""
        data = self.reader.image_view(i)
        try:
            return decode_image(data, out)
        except ValueError as e:
            raise CorruptSampleError(*self.reader.where(i), f"image does not decode ({e})") from e

    def __getitem__(self, item: tuple[int, int, int]) -> dict:
        return self.__getitems__([item])

    def _load(self, indices: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, list[str], Geometry]:
        """Decode into ``images``; letterbox odd sizes. Returns which loaded, problems, and the letterbox."""
        size = self.cfg.image_size
        ok, skipped = np.zeros(len(indices), bool), []
        pre = Geometry.identity(len(indices), size[0])
        for k, i in enumerate(indices):
            if i == PAD_INDEX:
                continue
            row = images[k]
            try:
                image = self.decode(int(i), row)
            except CorruptSampleError as e:
                if self.cfg.on_corrupt == "fail":
                    raise
                skipped.append(str(e))
                continue
            h, w = image.shape[:2]
            if (w, h) != size:  # imported data of another size: fit it first, in the worker
                scale, tx, ty = letterbox_params((w, h), size)
                pre.scale[k], pre.tx[k], pre.ty[k], pre.in_width[k] = scale, tx, ty, w
                image = warp_image(image, size, scale, tx, ty)
            if image is not row:  # decoded elsewhere (another size, or PNG): copy into the slot
                row[...] = image
            ok[k] = True
        return ok, skipped, pre

    def _read_jpegs(self, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
        """``decode="device"``: the checked JPEG bytes of each sample (empty for padding), which loaded, problems.
        The device decodes whole batches of one size, so every image must already be at the batch size."""
        size, empty = self.cfg.image_size, np.zeros(0, np.uint8)
        jpegs, ok, skipped = [], np.zeros(len(indices), bool), []
        for k, i in enumerate(indices):
            jpegs.append(empty)
            if i == PAD_INDEX:
                continue
            try:
                data = self.reader.image_bytes(int(i))
                try:
                    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
                except ValueError as e:
                    raise CorruptSampleError(*self.reader.where(int(i)), f"not a readable JPEG ({e})") from e
            except CorruptSampleError as e:
                if self.cfg.on_corrupt == "fail":
                    raise
                skipped.append(str(e))
                continue
            if (w, h) != size:
                shard, key = self.reader.where(int(i))
                raise ValueError(
                    f"{shard} {key}: decode='device' needs every image at the batch size {size[0]}x{size[1]}, "
                    f"this one is {w}x{h}; use decode='workers', which letterboxes"
                )
            jpegs[k], ok[k] = np.frombuffer(bytearray(data), np.uint8), True  # writable, for torch
        return jpegs, ok, skipped

    def __getitems__(self, items: list[tuple[int, int, int]]) -> dict:
        epoch, step = items[0][0], items[0][1]
        indices = np.array([i for _, _, i in items], np.int64)
        w, h = self.cfg.image_size
        if self.cfg.decode == "device":
            jpegs, ok, skipped = self._read_jpegs(indices)
            pre = Geometry.identity(len(indices), w)
        else:
            producer, slot, images = self.ring.take(len(items))
            for k in np.flatnonzero(indices == PAD_INDEX):
                images[k] = 0  # (a boolean-mask assignment scans the whole 14 MB batch: 15 ms)
            ok, skipped, pre = self._load(indices, images.numpy())
        keep = ok | (indices == PAD_INDEX)
        indices, n = indices[keep], int(keep.sum())
        if self.cfg.decode == "device":
            pixels = {"jpegs": [j for j, k in zip(jpegs, keep, strict=True) if k], "size": (w, h)}
        else:
            if not keep.all():  # skipped corrupt samples: close the gaps in the slot
                for j, k in enumerate(np.flatnonzero(keep)):
                    if j != k:
                        images[j] = images[k]
            pixels = {"ring": (producer, slot, n)}
        if not keep.all():
            pre = _select(pre, keep)
        real = indices != PAD_INDEX
        objects, owner = self.fitted_objects(np.where(real, indices, -1), pre)
        theta, photometric = np.tile(IDENTITY_THETA, (n, 1, 1)), np.tile(IDENTITY_PHOTOMETRIC, (n, 1))
        if self.cfg.train:
            u = sample_uniforms(self.cfg.seed, epoch, indices, N_UNIFORMS)
            g, photometric = draw_params(u, (w, h), self.cfg.augment)
            g.flip &= real  # padding stays blank
            objects, owner = transform_targets(objects, owner, g, (w, h), self.cfg.augment)
            theta = device_theta(g, (w, h))
        return pixels | {
            "objects": objects,  # flat over the batch, as the loss takes them (to_torch: BatchTargets)
            "counts": np.bincount(owner, minlength=n),
            "index": indices,
            "valid": real,
            "theta": theta,
            "photometric": photometric,
            "skipped": skipped,
            "epoch": epoch,
            "step": step,
        }


class BatchRing:
    """Shared-memory batch slots that workers decode into, reused round-robin, one row of slots per worker.

    Why: a fresh 14 MB batch buffer per step costs its page faults and zeroing, measured here at 35-45% on
    top of the JPEG decode (1087 img/s decoding into a reused buffer, 721 into a fresh one, 594 into fresh
    shared memory). Reusing slots removes that, and the batch crosses to the main process as three integers.
    The price, as in FFCV and DALI: a batch's ``images`` are overwritten once the loader has produced
    ``prefetch_batches + 1`` further batches; ``.clone()`` them to keep them longer.
    """

    def __init__(self, producers: int, slots: int, batch: int, size: tuple[int, int]):
        w, h = size
        self.slots = slots
        self.buffers = torch.empty((producers, slots, batch, h, w, 3), dtype=torch.uint8).share_memory_()
        self._taken = 0  # per process: each worker counts its own batches

    def take(self, n: int) -> tuple[int, int, torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        producer, slot = (info.id if info else 0), self._taken % self.slots
        self._taken += 1
        return producer, slot, self.buffers[producer, slot, :n]

    def view(self, producer: int, slot: int, n: int) -> torch.Tensor:
        return self.buffers[producer, slot, :n]


def _select(g: Geometry, keep: np.ndarray) -> Geometry:
    return Geometry(g.scale[keep], g.tx[keep], g.ty[keep], g.flip[keep], g.in_width[keep])


def collate(batch: dict) -> dict:
    """``__getitems__`` already built the batch. No tensor travels back from a worker: each one would cross
    with a file-descriptor transfer of about a millisecond (7 target tensors per image measured 160 img/s
    against 600 in process). Images stay in the BatchRing; NumPy arrays are pickled inline and become
    tensors in ``to_torch``, without a copy."""
    return batch


def to_torch(batch: dict) -> dict:
    """NumPy fields of a batch as tensors (zero-copy); the targets stay flat (``BatchTargets``)."""
    out = dict(batch)
    for k in ("index", "valid", "theta", "photometric"):
        out[k] = torch.from_numpy(np.ascontiguousarray(batch[k]))
    fields = {k: torch.from_numpy(v) for k, v in out.pop("objects").items()}
    out["targets"] = BatchTargets(fields, torch.from_numpy(out.pop("counts")))
    return out


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)  # one decode thread per worker process: the workers are the parallelism


def worker_context() -> mp.context.BaseContext:
    """Workers start from a forkserver, not a fork of this process: a fork of a process whose OpenCV or
    OpenMP thread pools have run inherits their locks and hangs in the child (seen here on the first
    ``cv2.setNumThreads`` call). The server imports this module once; each worker after that is a cheap fork
    of a clean process."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


class ShardLoader:
    """Iterate over the rest of the current epoch; ``state_dict()`` after any batch resumes right after it.

    >>> loader = ShardLoader("data/train", LoaderConfig(batch_size=32), rank=rank, world_size=world)
    >>> for batch in loader: ...            # one epoch; then the epoch counter moves on
    >>> torch.save({"loader": loader.state_dict()}, ...)
    """

    def __init__(self, data_dir: str | Path, cfg: LoaderConfig, rank: int = 0, world_size: int = 1):
        if cfg.batch_size % world_size:
            raise ValueError(
                f"global batch size {cfg.batch_size} must be divisible by the world size {world_size} "
                "so that every rank gets the same number of samples"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.dataset = ShardSamples(data_dir, cfg)
        self.dataset.ring = None  # decode="device": the JPEG bytes travel instead
        if cfg.decode == "workers":
            self.dataset.ring = BatchRing(
                max(cfg.workers, 1), cfg.ring_slots, cfg.batch_size // world_size, cfg.image_size
            )
        self.num_samples = len(self.dataset)
        if steps_per_epoch(self.num_samples, cfg.batch_size, cfg.train) == 0:
            raise ValueError(
                f"{data_dir} has {self.num_samples} samples, fewer than one global batch of {cfg.batch_size}"
            )
        self.epoch, self.step = 0, 0
        self.skipped: list[str] = []
        self._stream: Iterator[dict] | None = None
        self._stream_next: tuple[int, int] | None = None

    @property
    def categories(self) -> tuple[str, ...]:
        return self.dataset.categories

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.num_samples, self.cfg.batch_size, self.cfg.train)

    def __len__(self) -> int:
        return self.steps_per_epoch - self.step

    def forever(self) -> Iterator[dict]:
        """Batches epoch after epoch from the current position (benchmarks and step-counted training)."""
        while True:
            yield from self

    def state_dict(self) -> dict:
        return {
            "seed": self.cfg.seed,
            "epoch": self.epoch,
            "step": self.step,
            "batch_size": self.cfg.batch_size,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict) -> None:
        for name, mine in (("seed", self.cfg.seed), ("batch_size", self.cfg.batch_size)):
            if state[name] != mine:
                raise ValueError(f"loader state has {name}={state[name]}, this loader {name}={mine}")
        if state["num_samples"] != self.num_samples:
            raise ValueError(
                f"loader state is for {state['num_samples']} samples, dataset has {self.num_samples}"
            )
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    def _open_stream(self) -> Iterator[dict]:
        sampler = _RankBatches(self.num_samples, self.cfg, self.epoch, self.step, self.rank, self.world_size)
        workers = self.cfg.workers
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=_worker_init if workers else None,
            prefetch_factor=self.cfg.prefetch_batches if workers else None,
            multiprocessing_context=worker_context() if workers else None,
        )
        return iter(loader)

    def close(self) -> None:
        """Stop the worker processes (they also stop when the loader is garbage-collected)."""
        self._stream = self._stream_next = None

    def __iter__(self) -> Iterator[dict]:
        if self.step >= self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        if self._stream is None or self._stream_next != (self.epoch, self.step):
            self.close()  # resumed or repositioned: the prefetched batches belong elsewhere
            self._stream = self._open_stream()
        epoch = self.epoch
        while self.step < self.steps_per_epoch:
            batch = to_torch(next(self._stream))
            if "ring" in batch:
                batch["images"] = self.dataset.ring.view(*batch.pop("ring"))
            assert (batch["epoch"], batch["step"]) == (epoch, self.step), "loader stream out of order"
            if batch["skipped"]:
                self.skipped += batch["skipped"]
                for msg in batch["skipped"]:
                    warnings.warn(f"skipped corrupt sample: {msg}", stacklevel=2)
            self.step += 1
            self._stream_next = (epoch, self.step) if self.step < self.steps_per_epoch else (epoch + 1, 0)
            yield batch
        self.epoch, self.step = epoch + 1, 0


def decode_on_device(
    jpegs: list[np.ndarray], size: tuple[int, int], device: torch.device | str
) -> torch.Tensor:
    """JPEG bytes (empty arrays: padding, left black) as uint8 (B, H, W, 3) on ``device``, decoded in one
    batched ``torchvision.io.decode_jpeg`` call (nvJPEG on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    w, h = size
    real = [k for k, j in enumerate(jpegs) if len(j)]
    if not real:
        return torch.zeros((len(jpegs), h, w, 3), dtype=torch.uint8, device=device)
    if torch.device(device).type == "cuda":
        # nvJPEG decodes on its own stream into memory allocated on ours, without waiting for it: work still
        # queued here (an optimizer step reading gradients freed by zero_grad) could see that memory reused
        torch.cuda.current_stream(device).synchronize()
    decoded = decode_jpeg([torch.from_numpy(jpegs[k]) for k in real], mode=ImageReadMode.RGB, device=device)
    images = torch.stack(decoded).permute(0, 2, 3, 1)
    if len(real) == len(jpegs):
        return images
    out = torch.zeros((len(jpegs), h, w, 3), dtype=torch.uint8, device=device)
    out[real] = images
    return out


def batch_pixels(batch: dict, device: torch.device | str = "cpu", copy: bool = False) -> torch.Tensor:
    """The batch's uint8 (B, H, W, 3) pixels on ``device``: decoded there (``decode="device"``) or moved from
    the BatchRing; ``copy=True`` gives a private copy even on the ring's own device (the ring reuses slots)."""
    if "jpegs" in batch:
        return decode_on_device(batch["jpegs"], batch["size"], device)
    return batch["images"].to(device, non_blocking=True, copy=copy)


def batch_images(batch: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """The batch's images on ``device`` as float (B, 3, H, W) in [0, 1], channels_last, augmented when the
    loader left the pixel work to the device (and decoded there with ``decode="device"``)."""
    images = batch_pixels(batch, device)
    theta, photometric = batch["theta"], batch["photometric"]
    identity = bool((theta == torch.from_numpy(IDENTITY_THETA)).all()) and bool(
        (photometric == torch.from_numpy(IDENTITY_PHOTOMETRIC)).all()
    )
    if identity:
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last)
    return augment_on_device(images, theta.to(device), photometric.to(device))
