"""The loader's order is a function of (seed, epoch, step) alone: resume anywhere, with any world size."""

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tiny_dataset
from crosswalk.data.loader import (
    BatchRing,
    LoaderConfig,
    ShardLoader,
    ShardSamples,
    Workers,
    batch_images,
    epoch_order,
    rank_indices,
)
from crosswalk.data.shards import CorruptSampleError
from crosswalk.data.transforms import (
    IDENTITY_PHOTOMETRIC,
    IDENTITY_THETA,
    N_UNIFORMS,
    AugmentConfig,
    Geometry,
    augment_on_device,
    device_theta,
    draw_params,
    letterbox,
    photometric_lut,
    sample_uniforms,
    transform_targets,
    warp_image,
)

BATCH = 6  # divisible by world sizes 1, 2 and 3
EPOCHS_STEPS = 2 * (24 // BATCH)  # two epochs of the 24-sample dataset


def _loaders(data, world, workers, state=None):
    cfg = LoaderConfig(batch_size=BATCH, image_size=(64, 48), workers=workers, seed=7)
    loaders = [ShardLoader(data, cfg, rank=r, world_size=world) for r in range(world)]
    if state is not None:
        for loader in loaders:
            loader.load_state_dict(state)
    return loaders


def _run(loaders, steps):
    """Advance all ranks in lockstep for ``steps`` global steps; return (epoch, step, indices, digest) rows."""
    rows, its = [], [iter(loader) for loader in loaders]
    while len(rows) < steps:
        try:
            batches = [next(it) for it in its]
        except StopIteration:
            its = [iter(loader) for loader in loaders]
            continue
        index = torch.cat([b["index"] for b in batches]).tolist()
        digest = hashlib.sha256(b"".join(b["images"].numpy().tobytes() for b in batches)).hexdigest()
        boxes = [t["boxes"].numpy().round(3).tolist() for b in batches for t in b["targets"]]
        rows.append((batches[0]["epoch"], batches[0]["step"], index, digest, boxes))
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("loader") / "d")


@pytest.fixture(scope="module")
def reference(data):
    return _run(_loaders(data, world=1, workers=0), EPOCHS_STEPS)


def test_reference_covers_each_sample_once_per_epoch(reference):
    for epoch in (0, 1):
        seen = [i for e, _, idx, _, _ in reference if e == epoch for i in idx]
        assert sorted(seen) == list(range(24))
    assert reference[0][2] != reference[4][2]  # a new permutation each epoch


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_run_reproduces_the_global_order(data, reference, world, workers):
    stop = int(np.random.default_rng(world * 10 + workers).integers(1, EPOCHS_STEPS - 1))
    loaders = _loaders(data, world, workers)
    first = _run(loaders, stop)
    state = loaders[0].state_dict()
    assert all(loader.state_dict() == state for loader in loaders)
    rest = _run(_loaders(data, world, workers, state), EPOCHS_STEPS - stop)
    assert first + rest == reference


@pytest.mark.parametrize(("before", "after", "stop"), [(2, 3, 1), (3, 1, 2), (1, 2, 5), (3, 2, 4)])
def test_world_size_change_mid_run(data, reference, before, after, stop):
    loaders = _loaders(data, before, workers=0)
    first = _run(loaders, stop)
    rest = _run(_loaders(data, after, workers=2, state=loaders[0].state_dict()), EPOCHS_STEPS - stop)
    assert first + rest == reference


def test_batch_must_divide_by_world_size(data):
    with pytest.raises(ValueError, match="divisible by the world size 4"):
        ShardLoader(data, LoaderConfig(batch_size=6, image_size=(64, 48)), rank=0, world_size=4)


def test_state_from_another_run_is_refused(data):
    loader = ShardLoader(data, LoaderConfig(batch_size=6, image_size=(64, 48), seed=1))
    with pytest.raises(ValueError, match="seed"):
        loader.load_state_dict({**loader.state_dict(), "seed": 2})


