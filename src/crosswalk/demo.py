"""``make demo``: the main job on the embedded default data, end to end, printing where everything went.

Synthesize a driving dataset, verify it, print its statistics, draw a montage, benchmark the loader, train
the nano detector for a few minutes, evaluate it beside the reference model, export it, serve it and benchmark
it on MLPerf LoadGen, test the server under overload and a killed replica, drive the pedestrian-crossing
loop, profile both workloads, plan the infrastructure, and write the report.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from crosswalk.bench.data import DataBenchConfig, bench_data
from crosswalk.bench.infer import InferBenchConfig, bench_infer
from crosswalk.bench.train import TrainBenchConfig, bench_train
from crosswalk.data.inspect import inspect_dataset
from crosswalk.data.synth import SynthConfig, synthesize
from crosswalk.data.verify import verify_dataset
from crosswalk.drive.demo import demo_drive
from crosswalk.infer.export import export_package
from crosswalk.infra.demo import run_infra_demo
from crosswalk.serve.demo import run_serve_demo
from crosswalk.train.config import resolve_config
from crosswalk.train.loop import train
from crosswalk.train.runs import evaluate_run

QUICK_STEPS = 150
REFERENCE = Path(__file__).resolve().parents[2] / "models" / "reference-nano"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run_demo(out: Path, frames: int = 512) -> int:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data" / "train"
    if data.exists():
        shutil.rmtree(data)  # the demo always starts from the seed, so its hashes can be compared
    t = _step(f"synthesize {frames} driving frames (seed 1)")
    result = synthesize(data, SynthConfig(frames=frames, seed=1))
    print(
        f"{result.frames_per_s:.1f} frames/s ({result.frames_per_s_per_core:.1f} per core) in {time.perf_counter() - t:.0f} s"
    )

    _step("verify every hash, image and annotation")
    report = verify_dataset(data)
    print(f"{report.samples} samples in {report.shards} shard(s): {'OK' if report.ok else report.problems}")
    if not report.ok:
        return 1

    _step("dataset statistics and montage")
    montage = out / "montage.png"
    stats = inspect_dataset(data, montage=montage)
    (out / "data_stats.json").write_text(json.dumps(stats, indent=2) + "\n")

    _step("loader benchmark (loader vs JPEG decode limit)")
    bench = bench_data(data, DataBenchConfig(seconds=0.5, rounds=8, synth_frames=32))
    (out / "bench_data.json").write_text(json.dumps(bench, indent=2) + "\n")

    val = out / "data" / "val"
    if val.exists():
        shutil.rmtree(val)
    _step("validation set from a seed never used for training (9001)")
    synthesize(val, SynthConfig(frames=128, seed=9001))

    _step(f"quick training run: nano, {QUICK_STEPS} steps (the reference model's recipe is configs/)")
    run = out / "runs" / "quick"
    if run.exists():
        shutil.rmtree(run)
    cfg = resolve_config(
        None,
        [
            f"steps={QUICK_STEPS}",
            "batch_size=16",
            "warmup_steps=20",
            "checkpoint_every=100",
            "log_every=10",
            "lr=0.004",
        ],
    )
    train(cfg, data, run)

    _step("training throughput: the real loader against compute alone (bench train)")
    train_bench = bench_train(data, TrainBenchConfig(batch_size=16, steps=3, warmup=2, repeats=1))
    (out / "bench_train.json").write_text(json.dumps(train_bench, indent=2) + "\n")

    _step("evaluate the quick run: COCO AP, pedestrian MR-2, plots")
    plots = out / "eval_plots"
    quick = evaluate_run(run, val, json_out=out / "eval_quick.json", plots=plots)
    reference = REFERENCE / "eval.json"
    if reference.exists() and quick is not None:
        ref = json.loads(reference.read_text())
        print("\n                    quick run   reference model (models/reference-nano, its own val set)")
        for name, a, b in [
            ("mAP50", quick["map50"], ref["map50"]),
            (
                "pedestrian AP50",
                quick["per_class"]["pedestrian"]["ap50"],
                ref["per_class"]["pedestrian"]["ap50"],
            ),
            ("MR-2 reasonable", quick["pedestrian_mr"]["reasonable"], ref["pedestrian_mr"]["reasonable"]),
        ]:
            print(f"  {name:17s} {_fmt(a):>9s}   {_fmt(b):>9s}")

    _step("export the quick model: ONNX + safetensors + config.json, parity-checked against PyTorch")
    package = out / "models" / "quick" / "1"
    if package.exists():
        shutil.rmtree(package)
    parity = export_package(run, package, parity_count=4, name="quick")["parity"]
    print(
        f"{package}: scores max |diff| {parity['score_max_abs_diff']:.1e}, boxes {parity['box_max_abs_diff_px']:.1e} px, "
        f"identical detections: {parity['identical_detections']}"
    )

    _step("serve it and benchmark on MLPerf LoadGen: SingleStream, Server, Offline; in process and over HTTP")
    bench_infer(out / "bench_infer.json", InferBenchConfig.quick(), model=package)

    _step("the server under stress: overhead, 3x overload, a replica killed with SIGKILL")
    serving = run_serve_demo(out, model=package)
    o = serving["overload"]
    print(
        f"overhead {serving['overhead_ms']} ms; 3x overload: {o['accepted']} accepted (p99 {o['accepted_p99_ms']} ms, "
        f"target {o['latency_target_ms']:.0f} ms), {o['shed_503']} shed with 503 in {o['shed_p50_ms']} ms (p50); "
        f"killed replica replaced in {serving['replica_replaced_s']} s"
    )

    # The loop is about latency turned into metres, so it drives with the reference model: 150 quick steps
    # do not yet see a pedestrian far enough ahead to brake for it.
    _step(
        "the vehicle loop: a pedestrian steps out, by day and by night, at 30 and 50 km/h (reference model)"
    )
    drive_files = demo_drive(REFERENCE, out)

    report = run_infra_demo(out, data=data, model=package, quick=True)

    print("\n== outputs")
    for path, what in [
        (data, "sharded dataset (manifest.json, index.npy, objects.npy, shard-*.tar)"),
        (montage, "montage covering every lighting, weather and object kind"),
        (out / "data_stats.json", "dataset statistics"),
        (out / "bench_data.json", "loader benchmark"),
        (run, "quick training run (config.json, metrics.jsonl, tb/, checkpoints/, weights/)"),
        (out / "bench_train.json", "training benchmark (loader vs compute only)"),
        (out / "eval_quick.json", "its evaluation"),
        (plots, "PR curves, miss rate vs FPPI, per-condition bars"),
        (package, "the exported model package (Triton model-repository layout)"),
        (out / "bench_infer.json", "LoadGen benchmark (+ bench_infer_latency.png, loadgen/ logs)"),
        (out / "serve.json", "server overhead, overload and replica-replacement figures"),
        *((p, "vehicle loop") for p in drive_files),
        (out / "profile_train.json", "training profile"),
        (out / "profile_infer.json", "inference profile"),
        (out / "plan.json", "infrastructure plan with derivations"),
        (report, "the report: both workloads side by side (open it in a browser)"),
    ]:
        print(f"  {path}  {what}")
    return 0
