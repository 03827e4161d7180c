"""``make demo``: the main job on the embedded default data, end to end, printing where everything went.

Today: synthesize a driving dataset, verify it, print its statistics, draw a montage, benchmark the loader.
Each later stage (training, serving, the vehicle loop, the plan) adds its step here.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from crosswalk.bench.data import DataBenchConfig, bench_data
from crosswalk.data.inspect import inspect_dataset
from crosswalk.data.synth import SynthConfig, synthesize
from crosswalk.data.verify import verify_dataset


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
    bench = bench_data(data, DataBenchConfig(seconds=2.0, repeats=2, synth_frames=32))
    (out / "bench_data.json").write_text(json.dumps(bench, indent=2) + "\n")

    print("\n== outputs")
    for path, what in [
        (data, "sharded dataset (manifest.json, index.npy, objects.npy, shard-*.tar)"),
        (montage, "montage covering every lighting, weather and object kind"),
        (out / "data_stats.json", "dataset statistics"),
        (out / "bench_data.json", "loader benchmark"),
    ]:
        print(f"  {path}  {what}")
    return 0
