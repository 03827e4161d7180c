"""The profilers, for real, on tiny inputs: a 24-image dataset at 64x48 and a tiny exported detector."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import write_tiny_dataset
from crosswalk.infra.profile_infer import InferProfileConfig, profile_infer
from crosswalk.infra.profile_train import TrainProfileConfig, profile_train
from crosswalk.infra.validate import validate
from crosswalk.model import DetectorConfig, build_detector
from crosswalk.train.checkpoint import export_weights

TINY = DetectorConfig(width_mult=0.125, depth_mult=0.33, neck_channels=64, input_size=(128, 96))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights folder; Predictor exports it to ONNX once and caches that by the weights' hash."""
    root = tmp_path_factory.mktemp("infra")
    torch.manual_seed(0)
    export_weights(root / "run", build_detector(TINY).state_dict(), TINY.to_dict(), {"step": 0})
    return root / "run" / "weights"


def test_profile_train_on_a_tiny_dataset(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = write_tiny_dataset(tmp_path / "tiny", n=24, size=(64, 48))
    cfg = TrainProfileConfig.quick(
        line_batch_size=2, batch_size=4, validate_batch_size=8, workers=0, allreduce_reps=3
    )
    p = profile_train(data, cfg, progress=False)
    assert p["image_size"] == [64, 48]
    assert 0 < p["gflops_forward_per_image"] < p["gflops_forward_backward_per_image"]
    assert p["activation_bytes_per_image"] > 0
    assert p["bytes_per_sample"] > p["jpeg_bytes_per_sample"] > 0  # the tar entry holds the JPEG and its JSON
    assert p["decode_cpu_s_per_sample"] > 0
    assert p["gradient_bytes_per_step"] == 4 * p["params"]
    # model + EMA + Adam's two moments: at least 4 copies of the fp32 weights
    assert p["checkpoint_bytes"] >= 4 * p["gradient_bytes_per_step"]
    step = p["step"]
    parts = ("data_wait_ms", "forward_ms", "backward_ms", "optimizer_ms", "allreduce_ms")
    assert all(step[k] >= 0 for k in parts) and step["total_ms"] == pytest.approx(
        sum(step[k] for k in parts), abs=0.05
    )
    assert set(p["compute_only"]) == {"2", "4", "8"}
    line, calib, held_out = (p["compute_only"][b] for b in ("2", "4", "8"))
    # every step at another batch size sits between two at the calibration batch
    assert len(calib["steps_ms"]) == len(line["steps_ms"]) + len(held_out["steps_ms"]) + 1
    assert line["step_ms_paired"] > 0 and held_out["step_ms_paired"] > 0
    rows = p["allreduce"]["rows"]  # a real 2-rank gloo run: gradient bytes x 1, 4, 16
    assert [r["bytes"] for r in rows] == [int(p["gradient_bytes_per_step"] * m) // 4 * 4 for m in (1, 4, 16)]
    assert rows[1]["ms_paired"] > 0 and "ms_paired" not in rows[0]
    for r in rows:  # nccl-tests' busbw: algbw x 2(n-1)/n, which is algbw itself at n = 2
        assert r["busbw_gb_per_s"] == pytest.approx(r["bytes"] / (r["ms"] / 1e3) / 1e9, rel=0.01)
    checks = validate(p, None)["checks"]
    assert {c["name"] for c in checks} >= {"training step, batch 8"}
    assert all(c["error_pct"] >= 0 for c in checks)


def test_profile_infer_on_a_tiny_weights(tiny_weights: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench_infer.json"
    bench.write_text('{"overhead_ms": 1.25}')
    cfg = InferProfileConfig(batches=(1, 2, 4), calibration_batches=(1, 2), threads=(1,), rounds=2, batch1_calls=4,
                             replica_batch=2, replica_seconds=0.5, replica_rounds=3)  # fmt: skip
    p = profile_infer(tiny_weights, cfg, bench_json=bench, progress=False)
    assert [(r["threads"], r["batch"]) for r in p["rows"]] == [(1, 1), (1, 2), (1, 4)]
    assert all(r["p50_ms"] > 0 and r["p50_ms_paired"] > 0 and r["images_per_s"] > 0 for r in p["rows"])
    assert p["input_size"] == [128, 96] and p["input_bytes_per_image"] == 128 * 96 * 3
    assert (
        p["gflops_forward_per_image"] > 0
        and p["forward_bytes_per_image"] > 0
        and p["kernels_per_forward"] > 10
    )
    assert p["memory_per_replica_mb"] > 0
    assert p["server_overhead_ms"] == 1.25
    rep = p["replicas"]
    assert rep["images_per_s"] > 0 and rep["cpu_s_per_s"] > 0 and rep["one_replica_images_per_s"] > 0
    assert rep["efficiency_paired"] > 0
    assert all(v is None or 0 <= v <= os.cpu_count() for v in rep["host_steal_cores"].values())
    assert rep["pinned_to_cores"] == (len(os.sched_getaffinity(0)) >= 2)  # a core for each 1-thread replica
    names = {c["name"] for c in validate(None, p)["checks"]}
    assert names == {"inference p50 latency, batch 4, 1 thread(s)", "2 replicas side by side, images/s"}
