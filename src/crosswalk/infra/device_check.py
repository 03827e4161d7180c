"""``crosswalk device-check``: the GPU figures the issues ask for, from one short run on a lent GPU machine.

One command, about 6 minutes on an H200 with 16 cores (``--budget-s``, default 330), that installs nothing
and writes ``device_check.json`` (and prints each figure as it goes), in this order:

- ``data``: synthetic shards made on the machine's cores;
- ``decode``: JPEG decode images/s, the CPU limit (``bench data``'s tight loop in one process per core)
  against one batched ``torchvision.io.decode_jpeg(device="cuda")`` call per 256 images (nvJPEG);
- ``train``: eager ``bench train`` rows for ``nano`` and ``small`` at batch 256, bf16 and channels_last, with
  the loader's CPU decode (one worker per core, as /dev/shm allows) and with GPU decode; each row has the
  real-loader and compute-only images/s and the MFU against the dense bf16 peak;
- ``plan``: the planner's per-GPU training images/s for ``nano`` on the catalog's H200 (the catalog MFU, as
  ``crosswalk plan`` uses it) against the best measured ``nano`` compute-only rate;
- ``step``: where a ``nano`` step's time goes: compute-only images/s at batch 64, 256 and 1024, and a
  ``torch.profiler`` count of kernels per step and their GPU time against the step's wall time;
- ``infer``: the serving network (bf16) at batch 1 and 64, eager and replayed from a CUDA graph: p50/p90
  latency and images/s, plus single-image JPEG decode on the GPU and on the CPU;
- ``train`` again: the ``torch.compile`` rows (CPU decode), last because a cold compile can take minutes,
  then ``plan`` again with them.

A time budget skips the training rows that would run past it; a section that fails records its error and the
others still run, so one run on a lent machine always brings figures back. On a machine without CUDA the
same code runs on the CPU with ``--quick`` (what the test does); the CUDA-only parts then record why they
were skipped.

Run it on the device machine from a checkout, with simplejpeg carried as a wheel (DEVELOPERS.md)::

    PYTHONPATH=src python3 -m crosswalk device-check --out $OUT
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

COMPILE_RESERVE_S = 120.0  # budget a compiled training row needs left before it starts


@dataclass(frozen=True)
class DeviceCheckConfig:
    frames: int = 2048
    size: tuple[int, int] = (512, 288)
    batch_size: int = 256
    steps: int = 100  # measured per repeat of each bench train row: a few hundred steps per preset
    warmup: int = 10
    repeats: int = 2
    decode_seconds: float = 3.0
    latency_calls: int = 50
    offline_batch: int = 64
    presets: tuple[str, ...] = ("nano", "small")
    compile: bool = True  # the compiled rows (CPU decode only: each compile costs tens of seconds)
    budget_s: float = 330.0

    @classmethod
    def quick(cls, **overrides) -> DeviceCheckConfig:
        """A CPU smoke run of every section: a few small frames, a couple of steps."""
        values = dict(frames=16, size=(128, 96), batch_size=4, steps=1, warmup=1, repeats=1,
                      decode_seconds=0.3, latency_calls=3, offline_batch=4, presets=("nano",),
                      compile=False)  # fmt: skip
        return cls(**{**values, **overrides})


def _environment(device: torch.device) -> dict:
    import torchvision

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu_count": os.cpu_count(),
        "device": str(device),
    }
    if Path("/dev/shm").is_dir():  # the loader's batch slots live there: 16 workers x 4 x 256 x 442 KB = 7 GB
        env["dev_shm_free_gb"] = round(shutil.disk_usage("/dev/shm").free / 1e9, 1)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / 1e9, 1),
            "multiprocessors": props.multi_processor_count,
            "capability": list(torch.cuda.get_device_capability(device)),
            "cuda": torch.version.cuda,
        }
    return env


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_calls(fn: Callable[[], object], calls: int, device: torch.device) -> list[float]:
    """Milliseconds of each of ``calls`` calls, each ended by a device synchronisation."""
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        _synchronize(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _latency_row(ms: list[float], batch: int) -> dict:
    p50 = statistics.median(ms)
    return {
        "batch": batch,
        "p50_ms": round(p50, 4),
        "p90_ms": round(float(np.percentile(ms, 90)), 4),
        "images_per_s": round(batch / p50 * 1e3, 1),
        "calls": len(ms),
    }


def check_data(out: Path, cfg: DeviceCheckConfig) -> dict:
    from crosswalk.data.synth import SynthConfig, synthesize

    workers = os.cpu_count() or 1
    synth = SynthConfig(frames=cfg.frames, width=cfg.size[0], height=cfg.size[1], workers=workers)
    result = synthesize(out, synth, progress=False)
    return {
        "frames": cfg.frames,
        "workers": workers,
        "frames_per_s": round(result.frames_per_s, 1),
    }


def check_decode(data: Path, cfg: DeviceCheckConfig, device: torch.device) -> dict:
    from crosswalk.bench.data import decode_limit
    from crosswalk.data.loader import decode_on_device
    from crosswalk.data.shards import ShardReader

    reader = ShardReader(data)
    blobs = [reader.image_bytes(i) for i in range(min(256, len(reader)))]
    workers = os.cpu_count() or 1
    result = {
        "cpu_processes": workers,
        "cpu_images_per_s": round(decode_limit(blobs, workers, cfg.decode_seconds, data), 1),
        "jpeg_bytes_mean": round(float(np.mean([len(b) for b in blobs])), 1),
    }
    jpegs = [np.frombuffer(bytearray(b), np.uint8) for b in blobs]
    try:  # nvJPEG may be unavailable (no hardware engine exposed): keep the CPU figure whatever happens
        decode_on_device(jpegs, cfg.size, device)  # warm-up: nvJPEG handles and buffers
        _synchronize(device)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < cfg.decode_seconds:
            decode_on_device(jpegs, cfg.size, device)
            _synchronize(device)
            n += len(jpegs)
    except Exception as e:
        return result | {"device_error": f"{type(e).__name__}: {e}"}
    return result | {
        "device_images_per_s": round(n / (time.perf_counter() - start), 1),
        "device_batch": len(jpegs),
    }


def train_rows(cfg: DeviceCheckConfig, compiled: bool = False) -> list[dict]:
    """The bench train settings: the eager rows (both decodes), or the compiled ones (CPU decode only). The
    compiled rows run last, after serving, each only with ``COMPILE_RESERVE_S`` of budget left: a cold
    inductor compile of forward and backward can take minutes."""
    if compiled:
        return (
            [{"preset": p, "compile": True, "decode": "workers"} for p in cfg.presets] if cfg.compile else []
        )
    return [{"preset": p, "compile": False, "decode": d} for p in cfg.presets for d in ("workers", "device")]


def loader_workers(cfg: DeviceCheckConfig, decode: str) -> tuple[int, str]:
    """Loader processes for a row: one per core, fewer when their batch slots would not fit in /dev/shm (the
    BatchRing holds ``prefetch_batches`` batches per worker there plus ``HELD``; containers often give /dev/shm
    64 MB)."""
    from crosswalk.data.loader import HELD, LoaderConfig

    cores = os.cpu_count() or 1
    if decode == "device" or not Path("/dev/shm").is_dir():
        return cores, ""
    w, h = cfg.size
    batch = cfg.batch_size * w * h * 3
    per_worker = LoaderConfig().prefetch_batches * batch
    fit = max(0, int((0.8 * shutil.disk_usage("/dev/shm").free - HELD * batch) // per_worker))
    if fit < cores:
        return fit, f"/dev/shm fits {fit} workers' batch slots ({per_worker / 1e9:.2f} GB each)"
    return cores, ""


def check_train(
    data: Path, cfg: DeviceCheckConfig, deadline: float, say, results: list[dict], compiled: bool, on_row
) -> list[dict]:
    """Appends this pass's rows to ``results`` (calling ``on_row`` after each, to save) and returns it."""
    from crosswalk.bench.train import TrainBenchConfig

    for row in train_rows(cfg, compiled):
        workers, why = loader_workers(cfg, row["decode"])
        if time.perf_counter() > deadline - (COMPILE_RESERVE_S if compiled else 0.0):
            results.append(row | {"skipped": "time budget"})
        elif workers < 1:
            results.append(row | {"skipped": why})
        else:
            bench = TrainBenchConfig(
                preset=row["preset"],
                batch_size=cfg.batch_size,
                workers=workers,
                steps=cfg.steps,
                warmup=cfg.warmup,
                repeats=cfg.repeats,
                compile=row["compile"],
                decode=row["decode"],
                threads=min(4, os.cpu_count() or 1),  # the main process launches kernels; the cores decode
            )
            results.append(row | _bench_row(data, bench, say) | ({"workers_note": why} if why else {}))
        on_row(results)
    return results


