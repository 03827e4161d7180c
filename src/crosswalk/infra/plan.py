"""``crosswalk plan``: read the profiles (and benchmarks) from one folder, plan both workloads, print how.

``make_plan`` is pure (dicts in, the ``plan.json`` dict out); ``plan_from_dir`` reads the JSON files the
profilers and benchmarks wrote; ``format_plan`` is the terminal view, every figure with its formula.
"""

from __future__ import annotations

import json
from pathlib import Path

from crosswalk.infra.catalog import load_catalog, select
from crosswalk.infra.planner import (
    derived,
    device_latency_line,
    inference_plan,
    per_gpu_training_rate,
    seed_servers,
    training_plan,
)
from crosswalk.infra.validate import check, validate

# CUDA device-name fragments -> catalog keys (most specific first)
DEVICE_NAMES = [
    ("H200", "h200_sxm"),
    ("H100 PCIe", "h100_pcie"),
    ("H100", "h100_sxm"),
    ("A100", "a100_sxm"),
    ("L40S", "l40s"),
    ("L4", "l4"),
]


def catalog_key_for_device(name: str | None) -> str | None:
    """The catalog GPU a CUDA device name refers to (``NVIDIA H200`` -> ``h200_sxm``), or None."""
    if not name:
        return None
    return next((key for fragment, key in DEVICE_NAMES if fragment in name), None)


# Training rates measured on lent GPUs (``crosswalk device-check``), shipped like the catalog
MEASURED_DIR = Path(__file__).parent / "measured"


def shipped_device_checks() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(MEASURED_DIR.glob("*.json"))]


def measured_gpu_mfu(profile_train: dict, bench_train: dict | None, catalog: dict) -> dict[str, dict]:
    """MFU measured on a GPU, by catalog key: from the training profile or ``bench train`` when either ran on
    a GPU the catalog knows (the planner then uses it instead of the sourced assumption)."""
    out = {}
    for name, source in (("bench_train.json", bench_train or {}), ("profile_train.json", profile_train)):
        key = catalog_key_for_device(source.get("device"))
        achieved = source.get("achieved_gflops_per_s")
        if key is None or not achieved:
            continue
        peak = catalog["gpu"][key]["bf16_dense_tflops"] * 1e3
        out[key] = derived(achieved / peak, f"measured on this GPU ({name}): achieved GFLOP/s / peak",
                           achieved_gflops_per_s=achieved, peak_bf16_gflops_per_s=peak)  # fmt: skip
    return out


def _same_network(gflops: float, other: float) -> bool:
    """A device-check row measured the profiled network: FLOPs per image within 1%."""
    return abs(other - gflops) <= 0.01 * gflops


def gpu_calibration(device_checks: list[dict], profile_train: dict, catalog: dict) -> dict | None:
    """This model's training rate measured on a GPU (a ``device-check`` run of the same network: FLOPs per
    image within 1%) against the catalog's prediction for it.

    The catalog's MFU comes from MLPerf ResNet-50; a detector of a few GFLOPs per image at 512x288 reaches far
    less (its convolutions are narrow, and normalisation, activations and depthwise layers are memory-bound).
    ``scale`` = measured MFU / catalog MFU on the measured GPU; the planner applies it to every GPU's catalog
    MFU, taking the model's efficiency relative to ResNet-50 to carry across GPUs. None without a match."""
    gflops = profile_train["gflops_forward_backward_per_image"]
    best = None
    for dc in device_checks:
        key = catalog_key_for_device(dc.get("environment", {}).get("gpu"))
        for row in dc.get("train", []):
            if key is None or "compute_only_images_per_s" not in row:
                continue
            if not _same_network(gflops, row["gflops_per_image"]):
                continue
            if best is None or row["compute_only_images_per_s"] > best[2]["compute_only_images_per_s"]:
                best = (key, dc, row)
    if best is None:
        return None
    key, dc, row = best
    gpu = catalog["gpu"][key]
    rate = row["compute_only_images_per_s"]
    measured = rate * gflops / (gpu["bf16_dense_tflops"] * 1e3)
    predicted = per_gpu_training_rate(profile_train, gpu, gpu["cnn_train_mfu"], catalog["assumptions"])
    return {
        "gpu": key,
        "device": dc["environment"]["gpu"],
        "measured": dc.get("measured", ""),
        "setting": {k: row[k] for k in ("preset", "compile", "decode")}
        | {"batch": dc["config"]["batch_size"], "compute_only": True},
        "measured_images_per_s": rate,
        "measured_with_loader_images_per_s": row["train_images_per_s"],
        "measured_mfu": round(measured, 5),
        "catalog_mfu": gpu["cnn_train_mfu"],
        "scale": round(measured / gpu["cnn_train_mfu"], 5),
        "catalog_predicted_images_per_s": round(predicted["value"], 1),
        "catalog_error_pct": round(100 * abs(predicted["value"] - rate) / rate, 1),
    }


