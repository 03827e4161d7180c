"""The planner's formulas on hand-worked cases, the catalog's sources, validation, the plan CLI, the report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from crosswalk.cli import main
from crosswalk.infra.catalog import load_catalog, missing_sources
from crosswalk.infra.plan import catalog_key_for_device, gpu_calibration, make_plan, shipped_device_checks
from crosswalk.infra.planner import (
    allreduce_time_s,
    device_latency_line,
    erlang_c,
    fit_alpha_beta,
    fit_line,
    inference_plan,
    mmc_wait_quantile_s,
    p99_latency_s,
    training_plan,
)
from crosswalk.infra.profile_infer import paired_efficiency
from crosswalk.infra.profile_train import _pair_interior
from crosswalk.infra.report import SECTIONS, write_report
from crosswalk.infra.validate import validate

# ---- fixtures: profiles shaped like the profilers' output, with round numbers ----------------------------


def profile_train_fixture(gradient_bytes: int = 1_000_000) -> dict:
    return {
        "device": "cpu",
        "gflops_forward_backward_per_image": 1.0,
        "gflops_forward_per_image": 0.35,
        "activation_bytes_per_image": 1_000_000,  # fp32 -> 0.5 MB bf16 -> 1.5 MB traffic: compute-bound
        "activation_dtype": "float32",
        "bytes_per_sample": 25_000.0,
        "decode_cpu_s_per_sample": 0.001,
        "gradient_bytes_per_step": gradient_bytes,
        "checkpoint_bytes": 4_000_000,
        "mfu_this_machine": 0.1,
        "step": {"batch_size": 16, "data_wait_ms": 5.0, "forward_ms": 100.0, "backward_ms": 180.0,
                 "optimizer_ms": 10.0, "allreduce_ms": 2.0, "total_ms": 297.0, "images_per_s": 53.9},
        "compute_only": {"16": {"step_ms": 300.0, "images_per_s": 53.333}, "32": {"step_ms": 630.0, "images_per_s": 50.8}},
        "calibration_batch_size": 16,
        "allreduce": {"world_size": 2, "rows": [
            {"bytes": 1_000_000, "ms": 2.0, "busbw_gb_per_s": 0.5},
            {"bytes": 4_000_000, "ms": 5.5, "busbw_gb_per_s": 0.73},
            {"bytes": 16_000_000, "ms": 17.0, "busbw_gb_per_s": 0.94},
        ]},
        "machine": {"cores": 2, "matmul_fp32_gflops": 80.0, "memory_gb_per_s": 10.0},
    }  # fmt: skip


def profile_infer_fixture(a_ms: float = 2.0, c_ms: float = 10.0) -> dict:
    rows = [
        {"threads": t, "batch": b, "p50_ms": (a_ms + c_ms * b) / t**0.5, "p90_ms": 1.1 * (a_ms + c_ms * b),
         "images_per_s": 1e3 * b / (a_ms + c_ms * b)}
        for t in (1, 2) for b in (1, 2, 4, 8, 16)
    ]  # fmt: skip
    return {
        "rows": rows,
        "calibration_batches": [1, 2, 8],
        "best_threads": 1,
        "service_cv2": 0.05,
        "memory_per_replica_mb": 150.0,
        "replicas": {"replicas": 2, "batch": 4, "images_per_s": 190.0, "cpu_s_per_s": 1.9,
                     "one_replica_images_per_s": 100.0, "one_replica_cpu_s_per_s": 1.0},
        "gflops_forward_per_image": 0.4,
        "forward_bytes_per_image": 100_000_000,
        "weight_bytes": 1_400_000,
        "kernels_per_forward": 100,
        "input_bytes_per_image": 512 * 288 * 3,
        "jpeg_bytes_per_image": 25_000,
        "server_overhead_ms": 1.5,
        "machine": {"cores": 2, "matmul_fp32_gflops": 80.0, "memory_gb_per_s": 10.0},
    }  # fmt: skip


PLAN_ARGS = dict(train_images=1_000_000, epochs=10, deadline_h=1.0, serve_fps=1000.0, p99_ms=50.0)


# ---- formulas -----------------------------------------------------------------------------------------------


def test_ring_allreduce_matches_the_worked_example() -> None:
    # infra.md s3.4: 100 MB across 8 GPUs at 370 GB/s busbw = 1.75 x 100 MB / 370 GB/s = 0.473 ms
    assert allreduce_time_s(100e6, 8, 370e9) == pytest.approx(1.75 * 100e6 / 370e9)
    assert 1e3 * allreduce_time_s(100e6, 8, 370e9) == pytest.approx(0.473, abs=0.001)
    # 16 GPUs over two nodes at 384 GB/s: 1.875 x 100 MB / 384 GB/s = 0.488 ms
    assert 1e3 * allreduce_time_s(100e6, 16, 384e9) == pytest.approx(0.488, abs=0.001)
    assert allreduce_time_s(100e6, 1, 370e9) == 0.0  # one rank has nothing to exchange
    assert allreduce_time_s(100e6, 2, 100e9, latency_s=1e-3) == pytest.approx(1e-3 + 1e-3)


def test_erlang_c_and_the_mmc_wait_quantile_by_hand() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    # c=2, a=1: (a^2/2! * 2/(2-1)) / (1 + a + a^2/2! * 2/(2-1)) = 1 / 3
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.0) == 1.0  # unstable
    # M/M/1, lambda 50, mu 100: P(W > t) = 0.5 exp(-50 t) = 0.01 -> t = ln(50)/50
    assert mmc_wait_quantile_s(0.99, 50, 100, 1) == pytest.approx(math.log(50) / 50)
    assert mmc_wait_quantile_s(0.99, 1, 100, 4) == 0.0  # almost never waits
    assert mmc_wait_quantile_s(0.99, 300, 100, 2) == math.inf


def test_p99_adds_overhead_fill_queue_and_service() -> None:
    # 1 replica, batch 1, service 10 ms, lambda 50/s: rho 0.5, M/M/1 p99 wait ln(50)/50 s scaled by (1+0)/2
    expected = 0.002 + 0 + math.log(50) / 50 / 2 + 0.010
    assert p99_latency_s(50, 1, 0.010, 1, 0.0, overhead_s=0.002) == pytest.approx(expected)
    # batch 4 at 400 frames/s: the first frame waits 3/400 s for the batch to fill
    assert p99_latency_s(400, 4, 0.001, 100, 0.0) == pytest.approx(3 / 400 + 0.001)


def test_line_fits_are_exact_on_exact_data() -> None:
    assert fit_line([1, 2, 8], [12, 22, 82]) == pytest.approx((2.0, 10.0))
    assert fit_line([1, 2, 8], [12, 22, 82], relative=True) == pytest.approx((2.0, 10.0))
    alpha, bw = fit_alpha_beta([1e6, 16e6], [0.001 + 1e6 / 1e9, 0.001 + 16e6 / 1e9])
    assert (alpha, bw) == pytest.approx((0.001, 1e9))
    with pytest.raises(ValueError, match="two distinct"):
        fit_line([4, 4], [1, 2])


def test_relative_fit_weighs_small_batches_like_large_ones() -> None:
    # Batch 32 measured 5% off the line: plain least squares follows it and misses batch 1 by 2.2%; the
    # relative fit spreads the misfit (batch 1 off by 0.8%) and has the smaller sum of squared relative errors.
    xs, ys = [1, 2, 32], [12.0, 22.0, 322.0 * 1.05]

    def relative_errors(line: tuple[float, float]) -> list[float]:
        a, c = line
        return [abs(a + c * x - y) / y for x, y in zip(xs, ys, strict=True)]

    plain, relative = relative_errors(fit_line(xs, ys)), relative_errors(fit_line(xs, ys, relative=True))
    assert plain[0] == pytest.approx(0.0216, abs=1e-3) and relative[0] == pytest.approx(0.0082, abs=1e-3)
    assert sum(e**2 for e in relative) < sum(e**2 for e in plain)


# ---- catalog ------------------------------------------------------------------------------------------------


def test_every_catalog_figure_has_a_source_and_peaks_are_dense() -> None:
    catalog = load_catalog()
    assert missing_sources(catalog) == []
    assert catalog["gpu"]["h100_sxm"]["bf16_dense_tflops"] == 989.0  # 1,979 "with sparsity" halved
    assert set(catalog["gpu"]) >= {"h200_sxm", "h100_sxm", "h100_pcie", "a100_sxm", "l40s", "l4"}
    assert {"kr6288v2", "kr4268v2"} <= set(catalog["server"]) and "this_machine" in catalog
    for key, gpu in catalog["gpu"].items():  # dense INT8 is twice dense BF16 on every listed part
        assert gpu["int8_dense_tops"] == pytest.approx(2 * gpu["bf16_dense_tflops"], rel=0.02), key


def test_a_catalog_figure_without_source_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "hw.toml"
    bad.write_text('[gpu.x]\nname = "X"\nbf16_dense_tflops = 1.0\n[gpu.x.sources]\n')
    with pytest.raises(ValueError, match=r"gpu\.x\.bf16_dense_tflops has no source"):
        load_catalog(bad)


def test_device_names_map_to_catalog_keys() -> None:
    assert catalog_key_for_device("NVIDIA H200") == "h200_sxm"
    assert catalog_key_for_device("NVIDIA H100 PCIe") == "h100_pcie"
    assert catalog_key_for_device("NVIDIA H100 80GB HBM3") == "h100_sxm"
    assert catalog_key_for_device("cpu") is None


# ---- plans --------------------------------------------------------------------------------------------------


def test_training_plan_by_hand() -> None:
    catalog = load_catalog()
    plan = training_plan(
        profile_train_fixture(),
        catalog,
        **{k: PLAN_ARGS[k] for k in ("train_images", "epochs", "deadline_h")},
    )
    # compute roof: 989e12 x 0.18 / 1e9 = 178,020 img/s; memory roof: 4.8e12 x 0.8 / 1.5e6 = 2.56 M img/s
    assert (
        plan["per_gpu_images_per_s"] == pytest.approx(178020, rel=1e-4) and plan["per_gpu_bound"] == "compute"
    )
    assert plan["required_images_per_s"] == pytest.approx(1e7 / 3600, rel=1e-4)
    assert plan["gpus"] == 1 and plan["nodes"] == 1 and plan["allreduce_ms_per_step"] == 0
    assert plan["storage_tb"] == pytest.approx(1e6 * 25e3 / 1e12 + 3 * 4e6 / 1e12)
    assert plan["read_gb_per_s"] == pytest.approx(plan["images_per_s"] * 25e3 / 1e9, rel=1e-3)
    assert plan["checkpoint_write_s"] == pytest.approx(4e6 / 6.6e9, abs=1e-4)
    for key in (
        "gpus",
        "nodes",
        "storage_tb",
        "read_gb_per_s",
        "allreduce_ms_per_step",
        "decode_cores_per_node",
    ):
        assert {"value", "formula", "inputs"} <= set(plan["derivation"][key])


def test_large_gradients_make_the_job_interconnect_bound() -> None:
    catalog = load_catalog()
    fast = dict(train_images=10_000_000, epochs=100, deadline_h=1.0)  # 277,778 img/s: two GPUs or more
    small = training_plan(profile_train_fixture(1_000_000), catalog, **fast)
    big = training_plan(profile_train_fixture(400_000_000), catalog, **fast)
    assert not small["interconnect_bound"] and big["interconnect_bound"]
    n = small["gpus"]  # the smallest count meeting the rate: n does, n - 1 does not
    assert small["images_per_s"] >= small["required_images_per_s"]
    rate, batch = small["per_gpu_images_per_s"], 64
    busbw = catalog["gpu"]["h200_sxm"]["ring_busbw_gb_per_s"] * 1e9
    fewer = (n - 1) * batch / (batch / rate + allreduce_time_s(1e6, n - 1, busbw))
    assert fewer < small["required_images_per_s"]
    # 400 MB at 8 GPUs: 1.75 x 400 MB / 370 GB/s = 1.89 ms per step, past the 0.36 ms of compute
    assert big["allreduce_ms_per_step"] > big["compute_ms_per_step"]


def test_inference_plan_meets_the_bound_with_headroom() -> None:
    catalog = load_catalog()
    plan = inference_plan(profile_infer_fixture(), catalog, serve_fps=1000, p99_ms=50)
    assert plan["device"] in plan["candidates"] and plan["p99_ms_predicted"] <= 50
    for c in plan["candidates"].values():
        if c["feasible"]:
            assert c["p99_ms"] <= 50 and c["utilisation"] <= 0.7 + 1e-9
            assert (c["replicas"] - 1) * c["per_replica_images_per_s"] >= 1000 * 0.999  # spare on top
    cpu = plan["candidates"]["this_machine"]
    assert cpu["latency_line_ms"] == pytest.approx([2.0, 10.0])  # fitted on batches 1, 2, 8 of the fixture
    chosen = plan["candidates"][plan["device"]]
    assert chosen["power_w"] == min(
        c["power_w"] for c in plan["candidates"].values() if c["feasible"] and c["power_w"]
    )


def test_validate_reports_each_error() -> None:
    result = validate(profile_train_fixture(), profile_infer_fixture())
    by_name = {c["name"]: c for c in result["checks"]}
    # 32 images at the calibrated 53.333 img/s = 600 ms, measured 630 ms: 4.76 %
    assert by_name["training step, batch 32"]["error_pct"] == pytest.approx(100 * 30 / 630, abs=0.05)
    # alpha + S/B through (1 MB, 2 ms) and (16 MB, 17 ms): 1 ms + 1 ms/MB -> 5 ms at 4 MB, measured 5.5
    assert by_name["2-rank gloo all-reduce, 4.0 MB"]["error_pct"] == pytest.approx(100 * 0.5 / 5.5, abs=0.05)
    # the fixture's 1-thread latency is exactly linear: no error at batches 4 and 16
    assert by_name["inference p50 latency, batch 16, 1 thread(s)"]["error_pct"] == pytest.approx(0, abs=1e-6)
    # 100 images per CPU-second x 1.9 CPU-s/s = 190, measured 190
    assert by_name["2 replicas side by side, images/s"]["error_pct"] == pytest.approx(0)
    assert result["max_error_pct"] == max(c["error_pct"] for c in result["checks"])


def test_replica_check_is_paired_round_by_round() -> None:
    # (images, wall s, CPU s): round 1 alone 50 images on 0.5 CPU-s = 100/CPU-s, together 90 + 90 images/s on
    # 1.8 CPU-s/s -> 180 / (100 x 1.8) = 1.0; round 2 a slow host, 40/CPU-s alone and 36 images/s each on
    # 1.8 CPU-s/s together -> 72 / 72 = 1.0; round 3: 100/CPU-s alone, 80 + 80 on 2.0 -> 0.8. Median 1.0;
    # rates pooled over the rounds would say 0.92.
    alone = [[(50, 0.5, 0.5)], [(20, 0.5, 0.5)], [(50, 0.5, 0.5)]]
    together = [
        [(45, 0.5, 0.45), (45, 0.5, 0.45)],
        [(18, 0.5, 0.45), (18, 0.5, 0.45)],
        [(40, 0.5, 0.5), (40, 0.5, 0.5)],
    ]
    assert paired_efficiency(alone, together) == pytest.approx(1.0)
    profile = profile_infer_fixture()
    profile["replicas"] |= {"efficiency_paired": 0.95}
    (check,) = [c for c in validate(None, profile)["checks"] if c["name"].startswith("2 replicas")]
    assert check["predicted"] == pytest.approx(190.0) and check["measured"] == pytest.approx(180.5)
    assert check["error_pct"] == pytest.approx(100 * 9.5 / 180.5, abs=0.01)


def test_validate_fits_the_training_step_line_through_two_batches() -> None:
    profile = profile_train_fixture()
    # paired steps of 200 ms at batch 8 and 300 ms at 16: 100 ms a step + 12.5 ms an image -> 500 ms at 32
    profile["line_batch_size"] = 8
    profile["compute_only"] = {
        "8": {"step_ms": 210.0, "step_ms_paired": 200.0, "images_per_s": 38.1},
        "16": {"step_ms": 300.0, "images_per_s": 53.333},
        "32": {"step_ms": 560.0, "step_ms_paired": 520.0, "images_per_s": 57.1},
    }
    (check,) = [c for c in validate(profile, None)["checks"] if c["name"].startswith("training step")]
    assert check["name"] == "training step, batch 32" and check["predicted"] == pytest.approx(500.0)
    assert check["measured"] == 520.0 and check["error_pct"] == pytest.approx(100 * 20 / 520, abs=0.01)


def test_allreduce_pairing_uses_each_reps_own_ends() -> None:
    # buffers of 1, 2 and 3 MB: the middle lies half-way along the line through the ends. In the second rep
    # the host slowed down after the first buffer, which puts the medians (2 and 12 ms at the ends, 8.8 ms in
    # the middle) in different reps; per rep the middle took 1.1, 1.26 and 1.1 x its own ends' line.
    rows = [
        {"bytes": 1_000_000, "ms": 2.0},
        {"bytes": 2_000_000, "ms": 8.8},
        {"bytes": 3_000_000, "ms": 12.0},
    ]
    times = [[0.002, 0.002, 0.004], [0.0044, 0.0088, 0.0088], [0.006, 0.012, 0.012]]
    _pair_interior(rows, times)
    assert "ms_paired" not in rows[0] and "ms_paired" not in rows[2]
    assert rows[1]["ms_paired"] == pytest.approx(1.1 * (2.0 + 12.0) / 2)
    (check,) = [
        c for c in validate(profile_train_fixture() | {"allreduce": {"rows": rows}}, None)["checks"]
        if c["name"].startswith("2-rank")
    ]  # fmt: skip
    assert check["measured"] == pytest.approx(7.7) and check["predicted"] == pytest.approx(7.0)


def test_make_plan_has_the_promised_keys() -> None:
    plan = make_plan(profile_train_fixture(), profile_infer_fixture(), **PLAN_ARGS)
    assert {
        "gpus",
        "nodes",
        "storage_tb",
        "read_gb_per_s",
        "allreduce_ms_per_step",
        "interconnect_bound",
    } <= set(plan["training"])
    assert {"device", "replicas", "p99_ms_predicted", "power_w"} <= set(plan["inference"])
    assert isinstance(plan["validation"]["max_error_pct"], float)
    assert set(plan["seed_servers"]) == {"kr6288v2", "kr4268v2"}
    json.dumps(plan)  # JSON-clean


def _device_check(rate: float, gflops: float) -> dict:
    """A ``device-check`` result with one training row, shaped like the shipped ones."""
    row = {"preset": "nano", "compile": False, "decode": "workers", "compute_only_images_per_s": rate,
           "train_images_per_s": 0.7 * rate, "gflops_per_image": gflops}  # fmt: skip
    infer = {"gflops_forward_per_image": {"nano": profile_infer_fixture()["gflops_forward_per_image"]},
             "presets": {"nano": [{"mode": "eager", "batch": 1, "p50_ms": 8.0},
                                  {"mode": "cuda_graph", "batch": 1, "p50_ms": 1.0}]}}  # fmt: skip
    environment = {"gpu": "NVIDIA H200"}
    return {
        "measured": "test",
        "config": {"batch_size": 256},
        "environment": environment,
        "train": [row],
        "infer": infer,
    }


def test_a_gpu_measurement_of_the_same_model_scales_every_gpus_mfu() -> None:
    catalog = load_catalog()
    profile = profile_train_fixture()  # 1.0 GFLOP per image forward and backward
    cal = gpu_calibration(
        [_device_check(4000.0, 1.005)], profile, catalog
    )  # within 1% of the profile's FLOPs
    mfu = 4000 * 1.0 / 989e3  # images/s x GFLOP / peak GFLOP/s of the H200's dense bf16
    assert cal["gpu"] == "h200_sxm"
    assert cal["measured_mfu"] == pytest.approx(mfu, abs=1e-5)
    assert cal["scale"] == pytest.approx(mfu / 0.18, abs=1e-5)
    plan = make_plan(
        profile, profile_infer_fixture(), device_checks=[_device_check(4000.0, 1.0)], **PLAN_ARGS
    )
    assert plan["training"]["per_gpu_images_per_s"] == pytest.approx(
        4000.0, rel=1e-3
    )  # compute roof, measured
    assert (
        plan["training"]["derivation"]["compute_ms_per_step"]["inputs"]["per_gpu_batch"] == 256
    )  # as measured
    a100 = plan["training"]["alternatives"]["a100_sxm"]
    assert a100["mfu"] == pytest.approx(0.27 * mfu / 0.18, rel=1e-3)
    assert "device-check" in plan["training"]["derivation"]["mfu"]["formula"]
    assert plan["gpu_calibration"]["catalog_error_pct"] > 100  # the catalog's ResNet-50 MFU, far off
    training, serving = plan[
        "validation_gpu"
    ]  # reported: the catalog's training rate, the CUDA-graph latency
    assert training["measured"] == 4000.0
    assert training["predicted"] == plan["gpu_calibration"]["catalog_predicted_images_per_s"]
    a, c = device_latency_line(profile_infer_fixture(), catalog["gpu"]["h200_sxm"], catalog["assumptions"])[
        "value"
    ]
    assert serving["measured"] == 1.0 and serving["predicted"] == pytest.approx(a + c, abs=1e-4)


def test_a_gpu_measurement_of_another_model_is_not_used() -> None:
    profile = profile_train_fixture()
    assert gpu_calibration([_device_check(4000.0, 1.05)], profile, load_catalog()) is None
    plan = make_plan(
        profile, profile_infer_fixture(), device_checks=[_device_check(4000.0, 1.05)], **PLAN_ARGS
    )
    assert (
        plan["gpu_calibration"] is None and len(plan["validation_gpu"]) == 1
    )  # the serving row still matches
    assert plan["training"]["mfu"] == 0.18  # the catalog's


def test_the_shipped_h200_measurement_calibrates_the_nano_preset() -> None:
    from crosswalk.model import model_info
    from crosswalk.train.config import TrainConfig
    from crosswalk.train.loop import model_config_for

    checks = shipped_device_checks()
    assert checks and all(catalog_key_for_device(c["environment"]["gpu"]) for c in checks)
    mcfg = model_config_for(
        TrainConfig(preset="nano", image_size=(512, 288)), ("pedestrian", "cyclist", "vehicle")
    )
    profile = profile_train_fixture() | {
        "gflops_forward_backward_per_image": model_info(mcfg)["gflops_forward_backward"]
    }
    cal = gpu_calibration(checks, profile, load_catalog())
    assert cal is not None and 0 < cal["measured_mfu"] < cal["catalog_mfu"]


# ---- CLI and report -----------------------------------------------------------------------------------------


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """An outputs folder as the demo leaves it, with small fixture files and one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = tmp_path / "outputs"
    out.mkdir()
    (out / "profile_train.json").write_text(json.dumps(profile_train_fixture()))
    (out / "profile_infer.json").write_text(json.dumps(profile_infer_fixture()))
    (out / "bench_data.json").write_text(json.dumps({"synth_frames_per_s": 20.0, "loader_images_per_s": 900.0,
                                                     "decode_limit_images_per_s": 1000.0, "ratio": 0.9}))  # fmt: skip
    (out / "bench_train.json").write_text(json.dumps({"train_images_per_s": 20.0, "compute_only_images_per_s": 21.0,
                                                      "ratio": 0.95, "data_wait_fraction": 0.02, "params": 357128,
                                                      "gflops_per_image": 1.24, "mfu": None}))  # fmt: skip
    (out / "bench_infer.json").write_text(json.dumps({"runtime_p50_ms": 20.0, "server_p50_ms": 22.0, "overhead_ms": 2.0, "overhead_paired_ms": 2.1,
                                                      "batched_images_per_s": 60.0, "server_max_qps": 40.0,
                                                      "p99_bound_ms": 100.0, "valid": True}))  # fmt: skip
    (out / "drive.json").write_text(json.dumps({
        "scenarios": [{"name": "day-50", "speed_kmh": 50, "condition": "day", "collision": False, "min_gap_m": 3.2,
                       "first_detection_m": 40.0, "latency_ms": 20.0}],
        "max_safe_latency_ms": {"50": {"day": 400.0}}}))  # fmt: skip
    (out / "eval_quick.json").write_text(json.dumps({"map50": 0.1, "map": 0.04, "per_class": {"pedestrian": {"ap50": 0.08}},
                                                     "pedestrian_mr": {"reasonable": 0.8}}))  # fmt: skip
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(out / "montage.png")
    plt.close(fig)
    return out


