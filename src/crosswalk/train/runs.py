"""Load trained weights (a run folder or its ``weights/``) and evaluate them: ``crosswalk eval``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from crosswalk.model import DetectorConfig, build_detector


def weights_path(model: str | Path) -> Path:
    """Accept a run folder, a weights folder or the .safetensors file itself."""
    p = Path(model)
    for candidate in (p, p / "model.safetensors", p / "weights" / "model.safetensors"):
        if candidate.is_file() and candidate.suffix == ".safetensors":
            return candidate
    raise FileNotFoundError(f"no model.safetensors at {p} (expected a run folder, its weights/ or the file)")


def load_model(model: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The detector from safetensors weights and the ``model.json`` beside them (no pickle involved)."""
    path = weights_path(model)
    meta = json.loads((path.parent / "model.json").read_text())
    net = build_detector(DetectorConfig.from_dict(meta["model_config"]))
    net.load_state_dict(load_file(str(path)))
    return net.to(device).to(memory_format=torch.channels_last).eval()


def evaluate_run(model, data, json_out=None, plots=None, workers: int = 2) -> dict | None:
    from crosswalk.evaluate import write_plots
    from crosswalk.train.distributed import cleanup, init_distributed
    from crosswalk.train.evaluation import evaluate_model

    d = init_distributed()
    try:
        net = load_model(model, d.device)
        from crosswalk.train.config import bf16_autocast

        results = evaluate_model(net, data, d, workers=workers, amp=bf16_autocast("auto", d.device))
    finally:
        cleanup(d)
    if results is None:
        return None
    mr = results["pedestrian_mr"]
    print(f"mAP50 {results['map50']:.4f}  mAP {results['map']:.4f}")
    for name, c in results["per_class"].items():
        print(
            f"  {name:11s} AP50 {c['ap50'] if c['ap50'] is not None else float('nan'):.4f}  "
            f"AP {c['ap'] if c['ap'] is not None else float('nan'):.4f}"
        )
    print(
        "pedestrian MR-2  "
        + "  ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in mr.items())
    )
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {json_out}")
    if plots:
        for p in write_plots(results, plots):
            print(f"wrote {p}")
    return results