def gpu_checks(device_checks: list[dict], cal: dict | None, profile_infer: dict, catalog: dict) -> list[dict]:
    """The planner's GPU predictions against ``device-check`` measurements of the same networks: the training
    rate at the catalog MFU, and the serving latency line a + c*b against each measured CUDA-graph replay
    (batch 1 and 64). Reported, not fitted (``cal``, from ``gpu_calibration``, is the training one)."""
    out = []
    if cal is not None:
        out.append(check(f"training images/s per {cal['gpu']}, catalog MFU {cal['catalog_mfu']}",
                         f"{cal['measured']}; {cal['setting']['preset']} batch {cal['setting']['batch']}, compute only",
                         cal["catalog_predicted_images_per_s"], cal["measured_images_per_s"], "images/s"))  # fmt: skip
    gflops = profile_infer["gflops_forward_per_image"]
    for dc in device_checks:
        key = catalog_key_for_device(dc.get("environment", {}).get("gpu"))
        infer = dc.get("infer", {})
        for preset, g in infer.get("gflops_forward_per_image", {}).items():
            if key is None or not _same_network(gflops, g):
                continue
            a, c = device_latency_line(profile_infer, catalog["gpu"][key], catalog["assumptions"])["value"]
            for row in infer["presets"][preset]:
                if row.get("mode") == "cuda_graph" and "p50_ms" in row:
                    out.append(check(f"serving p50 latency on {key}, batch {row['batch']}",
                                     f"{dc.get('measured', '')}; {preset}, bf16, CUDA graph, network only",
                                     a + c * row["batch"], row["p50_ms"], "ms"))  # fmt: skip
    return out


def gpu_mfus(profile_train: dict, bench_train: dict | None, device_checks: list[dict], catalog: dict):
    """MFU derivations by GPU key (a key left out: the catalog's) and the calibration behind them."""
    cal = gpu_calibration(device_checks, profile_train, catalog)
    mfus = {}
    if cal is not None:
        for key, gpu in catalog["gpu"].items():
            mfus[key] = derived(
                round(gpu["cnn_train_mfu"] * cal["scale"], 6),
                f"catalog MFU x this model's measured MFU / catalog MFU on {cal['device']} (device-check: "
                f"{cal['measured']})",
                catalog_mfu=gpu["cnn_train_mfu"],
                scale=cal["scale"],
                measured_on=cal["gpu"],
                measured_images_per_s=cal["measured_images_per_s"],
                measured_batch=cal["setting"]["batch"],
            )
    return mfus | measured_gpu_mfu(profile_train, bench_train, catalog), cal