def _bench_row(data: Path, bench, say) -> dict:
    from crosswalk.bench.train import bench_train

    t0 = time.perf_counter()
    try:
        r = bench_train(data, bench, progress=False)
    except Exception as e:  # one failing setting must not lose the others' figures
        say(f"train {bench.preset} compile={bench.compile} decode={bench.decode}: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}"}
    keep = ("train_images_per_s", "compute_only_images_per_s", "ratio", "data_wait_fraction", "mfu",
            "params", "gflops_per_image", "device", "amp_bf16")  # fmt: skip
    out = {k: r[k] for k in keep} | {"workers": bench.workers, "seconds": round(time.perf_counter() - t0, 1)}
    if bench.decode == "device":
        out["data_wait_note"] = "the GPU decode runs inside the step, so data_wait_fraction leaves it out"
    say(
        f"train {bench.preset} compile={bench.compile} decode={bench.decode}: "
        f"{r['train_images_per_s']:.0f} img/s (compute only {r['compute_only_images_per_s']:.0f}), MFU {r['mfu']}"
    )
    return out


def _held_step(data: Path, preset: str, batch: int, cfg: DeviceCheckConfig, device: torch.device):
    """One eager training step of ``preset`` on a batch held on the device (compute only, as bench train)."""
    from crosswalk.bench.train import hold
    from crosswalk.data.loader import LoaderConfig, ShardLoader
    from crosswalk.model import build_detector
    from crosswalk.train.loop import forward_backward

    loader = ShardLoader(data, LoaderConfig(batch_size=batch, workers=0, image_size=cfg.size))
    held = hold(next(loader.forever()), device)
    loader.close()
    mcfg = _model_config(preset, cfg.size)
    model = build_detector(mcfg).to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        forward_backward(model, held, mcfg, device, device.type == "cuda")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def check_step(data: Path, cfg: DeviceCheckConfig, device: torch.device) -> dict:
    """Where a ``nano`` training step's time goes. Compute-only images/s at a quarter, one and four times the
    batch: a per-step cost that does not grow with the batch (kernel launches, host syncs) shows as a rate that
    grows with it. Then ``torch.profiler`` over a few steps at the batch: kernels per step and their summed GPU
    time against the step's wall time (the rest is the GPU waiting on the host)."""
    from torch.profiler import ProfilerActivity, profile

    quarter, four = cfg.batch_size // 4, 4 * cfg.batch_size
    batches = [b for b in (quarter, cfg.batch_size, four) if b == cfg.batch_size or 0 < b <= cfg.frames]
    out: dict = {"preset": "nano", "compute_only_images_per_s": {}}
    for b in batches:
        step = _held_step(data, "nano", b, cfg, device)
        for _ in range(min(3, cfg.warmup)):
            step()
        ms = _timed_calls(step, max(2, cfg.steps // 5), device)
        out["compute_only_images_per_s"][b] = round(b / statistics.median(ms) * 1e3, 1)
        if b == cfg.batch_size:
            profiled = step  # warm, and synchronised by the timing
    n = 5 if cfg.steps > 1 else 1
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(n):
            profiled()
        _synchronize(device)
    out["profiled_wall_ms_per_step"] = round((time.perf_counter() - t0) / n * 1e3, 2)  # profiler overhead in
    if device.type == "cuda":
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
        out["kernels_per_step"] = len(kernels) // n
        out["gpu_kernel_ms_per_step"] = round(sum(e.device_time for e in kernels) / n / 1e3, 2)
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    out["top_host_ms_per_step"] = {e.key[:60]: round(e.self_cpu_time_total / n / 1e3, 2) for e in top}
    return out


def check_plan(cfg: DeviceCheckConfig, train: list[dict]) -> dict:
    """The planner's per-GPU H200 rate for ``nano`` against the best measured ``nano`` row: against its compute-only
    rate (the GPU's own rate, which is what the planner's figure is; it sizes decode cores and storage apart),
    and, for the record, against the rate with the real loader."""
    from crosswalk.infra.catalog import load_catalog
    from crosswalk.infra.planner import per_gpu_training_rate
    from crosswalk.infra.profile_train import activation_bytes_per_image
    from crosswalk.model import build_detector, model_info

    catalog = load_catalog()
    gpu = catalog["gpu"]["h200_sxm"]
    mcfg = _model_config("nano", cfg.size)
    model = build_detector(mcfg).train()
    w, h = cfg.size
    act = activation_bytes_per_image(model, lambda b: torch.zeros(b, 3, h, w))
    profile = {
        "gflops_forward_backward_per_image": model_info(mcfg)["gflops_forward_backward"],
        "activation_bytes_per_image": act,
        "activation_dtype": "float32",
    }
    predicted = per_gpu_training_rate(profile, gpu, gpu["cnn_train_mfu"], catalog["assumptions"])
    measured = [r for r in train if r["preset"] == "nano" and "compute_only_images_per_s" in r]
    result = {"gpu": gpu["name"], "predicted_images_per_s": predicted["value"], "derivation": predicted}
    if measured:
        best = max(measured, key=lambda r: r["compute_only_images_per_s"])
        value = predicted["value"]

        def error(x: float) -> float:
            return round(100 * abs(value - x) / x, 1)

        result |= {
            "measured_images_per_s": best["compute_only_images_per_s"],
            "measured_setting": {k: best[k] for k in ("compile", "decode")} | {"compute_only": True},
            "error_pct": error(best["compute_only_images_per_s"]),
            "measured_with_loader_images_per_s": best["train_images_per_s"],
            "error_with_loader_pct": error(best["train_images_per_s"]),
        }
    return result


def _model_config(preset: str, size: tuple[int, int]):
    """The detector the trainer builds for ``preset`` on data of ``size`` with the synthetic categories."""
    from crosswalk.data.schema import DEFAULT_CATEGORIES
    from crosswalk.train.config import TrainConfig
    from crosswalk.train.loop import model_config_for

    return model_config_for(TrainConfig(preset=preset, image_size=size), DEFAULT_CATEGORIES)


def _serving_module(preset: str, size: tuple[int, int], device: torch.device) -> torch.nn.Module:
    from crosswalk.infer.export import ServingModule
    from crosswalk.model import build_detector

    torch.manual_seed(0)  # random weights: latency and throughput do not depend on them
    net = build_detector(_model_config(preset, size)).eval().to(device).to(memory_format=torch.channels_last)
    return ServingModule(net).eval()


def _graphed(module: torch.nn.Module, example: torch.Tensor, amp: bool) -> Callable[[torch.Tensor], object]:
    """``module`` captured in a CUDA graph for ``example``'s shape: one launch per call."""
    static = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    # autocast's cast cache would hold tensors made during capture: off, as the CUDA graphs notes ask
    autocast = partial(torch.autocast, "cuda", dtype=torch.bfloat16, enabled=amp, cache_enabled=False)
    with torch.cuda.stream(stream), autocast():
        for _ in range(3):  # warm up on a side stream, as torch.cuda.graphs asks
            module(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), autocast():
        outputs = module(static)

    def run(x: torch.Tensor) -> object:
        static.copy_(x)
        graph.replay()
        return outputs

    return run


def check_infer(data: Path, cfg: DeviceCheckConfig, device: torch.device, say, result: dict) -> dict:
    """Fills ``result`` as it goes, so that a later failure keeps what was measured."""
    import simplejpeg

    from crosswalk.data.loader import decode_on_device
    from crosswalk.data.shards import ShardReader
    from crosswalk.model import model_info

    cuda = device.type == "cuda"
    w, h = cfg.size
    jpeg = ShardReader(data).image_bytes(0)
    one = [np.frombuffer(bytearray(jpeg), np.uint8)]
    result["amp_bf16"] = cuda
    try:  # as in check_decode: without nvJPEG, still measure the network
        decode_on_device(one, cfg.size, device)
        ms = _timed_calls(partial(decode_on_device, one, cfg.size, device), cfg.latency_calls, device)
        result["jpeg_decode_device_ms"] = _latency_row(ms, 1)["p50_ms"]
    except Exception as e:
        result["jpeg_decode_device_error"] = f"{type(e).__name__}: {e}"
    cpu_decode = partial(simplejpeg.decode_jpeg, jpeg, colorspace="RGB")
    result["jpeg_decode_cpu_ms"] = _latency_row(_timed_calls(cpu_decode, cfg.latency_calls, device), 1)[
        "p50_ms"
    ]
    result["presets"] = {}
    result["gflops_forward_per_image"] = {}  # what the planner matches a profile's model on
    g = torch.Generator().manual_seed(0)
    for preset in cfg.presets:
        module = _serving_module(preset, cfg.size, device)
        result["gflops_forward_per_image"][preset] = round(
            model_info(_model_config(preset, cfg.size))["gflops_forward"], 5
        )
        rows = result["presets"][preset] = []
        for batch in (1, cfg.offline_batch):
            # random pixels: a constant image can time faster than real ones
            x = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=g).to(device)
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                module(x)
                ms = _timed_calls(partial(module, x), cfg.latency_calls, device)
            rows.append({"mode": "eager"} | _latency_row(ms, batch))
            if not cuda:
                rows.append({"mode": "cuda_graph", "batch": batch, "skipped": "needs CUDA"})
                continue
            try:
                with torch.inference_mode():
                    ms = _timed_calls(partial(_graphed(module, x, amp=True), x), cfg.latency_calls, device)
                rows.append({"mode": "cuda_graph"} | _latency_row(ms, batch))
            except Exception as e:  # keep the eager figures whatever capture makes of this module
                rows.append({"mode": "cuda_graph", "batch": batch, "error": f"{type(e).__name__}: {e}"})
        best1 = min(r["p50_ms"] for r in rows if r["batch"] == 1 and "p50_ms" in r)
        decode_ms = result.get("jpeg_decode_device_ms", result["jpeg_decode_cpu_ms"])
        result[f"{preset}_single_stream_with_decode_ms"] = round(best1 + decode_ms, 4)
        say(f"infer {preset}: batch 1 p50 {best1:.3f} ms (network), " + ", ".join(
            f"{r['mode']} b{r['batch']} {r['images_per_s']:.0f} img/s" for r in rows if "images_per_s" in r
        ))  # fmt: skip
    return result


def run_device_check(
    out: str | Path, cfg: DeviceCheckConfig = DeviceCheckConfig(), progress: bool = True
) -> dict:
    """Every section in turn; ``out/device_check.json`` is rewritten after each, so a cut run keeps its
    figures."""
    say = (lambda *a: print(*a, flush=True)) if progress else (lambda *a: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + cfg.budget_s
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict = {
        "measured": time.strftime("%Y-%m-%d") + ", crosswalk device-check",  # the planner quotes it
        "config": asdict(cfg),
        "environment": _environment(device),
        "errors": {},
    }
    path = out / "device_check.json"

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(result, indent=2) + "\n")

    def keep(name: str, value) -> None:  # a section's partial figures, saved at once
        result[name] = value
        save()

    def train_pass(compiled: bool) -> list[dict]:
        rows = result.setdefault("train", [])
        return check_train(data, cfg, deadline, say, rows, compiled, on_row=partial(keep, "train"))

    say(f"device check on {result['environment'].get('gpu', 'cpu')}; budget {cfg.budget_s:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        sections = [
            ("data", lambda: check_data(data, cfg)),
            ("decode", lambda: check_decode(data, cfg, device)),
            ("train", partial(train_pass, compiled=False)),
            ("plan", lambda: check_plan(cfg, result.get("train", []))),
            ("step", lambda: check_step(data, cfg, device)),
            ("infer", lambda: check_infer(data, cfg, device, say, result.setdefault("infer", {}))),
            ("train", partial(train_pass, compiled=True)),  # last: compiling can take minutes
            ("plan", lambda: check_plan(cfg, result.get("train", []))),  # with the compiled rows
        ]
        for name, fn in sections:
            if name != "data" and "data" not in result:
                result["errors"][name] = "skipped: no data"
                continue
            t0 = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as e:
                result["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
                say(f"{name}: FAILED {type(e).__name__}: {e}")
            else:
                if name != "train":
                    say(f"{name} ({time.perf_counter() - t0:.0f} s): {json.dumps(result[name])[:300]}")
            save()
    say(f"wrote {path} in {result['seconds']:.0f} s")
    return result
