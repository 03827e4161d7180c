"""``crosswalk profile train``: what one training step of the user's model on the user's data costs.

Measured with the trainer's own pieces (``ShardLoader``, ``batch_images``, the detector, ``detection_loss``,
AdamW): FLOPs per image (``torch.utils.flop_counter`` via ``model_info``), activation bytes per image saved
for backward, bytes per sample on storage (the manifest), decode CPU-seconds per sample, one step broken into
data wait, forward (with the loss), backward and optimizer, and the gradient all-reduce timed in a real
2-rank gloo run on a gradient-sized buffer. ``compute_only`` steps at two batch sizes on a batch held in
memory give the calibration points of the step-time line (batches 8 and 16) and the held-out one
``plan --validate`` predicts (32).
"""

from __future__ import annotations

import copy
import io
import os
import socket
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from crosswalk.infra.machine import cores, measure_machine


@dataclass(frozen=True)
class TrainProfileConfig:
    preset: str = "nano"
    batch_size: int = 16  # the calibration batch
    line_batch_size: int = 8  # the second calibration point of the step-time line a + c*b
    validate_batch_size: int = 32  # held out: plan --validate predicts its step time
    workers: int = 2  # loader processes, as the trainer's default
    warmup: int = 2
    steps: int = 4  # measured real-loader steps
    # Interleaved compute-only steps at the line and held-out batch sizes. At the default sizes the held-out
    # prediction is 3*t(16) - 2*t(8): the extrapolation multiplies the timing noise by about 3.6, hence 5.
    compute_rounds: int = 5
    decode_samples: int = 64
    # The median of many short runs, on a host whose speed jumps: 8-17 s in all. The 2.4 MB all-reduce's
    # interquartile range is 40-100% of its median here; with 41 reps plan --validate's all-reduce check
    # reached 9.0-9.7% in 3 of 11 runs, with 161 it stayed within 2.6% in 10.
    allreduce_reps: int = 161
    allreduce_multiples: tuple[float, ...] = (1.0, 4.0, 16.0)  # x gradient bytes
    synth_frames: int = 48  # when no --data is given

    def __post_init__(self) -> None:
        if not 0 < self.line_batch_size < self.batch_size < self.validate_batch_size:
            raise ValueError(
                "TrainProfileConfig needs 0 < line_batch_size < batch_size < validate_batch_size, got "
                f"{self.line_batch_size}, {self.batch_size}, {self.validate_batch_size}"
            )

    @classmethod
    def quick(cls, **overrides) -> TrainProfileConfig:
        """For tests and the demo: fewer real-loader steps and decode samples, same outputs. The figures
        ``plan --validate`` predicts keep their full repetitions (the compute-only rounds and the all-reduce
        reps: 15 unpaired reps put the all-reduce check at 6.5-12.3% in three quick profiles)."""
        values = dict(warmup=1, steps=2, decode_samples=32, synth_frames=32)
        return cls(**{**values, **overrides})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _allreduce_worker(rank: int, world: int, port: int, sizes: list[int], reps: int, queue) -> None:
    """One gloo rank: all-reduce each buffer size ``reps`` times after a barrier, the sizes interleaved (so
    that a burst of load from another process hits them alike); rank 0 reports medians."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        bufs = [torch.ones(max(1, size // 4), dtype=torch.float32) for size in sizes]
        for buf in bufs:
            for _ in range(2):
                dist.all_reduce(buf)
        times: list[list[float]] = [[] for _ in bufs]
        for _ in range(reps):
            for buf, ts in zip(bufs, times, strict=True):
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(buf)
                ts.append(time.perf_counter() - t0)
        rows = [
            {"bytes": b.numel() * 4, "ms": 1e3 * statistics.median(ts)}
            for b, ts in zip(bufs, times, strict=True)
        ]
        _pair_interior(rows, times)
        if rank == 0:
            queue.put(rows)
    finally:
        dist.destroy_process_group()


def _pair_interior(rows: list[dict], times: list[list[float]]) -> None:
    """Adds ``ms_paired`` to every row between the smallest and largest buffer: its time at the speed the two
    end sizes ran at. Each rep times all sizes back to back, so per rep the ratio of an interior size's time
    to the line through that rep's end times is free of the host's slower and faster seconds; the median
    ratio times the line through the end medians is the interior time the ends would predict it to have
    (``plan --validate`` compares the two). Unpaired medians, 8 runs: 3.9-7.3% off that line; paired:
    0.1-3.0% in 7 of them, 8.8% in one."""
    (s0, first), (s1, last) = (rows[0]["bytes"], times[0]), (rows[-1]["bytes"], times[-1])
    for row, ts in zip(rows[1:-1], times[1:-1], strict=True):
        f = (row["bytes"] - s0) / (s1 - s0)
        ratios = [t / (a + f * (b - a)) for t, a, b in zip(ts, first, last, strict=True)]
        line_ms = rows[0]["ms"] + f * (rows[-1]["ms"] - rows[0]["ms"])
        row["ms_paired"] = statistics.median(ratios) * line_ms


def measure_allreduce(
    sizes_bytes: list[int], world: int = 2, reps: int = 10, timeout_s: float = 120
) -> list[dict]:
    """Median all-reduce time per buffer size in a real ``world``-process gloo group on this machine."""
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    env_before = os.environ.get("OMP_WAIT_POLICY")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    procs = [
        ctx.Process(target=_allreduce_worker, args=(r, world, port, list(sizes_bytes), reps, queue))
        for r in range(world)
    ]
    try:
        for p in procs:
            p.start()
        rows = queue.get(timeout=timeout_s)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        if env_before is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
    for row in rows:
        algbw = row["bytes"] / (row["ms"] / 1e3)
        row["busbw_gb_per_s"] = round(algbw * 2 * (world - 1) / world / 1e9, 4)  # nccl-tests' busbw
        row["ms"] = round(row["ms"], 4)
        if "ms_paired" in row:
            row["ms_paired"] = round(row["ms_paired"], 4)
    return rows


def activation_bytes_per_image(model: torch.nn.Module, make_input, batch_sizes=(1, 2)) -> float:
    """Bytes autograd saves for backward, per image: the difference between two batch sizes (so buffers that
    do not grow with the batch, such as anchor grids, drop out). Parameters are not counted."""
    params = {p.data_ptr() for p in model.parameters()}
    totals = []
    for b in batch_sizes:
        seen: dict[tuple[int, int], int] = {}

        def pack(t: torch.Tensor, seen: dict = seen):
            if t.data_ptr() not in params:
                seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(make_input(b))
        totals.append(sum(seen.values()))
        del out
    (b0, b1), (t0, t1) = batch_sizes, totals
    return (t1 - t0) / (b1 - b0)


def _cat_batches(a: dict, b: dict) -> dict:
    return {
        "images": torch.cat([a["images"], b["images"]]),
        "theta": torch.cat([a["theta"], b["theta"]]),
        "photometric": torch.cat([a["photometric"], b["photometric"]]),
        "targets": a["targets"] + b["targets"],
        "index": torch.cat([a["index"], b["index"]]),
    }


def _first(batch: dict, n: int) -> dict:
    return {k: batch[k][:n] for k in ("images", "theta", "photometric", "targets", "index")}


def _hold(batch: dict) -> dict:
    """A private copy: the loader reuses its batch slots."""
    return {**batch, "images": batch["images"].clone()}


def profile_train(
    data_dir: str | Path | None = None, cfg: TrainProfileConfig = TrainProfileConfig(), progress: bool = True
) -> dict:
    """Measure the training workload; returns the ``profile_train.json`` dict (keys in the module docstring)."""
    say = print if progress else (lambda *a, **k: None)
    if data_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            from crosswalk.data.synth import SynthConfig, synthesize

            say(f"no --data: synthesizing {cfg.synth_frames} frames to profile on")
            data = Path(tmp) / "train"
            synthesize(data, SynthConfig(frames=cfg.synth_frames, seed=1), progress=False)
            result = _profile(data, cfg, say)
            result["data"] = f"synthesized ({cfg.synth_frames} frames, seed 1)"
            return result
    return _profile(Path(data_dir), cfg, say)


def _profile(data: Path, cfg: TrainProfileConfig, say) -> dict:
    from crosswalk.data.loader import LoaderConfig, ShardLoader, batch_images, decode_image
    from crosswalk.data.shards import ShardReader, read_manifest
    from crosswalk.model import build_detector, detection_loss, model_info
    from crosswalk.train.config import TrainConfig, bf16_autocast
    from crosswalk.train.evaluation import to_model_input
    from crosswalk.train.loop import _param_groups, model_config_for, targets_to

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, cores()))
    machine = measure_machine(quick=cfg.steps < TrainProfileConfig.steps)
    say(
        f"this machine: {machine['cores']} cores, {machine['matmul_fp32_gflops']} GFLOP/s fp32 matmul, "
        f"{machine['memory_gb_per_s']} GB/s memory copy"
    )

    # ---- storage and decode -------------------------------------------------------------------------------
    manifest = read_manifest(data)
    reader = ShardReader(data)
    samples = int(manifest["samples"])
    bytes_per_sample = sum(s["bytes"] for s in manifest["shards"]) / samples
    blobs = [reader.image_bytes(i) for i in range(min(cfg.decode_samples, len(reader)))]
    first = reader.annotation(0)
    size = (first["width"], first["height"])
    decode_image(blobs[0])
    c0 = time.process_time()
    for b in blobs:
        decode_image(b)
    decode_cpu_s = (time.process_time() - c0) / len(blobs)
    say(f"storage {bytes_per_sample / 1e3:.1f} kB/sample; decode {1e3 * decode_cpu_s:.2f} CPU-ms/sample")

    # ---- model: FLOPs, activations, gradients, checkpoint -----------------------------------------------------
    tcfg = TrainConfig(preset=cfg.preset, batch_size=cfg.batch_size, image_size=size)
    loader = ShardLoader(data, LoaderConfig(batch_size=cfg.batch_size, workers=cfg.workers, image_size=size))
    mcfg = model_config_for(tcfg, loader.categories)
    info = model_info(mcfg)
    torch.manual_seed(0)
    model = build_detector(mcfg).to(device).to(memory_format=torch.channels_last).train()
    amp = bf16_autocast("auto", device)
    w, h = size

    def make_input(b: int) -> torch.Tensor:
        return torch.rand(b, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        act_bytes = activation_bytes_per_image(model, make_input)
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.AdamW(_param_groups(model, 0.05), lr=1e-4)
    gradient_bytes = sum(p.numel() * 4 for p in model.parameters())  # DDP all-reduces fp32 gradients

    timings = {"data_wait": [], "forward": [], "backward": [], "optimizer": []}

    def step(batch: dict, record: bool) -> float:
        t0 = time.perf_counter()
        x = to_model_input(batch_images(batch, device))
        targets = targets_to(batch["targets"], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(x)
        loss, _ = detection_loss(outputs.float(), targets, mcfg)
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t3 = time.perf_counter()
        if record:
            timings["forward"].append(t1 - t0)
            timings["backward"].append(t2 - t1)
            timings["optimizer"].append(t3 - t2)
        return t3 - t0

    # ---- real steps: the loader feeding the step ----------------------------------------------------------
    batches = loader.forever()
    for i in range(cfg.warmup + cfg.steps):
        t0 = time.perf_counter()
        batch = next(batches)
        wait = time.perf_counter() - t0
        if i >= cfg.warmup:
            timings["data_wait"].append(wait)
        step(batch, record=i >= cfg.warmup)
    held = _hold(next(batches))
    held_big = held
    while len(held_big["targets"]) < cfg.validate_batch_size:
        held_big = _cat_batches(held_big, _hold(next(batches)))
    loader.close()
    buf = io.BytesIO()
    ema = copy.deepcopy(model).state_dict()  # its own storage: torch.save writes shared storage only once
    torch.save({"model": model.state_dict(), "ema": ema, "optimizer": optimizer.state_dict()}, buf)
    checkpoint_bytes = buf.tell()

    # ---- compute only, three batch sizes interleaved (drifting load hits all alike) -------------------------
    # Every other step is one at the calibration batch, and each step at another batch size is compared with
    # the two on either side of it: the host's speed jumps for seconds at a time (see profile_infer).
    held_line = _first(held, cfg.line_batch_size)
    for b in (held_line, held, held_big):
        step(b, False)
    small = [step(held, False)]
    others: dict[int, list[float]] = {cfg.line_batch_size: [], cfg.validate_batch_size: []}
    ratios: dict[int, list[float]] = {n: [] for n in others}
    for _ in range(cfg.compute_rounds):
        for n, b in ((cfg.line_batch_size, held_line), (cfg.validate_batch_size, held_big)):
            others[n].append(step(b, False))
            small.append(step(held, False))
            ratios[n].append(others[n][-1] / (small[-2] * small[-1]) ** 0.5)
    compute_only = {}
    for n, ts in sorted({**others, cfg.batch_size: small}.items()):
        compute_only[str(n)] = _rate_row(ts, n)
        if n in ratios:  # at the calibration batch's speed: its median x the median ratio to its neighbours
            paired_ms = 1e3 * statistics.median(ratios[n]) * statistics.median(small)
            compute_only[str(n)]["step_ms_paired"] = round(paired_ms, 2)
    say("compute only: " + ", ".join(f"batch {n} {row['step_ms']:.0f} ms" for n, row in compute_only.items()))

    # ---- the all-reduce, 2 real gloo ranks ----------------------------------------------------------------
    sizes = [int(gradient_bytes * m) for m in cfg.allreduce_multiples]
    say(f"all-reduce: 2 gloo ranks, {', '.join(f'{s / 1e6:.1f} MB' for s in sizes)}")
    allreduce = measure_allreduce(sizes, world=2, reps=cfg.allreduce_reps)
    allreduce_grad_ms = allreduce[0]["ms"]

    med = {k: 1e3 * statistics.median(v) for k, v in timings.items()}
    total_ms = sum(med.values()) + allreduce_grad_ms
    compute_rate = cfg.batch_size / statistics.median(small)
    achieved = compute_rate * info["gflops_forward_backward"]
    result = {
        "preset": cfg.preset,
        "image_size": list(size),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "amp_bf16": amp,
        "params": info["params"],
        "gflops_forward_per_image": round(info["gflops_forward"], 5),
        "gflops_forward_backward_per_image": round(info["gflops_forward_backward"], 5),
        "activation_bytes_per_image": round(act_bytes),
        "activation_dtype": "bfloat16" if amp else "float32",
        "samples": samples,
        "bytes_per_sample": round(bytes_per_sample, 1),
        "jpeg_bytes_per_sample": round(sum(map(len, blobs)) / len(blobs), 1),
        "decode_cpu_s_per_sample": round(decode_cpu_s, 6),
        "step": {
            "batch_size": cfg.batch_size,
            "loader_workers": cfg.workers,
            "data_wait_ms": round(med["data_wait"], 2),
            "forward_ms": round(med["forward"], 2),
            "backward_ms": round(med["backward"], 2),
            "optimizer_ms": round(med["optimizer"], 2),
            "allreduce_ms": round(allreduce_grad_ms, 3),
            "total_ms": round(total_ms, 2),
            "images_per_s": round(cfg.batch_size / (total_ms / 1e3), 2),
            "how": "medians of measured steps; all-reduce of the gradient bytes timed in the 2-rank gloo run",
        },
        "compute_only": compute_only,
        "calibration_batch_size": cfg.batch_size,
        "line_batch_size": cfg.line_batch_size,
        "achieved_gflops_per_s": round(achieved, 2),
        "mfu_this_machine": round(achieved / machine["matmul_fp32_gflops"], 4),
        "gradient_bytes_per_step": gradient_bytes,
        "checkpoint_bytes": checkpoint_bytes,
        "allreduce": {
            "world_size": 2,
            "backend": "gloo",
            "gradient_bytes": gradient_bytes,
            "rows": allreduce,
        },
        "machine": machine,
        "data": str(data),
        "config": asdict(cfg),
    }
    s = result["step"]
    say(
        f"step (batch {cfg.batch_size}): data wait {s['data_wait_ms']:.0f} ms, forward {s['forward_ms']:.0f}, "
        f"backward {s['backward_ms']:.0f}, optimizer {s['optimizer_ms']:.0f}, all-reduce {s['allreduce_ms']:.2f} ms; "
        f"MFU on this machine {100 * result['mfu_this_machine']:.1f}%"
    )
    return result


def _rate_row(times_s: list[float], batch: int) -> dict:
    med = statistics.median(times_s)
    return {
        "step_ms": round(1e3 * med, 2),
        "images_per_s": round(batch / med, 2),
        "steps_ms": [round(1e3 * t, 2) for t in times_s],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