def make_plan(
    profile_train: dict,
    profile_infer: dict,
    train_images: int,
    epochs: float,
    deadline_h: float,
    serve_fps: float,
    p99_ms: float,
    hardware: list[str] | None = None,
    catalog: dict | None = None,
    bench_train: dict | None = None,
    device_checks: list[dict] | None = None,
) -> dict:
    """The plan for both workloads. ``device_checks``: ``device-check`` results (``plan_from_dir`` passes the
    ones shipped in ``infra/measured``); a training rate measured there for this model calibrates every GPU's
    MFU."""
    catalog = catalog or load_catalog()
    gpus = list(select(catalog, "gpu", hardware)) if hardware else None
    train_gpu = gpus[0] if gpus else "h200_sxm"
    server = "kr6288v2" if catalog["gpu"][train_gpu]["form"] == "sxm" else "kr4268v2"
    checks = device_checks or []
    mfus, calibration = gpu_mfus(profile_train, bench_train, checks, catalog)
    # a calibrated rate holds at the batch it was measured at (nano on the H200: 1,103 images/s at batch 64,
    # 3,765 at 256, 5,782 at 1024, eager): plan at that batch
    batch = calibration["setting"]["batch"] if calibration else 64
    args = dict(
        train_images=train_images, epochs=epochs, deadline_h=deadline_h, serve_fps=serve_fps, p99_ms=p99_ms
    )
    training = training_plan(
        profile_train,
        catalog,
        train_images,
        epochs,
        deadline_h,
        train_gpu,
        server,
        per_gpu_batch=batch,
        mfu=mfus.get(train_gpu),
    )
    training["alternatives"] = {}
    for key, gpu in catalog["gpu"].items():
        alt_server = "kr6288v2" if gpu["form"] == "sxm" else "kr4268v2"
        t = training_plan(
            profile_train,
            catalog,
            train_images,
            epochs,
            deadline_h,
            key,
            alt_server,
            per_gpu_batch=batch,
            mfu=mfus.get(key),
        )
        training["alternatives"][key] = {
            k: t[k] for k in ("gpus", "nodes", "hours_predicted", "per_gpu_images_per_s", "per_gpu_bound",
                              "allreduce_ms_per_step", "interconnect_bound", "mfu")
        }  # fmt: skip
    inference = inference_plan(profile_infer, catalog, serve_fps, p99_ms, gpus=gpus)
    return {
        "inputs": {**args, "hardware": hardware},
        "training": training,
        "inference": inference,
        "seed_servers": seed_servers(profile_train, profile_infer, catalog, args, mfus, batch),
        "gpu_calibration": calibration,
        "validation": validate(profile_train, profile_infer),
        "validation_gpu": gpu_checks(checks, calibration, profile_infer, catalog),
        "this_machine": profile_train.get("machine"),
    }


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def plan_from_dir(from_dir: str | Path, **kw) -> dict:
    """``make_plan`` on ``profile_train.json`` / ``profile_infer.json`` (and ``bench_train.json``) in a folder."""
    from_dir = Path(from_dir)
    pt, pi = _read(from_dir / "profile_train.json"), _read(from_dir / "profile_infer.json")
    missing = [n for n, v in (("profile_train.json", pt), ("profile_infer.json", pi)) if v is None]
    if missing:
        raise FileNotFoundError(
            f"{from_dir} has no {' or '.join(missing)}; run `crosswalk profile train --json "
            f"{from_dir}/profile_train.json` and `crosswalk profile infer --json {from_dir}/profile_infer.json` first"
        )
    own = _read(from_dir / "device_check.json")  # a device-check run of one's own joins the shipped ones
    checks = shipped_device_checks() + ([own] if own else [])
    return make_plan(pt, pi, bench_train=_read(from_dir / "bench_train.json"), device_checks=checks, **kw)


def _inputs(inputs: dict) -> str:
    flat = {k: v for k, v in inputs.items() if not isinstance(v, dict | list)}
    return ", ".join(f"{k}={v}" for k, v in flat.items())


def _lines(derivation: dict, indent: str = "    ") -> list[str]:
    out = []
    for name, d in derivation.items():
        value = d["value"]
        if isinstance(value, tuple | list):
            value = "(" + ", ".join(f"{v:.4g}" for v in value) + ")"
        out.append(f"{indent}{name} = {value}  <- {d['formula']}")
        if d["inputs"]:
            out.append(f"{indent}    [{_inputs(d['inputs'])}]")
    return out