def test_plan_cli_writes_json_and_validate_prints_errors(outputs: Path, capsys) -> None:
    args = ["--from", str(outputs), "--train-images", "1000000", "--epochs", "10", "--deadline-h", "1",
            "--serve-fps", "1000", "--p99-ms", "50"]  # fmt: skip
    assert main(["plan", *args, "--json", str(outputs / "plan.json")]) == 0
    plan = json.loads((outputs / "plan.json").read_text())
    assert plan["training"]["gpus"] >= 1
    text = capsys.readouterr().out
    assert "<- images x epochs / (deadline_h x 3600)" in text  # every figure printed with its formula
    assert main(["plan", "--from", str(outputs), "--validate"]) == 0
    assert "training step, batch 32" in capsys.readouterr().out
    assert main(["plan", *args, "--hardware", "h100_sxm,l4"]) == 0
    assert main(["plan", *args, "--hardware", "tpu_v9"]) == 2
    assert "unknown gpu ['tpu_v9']" in capsys.readouterr().err


def test_plan_without_profiles_says_what_to_run(tmp_path: Path, capsys) -> None:
    args = [
        "--train-images",
        "10",
        "--epochs",
        "1",
        "--deadline-h",
        "1",
        "--serve-fps",
        "1",
        "--p99-ms",
        "50",
    ]
    assert main(["plan", "--from", str(tmp_path), *args]) == 2
    assert "crosswalk profile train" in capsys.readouterr().err


def test_report_has_every_section_and_image_embedded(outputs: Path) -> None:
    assert main(["plan", "--from", str(outputs), "--json", str(outputs / "plan.json"), "--train-images", "1000000",
                 "--epochs", "10", "--deadline-h", "1", "--serve-fps", "1000", "--p99-ms", "50"]) == 0  # fmt: skip
    page = write_report(outputs).read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    images = re.findall(r'<img src="([^"]+)"', page)
    # montage + step breakdown + latency vs batch + two plan plots, and the reference model's three eval plots
    assert len(images) == 5 + 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "reference model (models/reference-nano): miss_rate.png" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network
    for needle in ("six needs", "Vehicle loop", "day-50", "kr6288v2", "KR4268V2", "max error", "not run"):
        assert needle.lower() in page.lower()
    assert page.lower().count("not run") <= 2  # only what the fixture lacks (e.g. data statistics)


def test_report_on_an_empty_folder_says_not_run(tmp_path: Path) -> None:
    page = write_report(tmp_path, tmp_path / "r.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert "plan (plan.json): not run" in page and "vehicle loop (drive.json): not run" in page
