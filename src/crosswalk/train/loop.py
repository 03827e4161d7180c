"""``train``: the training workload, one process or one of ``torchrun``'s ranks.

A run folder holds ``config.json`` (resolved), ``metrics.jsonl``, ``tb/`` (TensorBoard), ``checkpoints/``
with ``checkpoints.json`` (hash ledger), ``weights/model.safetensors`` (EMA weights for serving) and
``eval.json``. ``--resume`` continues from the newest verified checkpoint: model, EMA, optimizer, step, every
rank's RNG state and the loader position, so a run killed at any step and resumed ends with the same weights
as one never interrupted (single process: bit-identical; tested). SIGTERM/SIGINT save at the next step
boundary and exit (preemption).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from crosswalk.data.loader import LoaderConfig, ShardLoader, batch_images
from crosswalk.data.targets import BatchTargets, as_batch_targets
from crosswalk.model import DetectorConfig, build_detector, detection_loss
from crosswalk.train.checkpoint import export_weights, latest_checkpoint, save_checkpoint
from crosswalk.train.config import TrainConfig, bf16_autocast, lr_at
from crosswalk.train.distributed import Dist, all_gather_objects, any_rank, cleanup, init_distributed
from crosswalk.train.evaluation import evaluate_model, to_model_input


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Preempted(SystemExit):
    """SIGTERM/SIGINT arrived; a checkpoint was saved at the step boundary."""


@dataclass
class RunResult:
    run: Path
    step: int
    metrics: dict


def model_config_for(cfg: TrainConfig, categories: tuple[str, ...]) -> DetectorConfig:
    overrides = {k: v for k, v in (("width_mult", cfg.width_mult), ("depth_mult", cfg.depth_mult)) if v > 0}
    return DetectorConfig.preset(
        cfg.preset,
        num_classes=len(categories),
        class_names=tuple(categories),
        input_size=tuple(cfg.image_size),
        **overrides,
    )


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm parameters (1-D tensors), the usual AdamW practice."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """EMA of weights with a warm-up ramp (YOLOv5/timm): early steps follow the model closely."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
    }


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((s["python_version"], tuple(s["python"]), None))
    np.random.set_state(("MT19937", np.array(s["numpy"], dtype=np.uint32), s["numpy_pos"], 0, 0.0))


def targets_to(targets: BatchTargets | list[dict[str, torch.Tensor]], device: torch.device) -> BatchTargets:
    """A batch's targets on ``device``, flat: one copy per field, not one per image and field (that was about
    1,800 small transfers a step at batch 256 on a GPU)."""
    return as_batch_targets(targets).to(device)


