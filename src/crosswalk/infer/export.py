"""``crosswalk export RUN --out REPO/NAME/VERSION``: the model package that every runtime loads.

The package is a folder (Triton's model-repository layout, ``REPO/NAME/VERSION``)::

    model.onnx          the network: uint8 NHWC RGB images -> boxes (B, A, 4), scores (B, A, C)
    model.safetensors   the same weights for the torch backend (no pickle anywhere on the serving path)
    config.json         classes, input size, pre/post-processing, thresholds, training metrics, hashes, parity

Normalisation sits inside the graph, so a client sends the letterboxed uint8 canvas (4x fewer bytes than
float32) and nothing about mean/std can drift between trainer and server. Box decoding to pixels and the
score (class probability x predicted IoU) are in the graph too; thresholding and NMS are not, because their
output shapes depend on the data (../shared/reference/env.md sec. 4: ``dynamo=True`` refuses them).

Export checks itself: on generated frames, onnxruntime and PyTorch must agree within ``PARITY_ATOL`` and give
identical post-NMS detections, or the export fails.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from crosswalk.data.shards import sha256_file
from crosswalk.model import (
    BOX,
    MEAN_RGB,
    STD_RGB,
    DetectorConfig,
    feature_sizes,
    normalization_constants,
    normalize,
    scores_from_outputs,
)

PARITY_ATOL = 1e-4
SCORE_THRESHOLD = 0.25  # the serving default (Ultralytics' predict default too); evaluation uses 0.01
NMS_IOU = 0.6  # as in evaluation (crosswalk.model.decode)
MAX_DETECTIONS = 100
OPSET = 18


class ServingModule(nn.Module):
    """What the ONNX graph computes: uint8 (B, H, W, 3) RGB -> (boxes (B, A, 4) xyxy pixels, scores (B, A, C))."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        mean, inv_std = normalization_constants(next(net.parameters()).device)
        self.register_buffer("mean", mean, persistent=False)  # made once, on the net's device
        self.register_buffer("inv_std", inv_std, persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(normalize(images, self.mean, self.inv_std))
        return out[..., BOX], scores_from_outputs(out)


def export_onnx(net: nn.Module, path: Path, max_batch: int = 64) -> None:
    """The network with a dynamic batch dimension, weights inside the one file."""
    cfg: DetectorConfig = net.cfg
    w, h = cfg.input_size
    module = ServingModule(net.float().eval().to(memory_format=torch.contiguous_format)).eval()
    x = torch.zeros(2, h, w, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    torch.onnx.export(
        module,
        (x,),
        str(path),
        dynamo=True,
        external_data=False,
        opset_version=OPSET,
        input_names=["images"],
        output_names=["boxes", "scores"],
        dynamic_shapes={"images": {0: batch}},
        verbose=False,
    )


def parity_frames(count: int, size: tuple[int, int], seed: int = 20261128) -> list[np.ndarray]:
    """Generated driving frames (the scene generator's own distribution), letterboxed to the input size."""
    from crosswalk.infer.image import decode, prepare
    from crosswalk.scenes import render_frame

    return [prepare(decode(render_frame(seed, i)[0]), size).pixels for i in range(count)]


def check_parity(net: nn.Module, onnx_path: Path, frames: list[np.ndarray], score_threshold: float) -> dict:
    """Max abs difference of both outputs, and whether the post-NMS detections are identical."""
    import onnxruntime as ort

    from crosswalk.infer.postprocess import select

    cfg: DetectorConfig = net.cfg
    x = np.stack(frames)
    with torch.no_grad():
        tb, ts = (t.numpy() for t in ServingModule(net.float().eval())(torch.from_numpy(x)))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ob, os_ = session.run(None, {"images": x})
    w, h = cfg.input_size
    box_diff_px = float(np.abs(tb - ob).max())
    score_diff = float(np.abs(ts - os_).max())
    same = True
    for i in range(len(frames)):
        a = select(tb[i], ts[i], score_threshold, NMS_IOU, MAX_DETECTIONS)
        b = select(ob[i], os_[i], score_threshold, NMS_IOU, MAX_DETECTIONS)
        same &= len(a[0]) == len(b[0]) and bool(np.array_equal(a[2], b[2]))
        same &= bool(np.allclose(a[0], b[0], atol=1e-3)) if len(a[0]) == len(b[0]) else False
    return {
        "frames": len(frames),
        "score_max_abs_diff": score_diff,
        "box_max_abs_diff_px": box_diff_px,
        # Boxes are pixel coordinates up to ~600, where float32's own step is 6e-5 px: they are compared in
        # units of the canvas (px / max(W, H)), like the scores, on the same 1e-4 tolerance.
        "box_max_abs_diff_canvas": box_diff_px / max(w, h),
        "atol": PARITY_ATOL,
        "identical_detections": bool(same),
        "num_classes": cfg.num_classes,
    }


def export_package(
    model: str | Path, out: str | Path, parity_count: int = 8, name: str | None = None
) -> dict:
    """Write the package for a run / weights folder into ``out``; returns its config.json dict.

    Fails (ValueError) when the parity check does; the half-written package never appears at ``out``.
    """
    from crosswalk.train.runs import load_model, weights_path

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new VERSION folder")
    src = weights_path(model)
    meta = json.loads((src.parent / "model.json").read_text())
    net = load_model(src).float().to(memory_format=torch.contiguous_format)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        _write_package(net, meta, tmp, out, parity_count, name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for f in tmp.iterdir():
        f.chmod(0o644)
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the package from a server running as another user
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)  # the package appears whole or not at all
    return json.loads((out / "config.json").read_text())


def _write_package(
    net: nn.Module, meta: dict, tmp: Path, out: Path, parity_count: int, name: str | None
) -> None:
    cfg: DetectorConfig = net.cfg
    w, h = cfg.input_size
    export_onnx(net, tmp / "model.onnx")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / "model.safetensors"))
    parity = check_parity(net, tmp / "model.onnx", parity_frames(parity_count, (w, h)), SCORE_THRESHOLD)
    worst = max(parity["score_max_abs_diff"], parity["box_max_abs_diff_canvas"])
    if worst > PARITY_ATOL or not parity["identical_detections"]:
        raise ValueError(f"export parity check failed: {parity}")
    num_anchors = sum(fh * fw for fh, fw in feature_sizes(cfg))
    config = {
        "name": name or out.parent.name or "crosswalk",
        "version": out.name,
        "format": "crosswalk-model-package/1",
        "classes": list(cfg.class_names),
        "input_size": [w, h],
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, h, w, 3], "layout": "NHWC RGB"}],
        "outputs": [
            {"name": "boxes", "datatype": "FP32", "shape": [-1, num_anchors, 4]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, num_anchors, cfg.num_classes]},
        ],
        "preprocessing": (
            "decode to RGB; letterbox: scale = min(W/w, H/h), resize (INTER_AREA down, INTER_LINEAR up), "
            "paste at offsets round((W - scale*w)/2), round((H - scale*h)/2) on grey 114; uint8 NHWC. "
            "Normalisation (x - mean_rgb) / std_rgb is inside the graph."
        ),
        "postprocessing": (
            "per image: keep scores > score_threshold, top 1000, class-aware NMS at nms_iou, "
            "first max_detections; boxes back to the original image: (box - [tx, ty, tx, ty]) / scale"
        ),
        "normalization": {"mean_rgb": list(MEAN_RGB), "std_rgb": list(STD_RGB)},
        "score_threshold": SCORE_THRESHOLD,
        "nms_iou": NMS_IOU,
        "max_detections": MAX_DETECTIONS,
        "model_config": meta["model_config"],
        "metrics": meta.get("metrics", {}),
        "source_weights_sha256": meta.get("sha256"),
        "files": {f: sha256_file(tmp / f) for f in ("model.onnx", "model.safetensors")},
        "parity": parity,
        "exporter": {"torch": torch.__version__, "opset": OPSET},
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
