"""``crosswalk plan``: read the profiles (and benchmarks) from one folder, plan both workloads, print how.

``make_plan`` is pure (dicts in, the ``plan.json`` dict out); ``plan_from_dir`` reads the JSON files the
profilers and benchmarks wrote; ``format_plan`` is the terminal view, every figure with its formula.
"""

from __future__ import annotations

import json
from pathlib import Path

from crosswalk.infra.catalog import load_catalog, select
from crosswalk.infra.planner import inference_plan, seed_servers, training_plan
from crosswalk.infra.validate import validate

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


def measured_gpu_mfu(profile_train: dict, bench_train: dict | None, catalog: dict) -> dict[str, float]:
    """MFU measured on a GPU, by catalog key: from the training profile or ``bench train`` when either ran on
    a GPU the catalog knows (the planner then uses it instead of the sourced assumption)."""
    out = {}
    for source in (bench_train or {}, profile_train):
        key = catalog_key_for_device(source.get("device"))
        if key is None:
            continue
        peak = catalog["gpu"][key]["bf16_dense_tflops"] * 1e3
        achieved = source.get("achieved_gflops_per_s")
        if achieved:
            out[key] = achieved / peak
    return out


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
) -> dict:
    catalog = catalog or load_catalog()
    gpus = list(select(catalog, "gpu", hardware)) if hardware else None
    train_gpu = gpus[0] if gpus else "h200_sxm"
    server = "kr6288v2" if catalog["gpu"][train_gpu]["form"] == "sxm" else "kr4268v2"
    mfus = measured_gpu_mfu(profile_train, bench_train, catalog)
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
        measured_mfu=mfus.get(train_gpu),
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
            measured_mfu=mfus.get(key),
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
        "seed_servers": seed_servers(profile_train, profile_infer, catalog, args),
        "validation": validate(profile_train, profile_infer),
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
    return make_plan(pt, pi, bench_train=_read(from_dir / "bench_train.json"), **kw)


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
    lines.append(f"VALIDATION on this machine (max error {v['max_error_pct']}%):")
    for c in v["checks"]:
        lines.append(
            f"    {c['name']}: predicted {c['predicted']:.4g} {c['unit']}, measured {c['measured']:.4g}: "
            f"{c['error_pct']:.1f}%  [{c['calibrated_on']}]"
        )
    return "\n".join(lines)