def forward_backward(
    forward, batch: dict, mcfg: DetectorConfig, device: torch.device, amp: bool, loss_scale: float = 1.0
) -> tuple[float, dict]:
    """One micro-batch: augment and normalise on the device, forward (bf16 autocast if ``amp``), loss in
    fp32, backward. Returns the loss and its parts as floats. Shared by the trainer and ``bench train``."""
    x = to_model_input(batch_images(batch, device))
    targets = targets_to(batch["targets"], device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = forward(x)
    loss, parts = detection_loss(outputs.float(), targets, mcfg)
    (loss * loss_scale).backward()
    return float(loss.detach()), parts


class _StopFlag:
    """Set by SIGTERM/SIGINT; read at step boundaries."""

    def __init__(self) -> None:
        self.signum = 0

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.signum = signum


def train(
    cfg: TrainConfig, data: str | Path, out: str | Path, val: str | Path | None = None, resume: bool = False
) -> RunResult:
    d = init_distributed()
    try:
        return _train(cfg, Path(data), Path(out), Path(val) if val else None, resume, d)
    finally:
        cleanup(d)


def _init_weights(model: torch.nn.Module, source: str) -> None:
    """Load safetensors weights into ``model`` (same architecture required), for fine-tuning."""
    from safetensors.torch import load_file

    from crosswalk.train.runs import weights_path

    path = weights_path(source)
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:  # missing / unexpected keys or shape mismatches
        raise ValueError(
            f"init_from={source}: {path} does not fit this model (preset, width/depth or classes differ): "
            f"{str(e).splitlines()[0]}"
        ) from None


def _train(cfg: TrainConfig, data: Path, run: Path, val: Path | None, resume: bool, d: Dist) -> RunResult:
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // d.world_size))
    ledger = run / "checkpoints.json"
    if ledger.exists() and not resume:
        raise FileExistsError(
            f"{run} already holds a run; pass --resume to continue it or choose a new --out"
        )
    if resume and not ledger.exists():
        raise FileNotFoundError(f"--resume: {run} has no checkpoints.json to resume from")
    micro_batch = cfg.batch_size // cfg.grad_accum
    loader = ShardLoader(
        data,
        LoaderConfig(
            batch_size=micro_batch,
            image_size=tuple(cfg.image_size),
            workers=cfg.workers,
            seed=cfg.seed,
            decode=cfg.decode,
        ),
        rank=d.rank,
        world_size=d.world_size,
    )
    mcfg = model_config_for(cfg, loader.categories)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_detector(mcfg).to(d.device)
    if cfg.init_from and not resume:
        _init_weights(model, cfg.init_from)
        if d.main:
            print(f"initialised from {cfg.init_from}")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    step, history = 0, {}
    random.seed(cfg.seed + d.rank)
    np.random.seed(cfg.seed + d.rank)
    torch.manual_seed(cfg.seed + d.rank)
    if resume:
        found = latest_checkpoint(run)
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {run} matches its recorded sha256")
        state, entry = found
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        step, history = state["step"], state.get("metrics", {})
        _set_rng_state(state["rng"][d.rank] if d.rank < len(state["rng"]) else state["rng"][0])
        if d.main:
            print(f"resumed {run} at step {step} from {entry['file']} (sha256 {entry['sha256'][:12]})")
    net = DDP(model) if d.enabled else model
    forward = torch.compile(net) if cfg.compile else net
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
        resolved = {
            "train": cfg.to_dict(),
            "model": mcfg.to_dict(),
            "data": str(data),
            "val": str(val) if val else None,
            "world_size": d.world_size,
        }
        (run / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    amp = bf16_autocast(cfg.amp, d.device)
    writer = _tensorboard(run) if d.main else None
    stop = _StopFlag()
    stop.install()

    def checkpoint(metrics: dict) -> None:
        rngs = all_gather_objects(_rng_state(), d)
        if d.main:
            state = {
                "step": step,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "loader": loader.state_dict(),
                "rng": rngs,
                "config": cfg.to_dict(),
                "model_config": mcfg.to_dict(),
                "metrics": metrics,
            }
            save_checkpoint(run, step, state)
            export_weights(run, ema.state_dict(), mcfg.to_dict(), metrics)

    batches = loader.forever()
    bar = tqdm(
        total=cfg.steps, initial=step, desc="train", unit="step", disable=not d.main, dynamic_ncols=True
    )
    window = {"images": 0, "wait": 0.0, "start": time.perf_counter()}
    last: dict = {}
    while step < cfg.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        model.train()
        loss_sum, parts_sum = 0.0, {}
        for micro in range(cfg.grad_accum):
            t0 = time.perf_counter()
            batch = next(batches)
            window["wait"] += time.perf_counter() - t0
            sync = micro == cfg.grad_accum - 1 or not d.enabled
            with net.no_sync() if not sync else contextlib.nullcontext():
                loss, parts = forward_backward(forward, batch, mcfg, d.device, amp, 1.0 / cfg.grad_accum)
            loss_sum += loss / cfg.grad_accum
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v / cfg.grad_accum
            window["images"] += len(batch["index"]) * d.world_size
        if any_rank(not math.isfinite(loss_sum), d):
            raise TrainingDiverged(
                f"loss is not finite at step {step} (loss {loss_sum}, parts {parts_sum}); lower lr "
                f"(now {lr_at(step, cfg):.2e}) or raise warmup_steps, then --resume from the last checkpoint"
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cfg.ema_decay > 0:
            update_ema(ema, model, cfg.ema_decay, step)
        else:
            ema.load_state_dict(model.state_dict())
        step += 1
        bar.update()
        if d.main and (step % cfg.log_every == 0 or step == cfg.steps):
            elapsed = time.perf_counter() - window["start"]
            last = {
                "step": step,
                "epoch": loader.epoch,
                "loss": loss_sum,
                **parts_sum,
                "lr": lr_at(step - 1, cfg),
                "grad_norm": float(grad_norm),
                "images_per_s": window["images"] / elapsed,
                "data_wait_fraction": window["wait"] / elapsed,
            }
            _log(run, writer, last)
            bar.set_postfix(
                loss=f"{loss_sum:.3f}",
                img_s=f"{last['images_per_s']:.0f}",
                wait=f"{100 * last['data_wait_fraction']:.0f}%",
            )
            window = {"images": 0, "wait": 0.0, "start": time.perf_counter()}
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and val is not None:
            history = _evaluate(ema, val, d, cfg, run, writer, step, amp) or history
        if any_rank(stop.signum != 0, d):
            checkpoint(history)
            bar.close()
            if d.main:
                print(
                    f"\nstopped by signal {stop.signum} at step {step}; checkpoint saved. Continue with --resume"
                )
            raise Preempted(128 + (stop.signum or signal.SIGTERM))
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            checkpoint(history)
    bar.close()
    loader.close()
    if val is not None:
        history = _evaluate(ema, val, d, cfg, run, writer, step, amp) or history
    checkpoint(history)
    if writer is not None:
        writer.close()
    return RunResult(run, step, {**history, "last": last})


def _tensorboard(run: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run / "tb"))


def _log(run: Path, writer, row: dict) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                writer.add_scalar(f"train/{k}", v, row["step"])


def _evaluate(
    ema, val: Path, d: Dist, cfg: TrainConfig, run: Path, writer, step: int, amp: bool
) -> dict | None:
    results = evaluate_model(
        ema, val, d, workers=cfg.workers, score_threshold=cfg.eval_score_threshold, amp=amp
    )
    if not d.main or results is None:
        return None
    summary = {
        "step": step,
        "map50": results["map50"],
        "map": results["map"],
        "pedestrian_ap50": results["per_class"].get("pedestrian", {}).get("ap50"),
        "pedestrian_mr": results["pedestrian_mr"],
    }
    (run / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"eval": summary}) + "\n")
    if writer is not None:
        for k in ("map50", "map"):
            if results[k] is not None:
                writer.add_scalar(f"val/{k}", results[k], step)
    print(
        f"\nstep {step}: mAP50 {results['map50']:.3f}  mAP {results['map']:.3f}  pedestrian MR-2 "
        + "  ".join(
            f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in results["pedestrian_mr"].items()
        )
    )
    return summary
