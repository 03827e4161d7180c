"""``crosswalk bench train``: is training fed? The real loader against the same step on preloaded tensors.

``train_images_per_s`` runs the trainer's own step (crosswalk.train.loop.forward_backward + AdamW) on
batches from the real loader; ``compute_only_images_per_s`` runs the identical step on one batch held in
memory. ``ratio`` = loader / compute-only (1.0 = the data path costs nothing). Both are medians over repeats
measured in the same run, alternating, after warm-up (timm's benchmark recipe). ``mfu`` is reported where the
device's dense peak is known (crosswalk's hardware catalog, CUDA devices); on a CPU it is null.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from crosswalk.data.loader import LoaderConfig, ShardLoader, batch_pixels
from crosswalk.model import build_detector, model_info
from crosswalk.train.config import TrainConfig, bf16_autocast
from crosswalk.train.loop import forward_backward, model_config_for, targets_to

# Dense BF16 tensor peaks (no sparsity), TFLOP/s, from the vendors' datasheets (see infra.md §1).
DENSE_BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


@dataclass(frozen=True)
class TrainBenchConfig:
    preset: str = "nano"
    batch_size: int = 32
    workers: int = 2
    steps: int = 10  # measured steps per repeat
    warmup: int = 3
    repeats: int = 3
    amp: str = "auto"
    threads: int = 0
    compile: bool = False
    decode: str = "workers"  # or "device": JPEGs decoded on the training device (LoaderConfig.decode)


def _peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DENSE_BF16_PEAK_TFLOPS.items() if k in name), None)


def hold(batch: dict, device: torch.device) -> dict:
    """A loader batch kept on ``device`` for compute-only steps: pixels decoded and targets moved once, into a
    private copy (the loader reuses its slots)."""
    return {k: v for k, v in batch.items() if k != "jpegs"} | {
        "images": batch_pixels(batch, device, copy=True),
        "targets": targets_to(batch["targets"], device),
    }


def bench_train(
    data_dir: str | Path, cfg: TrainBenchConfig = TrainBenchConfig(), progress: bool = True
) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(cfg.threads or max(1, os.cpu_count() or 1))
    say = print if progress else (lambda *a, **k: None)
    from crosswalk.data.shards import ShardReader

    first = ShardReader(data_dir).annotation(0)  # train at the data's own size
    size = (first["width"], first["height"])
    loader = ShardLoader(
        data_dir,
        LoaderConfig(batch_size=cfg.batch_size, workers=cfg.workers, image_size=size, decode=cfg.decode),
    )
    tcfg = TrainConfig(preset=cfg.preset, batch_size=cfg.batch_size, image_size=loader.cfg.image_size)
    mcfg = model_config_for(tcfg, loader.categories)
    model = build_detector(mcfg).to(device).to(memory_format=torch.channels_last).train()
    forward = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = bf16_autocast(cfg.amp, device)
    batches = loader.forever()
    held = hold(next(batches), device)

    def step(batch: dict) -> None:
        forward_backward(forward, batch, mcfg, device, amp)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def run(real: bool) -> tuple[float, float]:
        for _ in range(cfg.warmup):
            step(next(batches) if real else held)
        wait, start = 0.0, time.perf_counter()
        for _ in range(cfg.steps):
            t0 = time.perf_counter()
            batch = next(batches) if real else held
            wait += time.perf_counter() - t0
            step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        return cfg.steps * cfg.batch_size / elapsed, wait / elapsed

    real_rates, compute_rates, waits = [], [], []
    for r in range(cfg.repeats):
        rate, wait = run(real=True)
        real_rates.append(rate)
        waits.append(wait)
        compute_rates.append(run(real=False)[0])
        say(
            f"repeat {r + 1}/{cfg.repeats}: loader {real_rates[-1]:.1f} img/s, compute only "
            f"{compute_rates[-1]:.1f} img/s, data wait {100 * wait:.1f}%"
        )
    loader.close()
    info = model_info(mcfg)
    train_rate, compute_rate = statistics.median(real_rates), statistics.median(compute_rates)
    peak = _peak_tflops(device)
    gflops = info["gflops_forward_backward"]
    result = {
        "train_images_per_s": round(train_rate, 2),
        "compute_only_images_per_s": round(compute_rate, 2),
        "ratio": round(train_rate / compute_rate, 3),
        "data_wait_fraction": round(statistics.median(waits), 4),
        "params": info["params"],
        "gflops_per_image": round(gflops, 4),
        "gflops_forward_per_image": round(info["gflops_forward"], 4),
        "achieved_gflops_per_s": round(train_rate * gflops, 2),
        "mfu": None if peak is None else round(train_rate * gflops / (peak * 1e3), 5),
        "mfu_compute_only": None if peak is None else round(compute_rate * gflops / (peak * 1e3), 5),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp_bf16": amp,
        "threads": torch.get_num_threads(),
        "repeats": {"train": real_rates, "compute_only": compute_rates, "data_wait": waits},
        "config": asdict(cfg),
    }
    say(f"train {train_rate:.1f} img/s vs compute only {compute_rate:.1f} img/s: ratio {result['ratio']:.3f}")
    return result