def format_plan(plan: dict) -> str:
    t, i, v = plan["training"], plan["inference"], plan["validation"]
    lines = [
        f"TRAINING: {t['gpus']} x {t['gpu']} in {t['nodes']} x {t['server']} -> {t['images_per_s']:.0f} images/s, "
        f"{t['hours_predicted']:.2f} h ({'meets' if t['feasible'] else 'MISSES'} the deadline); "
        f"{t['storage_tb']:.3f} TB at {t['read_gb_per_s']:.2f} GB/s; all-reduce {t['allreduce_ms_per_step']:.3f} ms "
        f"vs compute {t['compute_ms_per_step']:.2f} ms per step: "
        f"{'INTERCONNECT-BOUND' if t['interconnect_bound'] else 'not interconnect-bound'}",
        *_lines(t["derivation"]),
    ]
    if i["device"]:
        c = i["candidates"][i["device"]]
        lines.append(
            f"INFERENCE: {i['replicas']} x {i['device']} (batch {c['batch']}, {c['servers']} server(s)) for "
            f"{i['serve_fps']:g} frames/s: p99 {i['p99_ms_predicted']:.2f} ms <= {i['p99_bound_ms']:g} ms, "
            f"{i['power_w']:.0f} W"
        )
        lines += _lines(i["derivation"]) + _lines(c["derivation"])
    else:
        lines.append(
            f"INFERENCE: no device meets p99 <= {i['p99_bound_ms']:g} ms at {i['serve_fps']:g} frames/s"
        )
    lines.append("  devices:")
    for key, c in i["candidates"].items():
        power = "n/a" if c["power_w"] is None else f"{c['power_w']:.0f} W"
        lines.append(
            f"    {key:14s} replicas {c['replicas']:6d}  batch {c['batch']:3d}  p99 {c['p99_ms']:9.2f} ms  "
            f"{power:>9s}  {'ok' if c['feasible'] else 'misses p99'}"
        )
    lines.append("SEED SERVERS:")
    for key, s in plan["seed_servers"].items():
        for gpu, row in s["training"].items():
            lines.append(f"    {key} with {gpu}: training {row['nodes']} node(s) ({row['gpus']} GPUs), "
                         f"{row['hours_predicted']:.2f} h{'' if row['fits'] else ' (does not fit)'}")  # fmt: skip
        for gpu, row in s["inference"].items():
            lines.append(f"    {key} with {gpu}: inference {row['servers']} server(s), {row['replicas']} GPUs, "
                         f"p99 {row['p99_ms']:.2f} ms{'' if row['fits'] else ' (misses p99)'}")  # fmt: skip
    cal = plan.get("gpu_calibration")
    if cal:
        lines.append(
            f"GPU CALIBRATION: this model trains at {cal['measured_images_per_s']:.0f} images/s (compute only, "
            f"batch {cal['setting']['batch']}) on {cal['device']} ({cal['measured']}): MFU {cal['measured_mfu']:.4f}"
            f" against the catalog's {cal['catalog_mfu']}, which predicted {cal['catalog_predicted_images_per_s']:.0f}"
            f" images/s ({cal['catalog_error_pct']:.0f}% off); every GPU's catalog MFU is scaled by {cal['scale']:.4f}"
        )
    for c in plan.get("validation_gpu", []):
        lines.append(
            f"    measured on a GPU: {c['name']}: predicted {c['predicted']:.4g} {c['unit']}, measured "
            f"{c['measured']:.4g}: {c['error_pct']:.0f}% off  [{c['calibrated_on']}]"
        )
    lines.append(f"VALIDATION on this machine (max error {v['max_error_pct']}%):")
    for c in v["checks"]:
        lines.append(
            f"    {c['name']}: predicted {c['predicted']:.4g} {c['unit']}, measured {c['measured']:.4g}: "
            f"{c['error_pct']:.1f}%  [{c['calibrated_on']}]"
        )
    return "\n".join(lines)
