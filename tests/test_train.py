"""The trainer: config handling, schedules, and resume that reproduces an uninterrupted run exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_tiny_dataset
from crosswalk.train.checkpoint import latest_checkpoint
from crosswalk.train.config import TrainConfig, lr_at, resolve_config
from crosswalk.train.loop import TrainingDiverged, train

TINY = [
    "steps=6",
    "batch_size=4",
    "image_size=64x48",
    "warmup_steps=2",
    "checkpoint_every=2",
    "log_every=1",
    "workers=0",
    "threads=1",
    "width_mult=0.125",
    "seed=3",
]
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("train") / "d", n=16)


def _final_model(run: Path) -> dict:
    state, _ = latest_checkpoint(run)
    return {"model": state["model"], "ema": state["ema"], "step": state["step"]}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    train(resolve_config(None, TINY), data, run)
    return _final_model(run)


def _cli(data, run, *extra):
    return [sys.executable, "-m", "crosswalk", "train", "--data", str(data), "--out", str(run), *extra, *TINY]


def _wait_for_checkpoint(run: Path, step: int, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        ledger = run / "checkpoints.json"
        if ledger.exists() and any(e["step"] >= step for e in json.loads(ledger.read_text())):
            return
        if proc.poll() is not None:
            pytest.fail(f"training exited early with {proc.returncode}")
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared")


def _assert_same(a: dict, b: dict, atol: float = 0.0):
    assert a["step"] == b["step"]
    for part in ("model", "ema"):
        for k in a[part]:
            if atol == 0:
                assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"
            else:
                torch.testing.assert_close(a[part][k], b[part][k], atol=atol, rtol=0)


def test_sigkill_then_resume_is_bit_identical(data, reference, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(data, run), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(run, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest_checkpoint(run)[1]["step"] < 6
    train(resolve_config(None, TINY), data, run, resume=True)
    _assert_same(_final_model(run), reference)


def test_sigterm_saves_at_the_step_boundary_and_resumes(data, reference, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cli(data, run), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _wait_for_checkpoint(run, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err
    train(resolve_config(None, TINY), data, run, resume=True)
    _assert_same(_final_model(run), reference)


def test_run_folder_outputs(data, tmp_path):
    run = tmp_path / "run"
    train(resolve_config(None, [*TINY, "steps=2"]), data, run, val=data)
    for name in (
        "config.json",
        "metrics.jsonl",
        "checkpoints.json",
        "weights/model.safetensors",
        "eval.json",
    ):
        assert (run / name).exists(), name
    assert any(p.name.startswith("events") for p in (run / "tb").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "images_per_s", "data_wait_fraction", "lr"} <= set(rows[0])
    with pytest.raises(FileExistsError, match="--resume"):
        train(resolve_config(None, TINY), data, run)


def test_init_from_starts_at_the_given_weights(data, tmp_path):
    from safetensors.torch import load_file

    source = tmp_path / "source"
    train(resolve_config(None, [*TINY, "steps=2"]), data, source)
    tuned = tmp_path / "tuned"
    train(resolve_config(None, [*TINY, "steps=1", "lr=1e-12", "seed=4", f"init_from={source}"]), data, tuned)
    before = load_file(str(source / "weights" / "model.safetensors"))
    after = load_file(str(tuned / "weights" / "model.safetensors"))
    weights = [k for k in before if "running_" not in k and "num_batches" not in k]  # BN statistics move
    assert weights
    for k in weights:  # one step at lr 1e-12 leaves the weights where init_from put them
        torch.testing.assert_close(after[k], before[k], atol=1e-6, rtol=0, msg=k)
    with pytest.raises(ValueError, match="does not fit this model"):
        train(resolve_config(None, [*TINY, "width_mult=0.25", f"init_from={source}"]), data, tmp_path / "x")


def test_unknown_config_key_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'.*valid keys: .*lr"):
        resolve_config(None, ["learning_rate=0.1"])
    assert resolve_config(None, ["amp=off", "image_size=320x192"]).image_size == (320, 192)


def test_lr_schedule_by_hand():
    cfg = TrainConfig(steps=110, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.5 * 0.9)  # half way through the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)


def test_non_finite_loss_stops_with_a_clear_message(data, tmp_path, monkeypatch):
    import crosswalk.train.loop as loop

    real = loop.detection_loss

    def nan_loss(*a, **k):
        loss, parts = real(*a, **k)
        return loss * float("nan"), parts

    monkeypatch.setattr(loop, "detection_loss", nan_loss)
    with pytest.raises(TrainingDiverged, match="not finite at step 0.*lower lr"):
        train(resolve_config(None, TINY), data, tmp_path / "run")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data, run, *extra, steps="steps=6"):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "crosswalk",
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        *extra,
        *TINY,
        steps,
    ]


def test_torchrun_two_gloo_ranks_train_evaluate_and_resume(data, tmp_path):
    """Real torchrun, 2 processes, gloo: train, evaluate sharded over both ranks, SIGTERM, resume."""
    ref = tmp_path / "ref"
    done = subprocess.run(
        _torchrun(data, ref, "--val", str(data)), env=ENV, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((ref / "eval.json").read_text())
    assert results["images"] == 16  # both ranks' shards reduced on rank 0, nothing twice
    assert json.loads((ref / "config.json").read_text())["world_size"] == 2

    run = tmp_path / "run"
    proc = subprocess.Popen(
        _torchrun(data, run),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_for_checkpoint(run, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(
        _torchrun(data, run, "--resume"), env=ENV, capture_output=True, text=True, timeout=180
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same(_final_model(run), _final_model(ref), atol=1e-6)


def test_targets_cross_to_an_accelerator_as_one_tensor_per_field():
    from crosswalk.train.loop import targets_to

    targets = [
        {"boxes": torch.rand(n, 4), "labels": torch.arange(n), "ignore": torch.zeros(n, dtype=torch.bool)}
        for n in (2, 0, 3)
    ]
    # "meta" stands in for a GPU here: every tensor moves, none of the data does
    moved = targets_to(targets, torch.device("meta"))
    assert [len(t["boxes"]) for t in moved] == [2, 0, 3]
    assert all(
        t[k].device.type == "meta" and t[k].shape == s[k].shape
        for t, s in zip(moved, targets, strict=True)
        for k in s
    )
    assert targets_to(targets, torch.device("cpu"))[2]["boxes"].equal(targets[2]["boxes"])
