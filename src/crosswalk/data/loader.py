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

The worker processes are crosswalk's own (``Workers``), not torch's DataLoader: any free worker takes the
next step, and batches come back in step order (see ``Workers`` for why).

Training drops the last partial batch. Evaluation pads it with index -1 and ``valid=False`` so every rank
runs the same number of steps (no collective waits on a rank that ran out).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import traceback
import warnings
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import simplejpeg
import torch

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
HELD = 2  # yielded batches whose BatchRing slots stay untouched: the current one and the one before


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
    prefetch_batches: int = 2  # batches in flight per worker: being built, or built and waiting
    decode: Literal["workers", "device"] = "workers"  # where JPEGs become pixels (see the module docstring)

    def __post_init__(self) -> None:
        if self.decode not in ("workers", "device"):
            raise ValueError(f"decode must be 'workers' or 'device', got {self.decode!r}")

    @property
    def in_flight(self) -> int:
        """Batches asked of the workers and not yet yielded (one at a time without workers)."""
        return self.workers * self.prefetch_batches if self.workers else 1

    @property
    def ring_slots(self) -> int:
        """BatchRing slots: the batches in flight plus the ``HELD`` last yielded, which the training step uses."""
        return self.in_flight + HELD


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


def rank_steps(
    num_samples: int, cfg: LoaderConfig, epoch: int, step: int, rank: int, world: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """This rank's ``(epoch, step, indices)`` from a start point on, epoch after epoch.

    The stream crosses epoch boundaries so that worker processes live for the whole run instead of being
    restarted every epoch (which costs more than an epoch of a small dataset takes to decode)."""
    steps = steps_per_epoch(num_samples, cfg.batch_size, cfg.train)
    while True:
        order = epoch_order(num_samples, cfg.seed, epoch, cfg.shuffle)
        for s in range(step, steps):
            yield epoch, s, rank_indices(order, s, cfg.batch_size, rank, world)
        epoch, step = epoch + 1, 0


class ShardSamples:
    """Builds whole batches: ``load`` receives one step's sample indices.

    Per image only the read and the JPEG decode happen one at a time; targets come from the objects table
    (no JSON parsing) and every box is moved by one vectorised pass over the batch."""

    def __init__(self, data_dir: str | Path, cfg: LoaderConfig):
        self.reader = ShardReader(data_dir)
        self.cfg = cfg
        self.categories = self.reader.categories
        self._fitted_cache: tuple[dict, np.ndarray] | None = None
        # decode="workers": the BatchRing it decodes into (ShardLoader sets it)
        self.ring: BatchRing | None = None

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

    def load(self, epoch: int, step: int, indices: np.ndarray, slot: int | None) -> dict:
        """The batch of ``indices`` (PAD_INDEX: padding), its pixels decoded into BatchRing ``slot``."""
        w, h = self.cfg.image_size
        if self.cfg.decode == "device":
            jpegs, ok, skipped = self._read_jpegs(indices)
            pre = Geometry.identity(len(indices), w)
        else:
            images = self.ring.view(slot, len(indices))
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
            pixels = {"ring": (slot, n)}
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
    """Shared-memory batch slots that workers decode into, handed out and taken back by the main process.

    Why: a fresh 14 MB batch buffer per step costs its page faults and zeroing, measured here at 35-45% on
    top of the JPEG decode (1087 img/s decoding into a reused buffer, 721 into a fresh one, 594 into fresh
    shared memory). Reusing slots removes that, and the batch crosses to the main process as two integers.
    The price, as in FFCV and DALI: a batch's ``images`` are overwritten once the loader has yielded ``HELD``
    further batches; ``.clone()`` them to keep them longer.
    """

    def __init__(self, slots: int, batch: int, size: tuple[int, int], shared: bool = True):
        w, h = size
        self.slots = slots
        self.buffers = torch.empty((slots, batch, h, w, 3), dtype=torch.uint8)
        if shared:  # workers decode into it
            self.buffers.share_memory_()
        self.held: deque[int] = deque()  # slots of the last HELD batches yielded: not handed out again yet

    def view(self, slot: int, n: int) -> torch.Tensor:
        return self.buffers[slot, :n]


def _select(g: Geometry, keep: np.ndarray) -> Geometry:
    return Geometry(g.scale[keep], g.tx[keep], g.ty[keep], g.flip[keep], g.in_width[keep])


def to_torch(batch: dict) -> dict:
    """NumPy fields of a batch as tensors (zero-copy); the targets stay flat (``BatchTargets``)."""
    out = dict(batch)
    for k in ("index", "valid", "theta", "photometric"):
        out[k] = torch.from_numpy(np.ascontiguousarray(batch[k]))
    fields = {k: torch.from_numpy(v) for k, v in out.pop("objects").items()}
    out["targets"] = BatchTargets(fields, torch.from_numpy(out.pop("counts")))
    return out


def worker_context() -> mp.context.BaseContext:
    """Workers start from a forkserver, not a fork of this process: a fork of a process whose OpenCV or
    OpenMP thread pools have run inherits their locks and hangs in the child (seen here on the first
    ``cv2.setNumThreads`` call). The server imports this module once; each worker after that is a cheap fork
    of a clean process."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def exit_with_parent() -> None:
    """Exit this worker process once the process that started it is gone without saying stop (killed):
    blocked on its task queue, it would otherwise live on, holding its memory. Watching ``os.getppid()``, as
    torch's DataLoader workers do, does not help under a forkserver: the parent is the server, which every
    worker it forked keeps alive. No-op in the main process."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def _work(dataset: ShardSamples, tasks, results) -> None:
    """A loader process: builds the batch of each task it takes, until the main process kills it.

    It ignores SIGINT and SIGTERM: Ctrl-C and a scheduler's SIGTERM reach the whole process group, and the
    trainer answers them by finishing its step and checkpointing, which needs the workers' next batches. The
    main process stops the workers itself, and they exit when it is gone (``exit_with_parent``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # one thread per worker process: the workers are the parallelism
    exit_with_parent()
    while True:
        task = tasks.get()
        try:
            batch = _timed_load(dataset, task)
        except Exception as e:
            batch = {
                "error": _picklable(e),
                "trace": traceback.format_exc(),
                "epoch": task[0],
                "step": task[1],
            }
        results.send(batch)


def _timed_load(dataset: ShardSamples, task: tuple) -> dict:
    start = time.perf_counter()
    batch = dataset.load(*task)
    batch["build_s"] = time.perf_counter() - start
    return batch


def _stop(procs: list, pipes: list, tasks) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.join()
    for pipe in pipes:
        pipe.close()
    if tasks is not None:
        tasks.close()


class Workers:
    """This rank's batches, in step order, built ``cfg.workers`` processes at a time (in process with none).

    All workers take tasks from one queue, so the next step goes to whichever worker is free first, and
    batches come back in any order and are yielded in step order. torch's DataLoader instead deals steps
    round-robin and lets a worker run only ``prefetch_factor`` steps ahead of the batch being waited for: when
    one worker is slowed for a moment (its core taken by the main process or another tenant), the other
    fills its prefetch and idles. With two workers that idling cost 10% of the loader's throughput here
    (0.75 of the decode limit with DataLoader, 0.86 with this, alternating in one run of 12 rounds).

    Batch slots belong to the main process: each task names the BatchRing slot to decode into, and a slot
    comes back when ``HELD`` further batches have been yielded. A worker's failure is raised with its traceback
    when its step comes up (the batches before it are yielded first); a worker that dies is named with its exit
    code instead of leaving the loader waiting.

    Tasks go through a ``multiprocessing.Queue``, whose feeder thread writes them to the pipe: a put never
    blocks the main process. With a plain pipe, once the tasks not yet taken filled it (64 KB: some 30 tasks
    of 256 indices), the main process blocked putting while every worker blocked sending a result the main
    process was not reading, for good.
    """

    def __init__(
        self, dataset: ShardSamples, steps: Iterator[tuple[int, int, np.ndarray]], cfg: LoaderConfig
    ):
        self.dataset, self.steps, self.in_flight = dataset, steps, cfg.in_flight
        self.ring = dataset.ring
        # slots still held by the caller from before a reposition stay out until HELD more batches are yielded
        self.free = deque(k for k in range(self.ring.slots) if k not in self.ring.held) if self.ring else None
        self.issued: deque[tuple[int, int]] = deque()  # steps asked for and not yet yielded, in order
        self.done: dict[tuple[int, int], dict] = {}  # batches back from a worker, not yet yielded
        self.procs, self.pipes, self.tasks = [], [], None
        ctx = worker_context() if cfg.workers else None
        if ctx is not None:
            self.tasks = ctx.Queue()
            self.tasks.cancel_join_thread()  # at exit, do not wait to flush tasks no worker will take
        self.close = weakref.finalize(self, _stop, self.procs, self.pipes, self.tasks)  # before any start
        for _ in range(cfg.workers):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_work, args=(dataset, self.tasks, send), daemon=True)
            proc.start()
            send.close()
            self.procs.append(proc)
            self.pipes.append(receive)

    def _ask(self) -> None:
        while len(self.issued) < self.in_flight and (self.free is None or self.free):
            epoch, step, indices = next(self.steps)
            slot = self.free.popleft() if self.free is not None else None
            self.issued.append((epoch, step))
            if self.procs:
                self.tasks.put((epoch, step, indices, slot))
            else:
                self.done[epoch, step] = _timed_load(self.dataset, (epoch, step, indices, slot))

    def _receive(self, block: bool = True) -> None:
        """Take the results that are ready (waiting for one when ``block``)."""
        sentinels = [p.sentinel for p in self.procs]
        ready = wait(self.pipes + sentinels, timeout=None if block else 0)
        for k, (pipe, sentinel) in enumerate(zip(self.pipes, sentinels, strict=True)):
            if pipe in ready:
                try:
                    batch = pipe.recv()
                except (EOFError, OSError):  # OSError: it died halfway through a message
                    raise self._died(k) from None
                if "error" in batch:
                    batch["worker"] = k
                self.done[batch["epoch"], batch["step"]] = batch
            elif sentinel in ready:
                raise self._died(k)

    def _died(self, k: int) -> RuntimeError:
        proc = self.procs[k]
        proc.join(5)
        hint = " (killed: often the out-of-memory killer)" if proc.exitcode == -9 else ""
        return RuntimeError(
            f"loader worker {k} (pid {proc.pid}) exited unexpectedly, exit code {proc.exitcode}{hint}"
        )

    def __next__(self) -> dict:
        self._ask()
        key = self.issued[0]
        while key not in self.done:
            self._receive()
        self.issued.popleft()
        batch = self.done.pop(key)
        if "error" in batch:
            error = batch["error"]
            error.add_note(f"in loader worker {batch['worker']}, epoch {key[0]} step {key[1]}:")
            error.add_note(batch["trace"])
            raise error
        if "ring" in batch:
            self.ring.held.append(batch["ring"][0])
            if len(self.ring.held) > HELD:
                self.free.append(self.ring.held.popleft())
        if self.procs:
            self._ask()  # the slot just freed goes back to work while the caller uses this batch
            if self.ring is None:  # results of MBs of JPEG bytes: take them now, so no worker waits to send
                self._receive(block=False)
        return batch


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
        if cfg.decode == "workers":
            self.dataset.ring = BatchRing(
                cfg.ring_slots, cfg.batch_size // world_size, cfg.image_size, shared=cfg.workers > 0
            )
        self.num_samples = len(self.dataset)
        if steps_per_epoch(self.num_samples, cfg.batch_size, cfg.train) == 0:
            raise ValueError(
                f"{data_dir} has {self.num_samples} samples, fewer than one global batch of {cfg.batch_size}"
            )
        self.epoch, self.step = 0, 0
        self.skipped: list[str] = []
        self.build_s = 0.0  # seconds workers spent building the batches yielded so far (busy, not waiting)
        self._stream: Workers | None = None
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

    def close(self) -> None:
        """Stop the worker processes (they also stop when the loader is garbage-collected)."""
        if self._stream is not None:
            self._stream.close()
        self._stream = self._stream_next = None

    def __iter__(self) -> Iterator[dict]:
        if self.step >= self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        if self._stream is None or self._stream_next != (self.epoch, self.step):
            self.close()  # resumed or repositioned: the prefetched batches belong elsewhere
            steps = rank_steps(self.num_samples, self.cfg, self.epoch, self.step, self.rank, self.world_size)
            self._stream = Workers(self.dataset, steps, self.cfg)
        epoch = self.epoch
        while self.step < self.steps_per_epoch:
            try:
                batch = to_torch(next(self._stream))
            except BaseException:  # a failed or interrupted step: the batches in flight are of no use
                self.close()
                raise
            if "ring" in batch:
                batch["images"] = self.dataset.ring.view(*batch.pop("ring"))
            assert (batch["epoch"], batch["step"]) == (epoch, self.step), "loader stream out of order"
            self.build_s += batch.pop("build_s")
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
