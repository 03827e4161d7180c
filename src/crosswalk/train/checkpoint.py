"""Checkpoints that survive a kill mid-write: temp file, fsync, rename, and a hash ledger written last.

``RUN/checkpoints/step-000200.pt`` holds everything a bit-identical resume needs. ``RUN/checkpoints.json``
lists each finished checkpoint with its sha256; resume takes the newest one whose bytes still match (a file
written but not yet listed, or damaged since, is skipped). Loading uses ``weights_only=True``: a checkpoint
is data, never code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from crosswalk.data.shards import atomic_write_bytes

LEDGER = "checkpoints.json"


def _ledger(run: Path) -> list[dict]:
    path = run / LEDGER
    return json.loads(path.read_text()) if path.exists() else []


def save_checkpoint(run: Path, step: int, state: dict, keep: int = 3) -> Path:
    """Write ``state`` atomically as ``checkpoints/step-NNNNNN.pt`` and record its hash; keep the newest few."""
    folder = run / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = folder / f"step-{step:06d}.pt"
    atomic_write_bytes(path, data)
    entries = [e for e in _ledger(run) if e["step"] != step]
    entries.append(
        {
            "step": step,
            "file": f"checkpoints/{path.name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
    )
    entries.sort(key=lambda e: e["step"])
    for old in entries[:-keep]:
        (run / old["file"]).unlink(missing_ok=True)
    atomic_write_bytes(run / LEDGER, (json.dumps(entries[-keep:], indent=2) + "\n").encode())
    return path


def latest_checkpoint(run: Path) -> tuple[dict, dict] | None:
    """The newest checkpoint whose sha256 matches the ledger, loaded, with its ledger entry; else None."""
    for entry in reversed(_ledger(run)):
        path = run / entry["file"]
        if not path.exists():
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            print(f"warning: {path} does not match its recorded sha256; trying an older checkpoint")
            continue
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), entry
    return None


def export_weights(run: Path, model_state: dict, model_config: dict, metrics: dict | None = None) -> Path:
    """Serving weights: ``RUN/weights/model.safetensors`` plus ``model.json`` (config, metrics, hash)."""
    folder = run / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    tmp = folder / "model.safetensors.tmp"
    save_file(tensors, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
        digest = hashlib.sha256(f.read()).hexdigest()
    os.replace(tmp, folder / "model.safetensors")
    meta = {"model_config": model_config, "sha256": digest, "metrics": metrics or {}}
    atomic_write_bytes(folder / "model.json", (json.dumps(meta, indent=2) + "\n").encode())
    return folder / "model.safetensors"
