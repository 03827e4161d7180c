"""``crosswalk device-check`` runs every section on the CPU (``--quick``), so it is known to work before a GPU
machine is lent; the CUDA-only parts say why they were skipped."""

import json

from crosswalk.cli import main
from crosswalk.infra.device_check import DeviceCheckConfig, loader_workers, train_rows


def test_quick_device_check_fills_every_section_on_the_cpu(tmp_path):
    assert main(["device-check", "--out", str(tmp_path), "--quick"]) == 0
    result = json.loads((tmp_path / "device_check.json").read_text())
    assert result["errors"] == {} and result["environment"]["device"] == "cpu"
    assert result["data"]["frames"] == DeviceCheckConfig.quick().frames
    assert result["decode"]["cpu_images_per_s"] > 0 and result["decode"]["device_images_per_s"] > 0
    train = result["train"]
    assert [(r["preset"], r["decode"], r["compile"]) for r in train] == [
        ("nano", "workers", False),
        ("nano", "device", False),
    ]
    assert all(r["train_images_per_s"] > 0 and r["compute_only_images_per_s"] > 0 for r in train)
    plan = result["plan"]  # against the GPU's own rate: compute only
    assert plan["predicted_images_per_s"] == plan["derivation"]["value"] > 0
    best = max(r["compute_only_images_per_s"] for r in train)
    assert plan["measured_images_per_s"] == best and plan["measured_setting"]["compute_only"]
    assert plan["error_pct"] == round(100 * abs(plan["predicted_images_per_s"] - best) / best, 1)
    step = result["step"]  # batches a quarter, one and four times the check's (4 here)
    assert (
        list(step["compute_only_images_per_s"]) == ["1", "4", "16"] and step["profiled_wall_ms_per_step"] > 0
    )
    assert "gpu_kernel_ms_per_step" not in step  # CUDA only
    assert result["infer"]["nano_single_stream_with_decode_ms"] > result["infer"]["jpeg_decode_device_ms"]
    rows = result["infer"]["presets"]["nano"]
    assert [(r["mode"], r["batch"]) for r in rows] == [
        ("eager", 1),
        ("cuda_graph", 1),
        ("eager", 4),
        ("cuda_graph", 4),
    ]
    assert all(r["p50_ms"] > 0 for r in rows if r["mode"] == "eager")
    assert all(r["skipped"] == "needs CUDA" for r in rows if r["mode"] == "cuda_graph")


def test_the_full_check_trains_both_presets_and_compiles_with_cpu_decode():
    rows = train_rows(DeviceCheckConfig()) + train_rows(DeviceCheckConfig(), compiled=True)
    assert {(r["preset"], r["decode"]) for r in rows} == {
        (p, d) for p in ("nano", "small") for d in ("workers", "device")
    }
    assert [r["preset"] for r in rows if r["compile"]] == ["nano", "small"]
    assert all(r["decode"] == "workers" for r in rows if r["compile"])


def test_loader_workers_fit_their_batch_slots_in_dev_shm(monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    cfg = DeviceCheckConfig()  # 2 slots x 256 x 512 x 288 x 3 bytes = 0.23 GB per worker, 2 more held
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(0, 0, 64 * 2**20))  # a container's default
    workers, why = loader_workers(cfg, "workers")
    assert workers == 0 and why.startswith("/dev/shm fits 0 workers")
    assert loader_workers(cfg, "device") == (16, "")  # no batch slots: the JPEG bytes travel by pipe
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(0, 0, 100 * 2**30))
    assert loader_workers(cfg, "workers") == (16, "")