def test_rank_indices_split_the_global_batch_equally():
    order = np.arange(10)
    parts = [rank_indices(order, 1, 6, r, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[6, 7], [8, 9], [-1, -1]]  # padded past the end
    assert epoch_order(5, 0, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]
    assert epoch_order(100, 3, 1).tolist() == epoch_order(100, 3, 1).tolist()
    assert epoch_order(100, 3, 1).tolist() != epoch_order(100, 3, 2).tolist()


def test_eval_pads_the_last_batch_and_sees_every_sample_once(tmp_path):
    data = write_tiny_dataset(tmp_path / "d", n=25)
    cfg = LoaderConfig(batch_size=6, image_size=(64, 48), train=False, shuffle=False, workers=0)
    loaders = [ShardLoader(data, cfg, rank=r, world_size=2) for r in range(2)]
    seen, sizes = [], set()
    for batches in zip(*loaders, strict=True):
        for b in batches:
            sizes.add(len(b["index"]))
            seen += b["index"][b["valid"]].tolist()
    assert sizes == {3}
    assert sorted(seen) == list(range(25))


def _flip_image_byte(data, sample):
    from crosswalk.data.shards import ShardReader

    reader = ShardReader(data)
    row = reader.index[sample]
    path = data / reader.where(sample)[0]
    raw = bytearray(path.read_bytes())
    raw[int(row["image_offset"]) + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    return reader.where(sample)


@pytest.mark.parametrize("workers", [0, 2])
def test_on_corrupt_fail_names_shard_and_key(tmp_path, workers):
    data = write_tiny_dataset(tmp_path / "d")
    shard, key = _flip_image_byte(data, 4)
    loader = ShardLoader(data, LoaderConfig(batch_size=6, image_size=(64, 48), workers=workers, seed=1))
    yielded = []
    with pytest.raises(CorruptSampleError, match=f"{shard}: sample {key}") as raised:
        for batch in loader:
            yielded.append(batch["step"])
    assert (raised.value.shard, raised.value.key) == (shard, key)  # the same error, across the process line
    bad_step = int(np.flatnonzero(epoch_order(24, 1, 0) == 4)[0]) // 6
    assert yielded == list(range(bad_step)) and loader.step == bad_step  # every batch before it came first
    if workers:
        assert any("in loader worker" in note for note in raised.value.__notes__)
    assert loader._stream is None  # the workers were stopped


class _RecordingWorkers(Workers):
    arrived: list

    def _receive(self) -> None:
        before = set(self.done)
        super()._receive()
        self.arrived = getattr(self, "arrived", []) + [k for k in self.done if k not in before]


def test_workers_yield_in_step_order_whatever_order_they_finish(tmp_path):
    """Steps alternate between 6 and 1 images: the small ones come back first, and wait their turn."""
    data = write_tiny_dataset(tmp_path / "d", size=(320, 240))
    cfg = LoaderConfig(batch_size=6, image_size=(320, 240), workers=2, prefetch_batches=3, train=False)
    steps = [(0, s, np.arange(s, s + (6 if s % 2 == 0 else 1))) for s in range(18)]
    samples = ShardSamples(data, cfg)
    samples.ring = BatchRing(cfg.ring_slots, 6, cfg.image_size)
    workers = _RecordingWorkers(samples, iter(steps), cfg)
    for e, s, idx in steps[: -cfg.in_flight]:
        batch = next(workers)
        assert (batch["epoch"], batch["step"]) == (e, s) and batch["index"].tolist() == idx.tolist()
        got = samples.ring.view(*batch["ring"]).numpy()
        np.testing.assert_array_equal(got, np.stack([samples.decode(int(i)) for i in idx]))
    workers.close()
    assert workers.arrived != sorted(workers.arrived)  # the case is not vacuous


def test_big_results_and_many_queued_tasks_do_not_deadlock(data):
    """Results of MBs (JPEG bytes) and more queued task bytes than a pipe holds: with tasks written straight
    into the pipe, the main process blocked putting while both workers blocked sending."""
    cfg = LoaderConfig(batch_size=6, image_size=(64, 48), workers=2, prefetch_batches=8, decode="device")
    samples = ShardSamples(data, cfg)
    steps = ((0, s, np.arange(2048) % 24) for s in range(10**6))  # tasks of ~16 KB, results of ~8 MB
    workers = Workers(samples, steps, cfg)
    got = []
    consumer = threading.Thread(
        target=lambda: got.extend(next(workers)["step"] for _ in range(24)), daemon=True
    )
    consumer.start()
    consumer.join(120)
    workers.close()
    assert got == list(range(24))


def test_batch_images_stay_until_held_more_batches_are_yielded(data):
    loader = ShardLoader(data, LoaderConfig(batch_size=6, image_size=(64, 48), workers=2))
    batches = loader.forever()
    previous = next(batches)
    assert loader.build_s > 0 and "build_s" not in previous  # the workers' busy time, summed in the loader
    copy = previous["images"].clone()
    for _ in range(10):
        batch = next(batches)
        assert torch.equal(previous["images"], copy)  # HELD = 2: the last batch is still intact
        previous, copy = batch, batch["images"].clone()
    loader.load_state_dict({**loader.state_dict(), "step": 0})  # a reposition: a new pool, the same ring
    for _ in range(4):
        batch = next(iter(loader))
        assert torch.equal(previous["images"], copy)
        previous, copy = batch, batch["images"].clone()
    loader.close()


def test_workers_leave_ctrl_c_and_sigterm_to_the_main_process(data):
    """Both reach the whole process group; the trainer answers them by checkpointing after its step, which
    needs the workers alive."""
    loader = ShardLoader(data, LoaderConfig(batch_size=6, image_size=(64, 48), workers=2))
    batches = loader.forever()
    next(batches)
    ignored = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    for proc in loader._stream.procs:  # a worker still starting up has not set its handlers yet
        deadline = time.monotonic() + 30
        while int(_status(proc.pid)["SigIgn"], 16) & ignored != ignored and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGTERM)
    assert [next(batches)["step"] for _ in range(8)] == [1, 2, 3, 0, 1, 2, 3, 0]
    assert all(p.is_alive() for p in loader._stream.procs)
    loader.close()


def test_a_dead_worker_is_named_not_waited_for(data):
    loader = ShardLoader(data, LoaderConfig(batch_size=6, image_size=(64, 48), workers=2))
    batches = loader.forever()
    next(batches)
    victim = loader._stream.procs[1]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    with pytest.raises(
        RuntimeError, match=f"loader worker 1 \\(pid {victim.pid}\\) exited unexpectedly, exit code -9"
    ):
        for _ in range(20):
            next(batches)
    assert loader._stream is None and not any(p.is_alive() for p in [victim])


def test_workers_exit_when_the_main_process_is_killed(data):
    script = (
        "import os, sys\n"
        "from crosswalk.data.loader import LoaderConfig, ShardLoader\n"
        "if __name__ == '__main__':\n"
        f"    loader = ShardLoader({str(data)!r}, LoaderConfig(batch_size=6, image_size=(64, 48), workers=2))\n"
        "    next(iter(loader))\n"
        "    print(*[p.pid for p in loader._stream.procs], flush=True)\n"
        "    sys.stdin.read()\n"
    )
    main = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    pids = [int(p) for p in main.stdout.readline().split()]
    assert len(pids) == 2
    main.kill()
    main.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_on_corrupt_skip_counts_and_warns(tmp_path):
    data = write_tiny_dataset(tmp_path / "d")
    shard, key = _flip_image_byte(data, 4)
    loader = ShardLoader(data, LoaderConfig(batch_size=24, image_size=(64, 48), workers=2, on_corrupt="skip"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = next(iter(loader))
    assert len(batch["index"]) == 23 and 4 not in batch["index"].tolist()
    assert loader.skipped == [f"{shard}: sample {key}: image bytes fail crc32"]
    assert any(key in str(w.message) for w in caught)


@pytest.mark.parametrize("train, workers", [(True, 0), (True, 2), (False, 0)])
def test_device_decode_gives_the_batches_the_workers_give(tmp_path, train, workers):
    data = write_tiny_dataset(tmp_path / "d", n=25)  # eval: the last batch is padded on both ranks
    out = {}
    for decode in ("workers", "device"):
        cfg = LoaderConfig(batch_size=6, image_size=(64, 48), workers=workers, train=train, decode=decode)
        loaders = [ShardLoader(data, cfg, rank=r, world_size=2) for r in range(2)]
        out[decode] = [
            (batch_images(b), b["index"], [t["boxes"] for t in b["targets"]])
            for batches in zip(*loaders, strict=True)
            for b in batches
        ]
    assert "jpegs" in next(iter(ShardLoader(data, cfg))) and len(out["device"]) == len(out["workers"])
    for (xa, ia, ba), (xb, ib, bb) in zip(out["workers"], out["device"], strict=True):
        assert torch.equal(ia, ib) and all(torch.equal(p, q) for p, q in zip(ba, bb, strict=True))
        assert torch.equal(xa, xb)  # on the CPU both decoders are libjpeg-turbo: the same pixels


def test_device_decode_follows_on_corrupt_and_refuses_other_sizes(tmp_path):
    data = write_tiny_dataset(tmp_path / "d")
    shard, key = _flip_image_byte(data, 4)
    cfg = LoaderConfig(batch_size=24, image_size=(64, 48), workers=0, on_corrupt="skip", decode="device")
    with pytest.warns(UserWarning, match=key):
        batch = next(iter(ShardLoader(data, cfg)))
    assert len(batch["index"]) == len(batch["jpegs"]) == 23 and batch_images(batch).shape == (23, 3, 48, 64)
    with pytest.raises(Exception, match=f"{shard}: sample {key}"):
        next(
            iter(
                ShardLoader(
                    data, LoaderConfig(batch_size=24, image_size=(64, 48), workers=0, decode="device")
                )
            )
        )
    other = LoaderConfig(batch_size=24, image_size=(32, 24), workers=0, decode="device")
    with pytest.raises(ValueError, match="needs every image at the batch size 32x24, this one is 64x48"):
        next(iter(ShardLoader(data, other)))
    with pytest.raises(ValueError, match="decode must be"):
        LoaderConfig(decode="gpu")


def _box_image():
    image = np.zeros((48, 64, 3), np.uint8)
    image[10:30, 10:20] = 255
    target = {
        "boxes": np.array([[10, 10, 20, 30]], np.float32),
        "visible_boxes": np.array([[10, 10, 20, 30]], np.float32),
        "labels": np.array([0]),
        "ignore": np.array([False]),
        "visibility": np.array([1.0], np.float32),
        "height_px": np.array([20.0], np.float32),
        "distance_m": np.array([np.nan], np.float32),
    }
    return image, target


def _draw(seed, cfg):
    return draw_params(sample_uniforms(0, 0, np.array([seed]), N_UNIFORMS), (64, 48), cfg)


@pytest.mark.parametrize("seed", range(12))
def test_device_augment_moves_pixels_where_the_worker_moved_the_boxes(seed):
    image, target = _box_image()
    cfg = AugmentConfig(photometric_p=0.0, scale_p=1.0)
    g, photometric = _draw(seed, cfg)
    t, _ = transform_targets(target, np.zeros(1, np.int64), g, (64, 48), cfg)
    assert target["boxes"][0, 0] == 10  # inputs unchanged
    theta = torch.from_numpy(device_theta(g, (64, 48)))
    out = augment_on_device(torch.from_numpy(image)[None], theta, torch.from_numpy(photometric))
    assert out.shape == (1, 3, 48, 64) and out.is_contiguous(memory_format=torch.channels_last)
    bright = out[0, 0].numpy() > 0.8
    cpu = warp_image(image, (64, 48), g.scale[0], g.tx[0], g.ty[0], bool(g.flip[0]))[..., 0] > 200
    if len(t["boxes"]):  # everything bright lies inside the moved box, and the box is bright inside
        x1, y1, x2, y2 = t["boxes"][0]
        ys, xs = np.nonzero(bright)
        assert xs.min() >= x1 - 1 and xs.max() <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() <= y2 + 1
        xi1, yi1, xi2, yi2 = t["boxes"][0].round().astype(int)
        inner = bright[yi1 + 1 : yi2 - 1, xi1 + 1 : xi2 - 1]
        assert inner.size == 0 or inner.mean() > 0.9
    assert (bright != cpu).mean() < 0.02  # CPU reference and device path agree up to edge pixels


def test_device_augment_identity_and_photometric_match_the_lut():
    image = np.random.default_rng(0).integers(0, 255, (1, 16, 24, 3), dtype=np.uint8)
    theta = torch.from_numpy(IDENTITY_THETA)[None]
    out = augment_on_device(torch.from_numpy(image), theta, torch.from_numpy(IDENTITY_PHOTOMETRIC)[None])
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy() * 255, image[0], atol=1e-3)
    p = np.array([1.3, 0.8, 0.05, 1.05, 0.95, 1.0], np.float32)
    out = augment_on_device(torch.from_numpy(image), theta, torch.from_numpy(p)[None])
    lut = photometric_lut(p)[:, 0, :]
    expected = np.stack([lut[image[0, ..., c], c] for c in range(3)], -1)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy() * 255, expected, atol=1.0)


def test_uniforms_depend_on_the_sample_not_the_batch():
    a = sample_uniforms(3, 1, np.array([5, 9, 11]), 4)
    b = sample_uniforms(3, 1, np.array([11, 5]), 4)
    np.testing.assert_array_equal(a[[2, 0]], b)
    assert not np.array_equal(a, sample_uniforms(3, 2, np.array([5, 9, 11]), 4))
    assert 0 <= a.min() and a.max() < 1 and abs(sample_uniforms(0, 0, np.arange(4000), 1).mean() - 0.5) < 0.02


def test_batches_carry_device_augment_params(data):
    loader = ShardLoader(data, LoaderConfig(batch_size=BATCH, image_size=(64, 48), workers=0))
    batch = next(iter(loader))
    assert batch["theta"].shape == (BATCH, 2, 3) and batch["photometric"].shape == (BATCH, 6)
    x = batch_images(batch)
    assert x.shape == (BATCH, 3, 48, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_letterbox_fits_and_centres():
    image, target = _box_image()
    out, t = letterbox(image, target, (128, 128))
    assert out.shape == (128, 128, 3)
    np.testing.assert_allclose(t["boxes"][0], [20, 20 + 16, 40, 60 + 16])  # scale 2, 16 px top border
    assert t["height_px"][0] == 40


def test_crop_marks_mostly_cut_objects_as_ignore():
    _, target = _box_image()
    # shift left by 18 px: 2 of the box's 10 px width stay inside
    g = Geometry(np.ones(1), np.array([-18.0]), np.zeros(1), np.zeros(1, bool), np.array([64.0]))
    t, _ = transform_targets(target, np.zeros(1, np.int64), g, (64, 48), AugmentConfig())
    assert t["ignore"].tolist() == [True]
    np.testing.assert_allclose(t["visibility"], [0.2], atol=1e-6)


def test_flip_mirrors_boxes_by_hand():
    _, target = _box_image()
    g = Geometry(np.ones(1), np.zeros(1), np.zeros(1), np.ones(1, bool), np.array([64.0]))
    t, _ = transform_targets(target, np.zeros(1, np.int64), g, (64, 48), AugmentConfig())
    np.testing.assert_allclose(t["boxes"][0], [64 - 20, 10, 64 - 10, 30])


def test_targets_match_the_json_annotations(data):
    from crosswalk.data.shards import ShardReader

    cfg = LoaderConfig(batch_size=24, image_size=(64, 48), workers=0, train=False, shuffle=False)
    batch = next(iter(ShardLoader(data, cfg)))
    reader = ShardReader(data)
    for i, t in zip(batch["index"].tolist(), batch["targets"], strict=True):
        objects = reader.annotation(i)["objects"]
        np.testing.assert_allclose(
            t["boxes"].numpy(), np.array([o["box"] for o in objects]).reshape(-1, 4), atol=1e-4
        )
        assert t["ignore"].tolist() == [o["ignore"] for o in objects]


def test_fitted_objects_letterbox_only_the_images_of_another_size(data):
    """The per-dataset ``fitted`` table plus a letterbox for odd-sized images gives what one pass over the raw
    objects of the whole batch gives."""
    samples = ShardSamples(data, LoaderConfig(image_size=(64, 48)))
    indices = np.array([3, 5, -1, 7, 2, 11])
    pre = Geometry.identity(len(indices), 64)
    odd = [1, 3, 5]  # as if samples 5, 7 and 11 were 128x96: half size, centred
    pre.scale[odd], pre.tx[odd], pre.ty[odd], pre.in_width[odd] = 0.5, 0.0, 0.0, 128.0
    got, owner = samples.fitted_objects(indices, pre)
    raw, raw_owner = samples.objects_of(indices)
    want, want_owner = transform_targets(raw, raw_owner, pre, (64, 48), AugmentConfig())
    assert len(set(owner.tolist()) & set(odd)) >= 2  # the case is not vacuous
    np.testing.assert_array_equal(owner, want_owner)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
