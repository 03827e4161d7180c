"""``Predictor``: bytes or pixels in, boxes in original pixels out. Knows nothing about HTTP.

The serving contract in LitServe's shape (decode / batch / predict / unbatch): the server, the LoadGen
benchmark, the vehicle loop and the profiler all call these same methods.

- ``load_image``   bytes or array -> RGB (checked: format, damage, pixel limit)
- ``prepare``      RGB -> letterboxed uint8 canvas + the map back
- ``run``          (B, H, W, 3) uint8 -> boxes (B, A, 4), scores (B, A, C): the network only
- ``postprocess``  one image's outputs -> detections in original pixels
- ``predict``      all of the above for a list of images

Backends: ``onnxruntime`` (the default: 1.4x faster than eager PyTorch on this CPU, imports in 0.1 s instead of
3 s, ../shared/reference/env.md sec. 4; CUDA / TensorRT execution providers are used when installed) and
``torch`` (eager, or ``compile=True``; on CUDA in bf16, where ``compile`` uses CUDA graphs via
``mode="reduce-overhead"``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from crosswalk.infer.image import MAX_PIXELS, Prepared, as_rgb, prepare
from crosswalk.infer.postprocess import Detection, postprocess

REPO_ROOT = Path(__file__).resolve().parents[3]
REFERENCE_MODEL = REPO_ROOT / "models" / "reference-nano"


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def resolve_package(model: str | Path | None) -> Path:
    """A package folder (config.json + model.onnx), a run folder, its weights/ folder, or None (the reference)."""
    path = Path(model) if model is not None else REFERENCE_MODEL
    for candidate in (path, path / "weights"):
        if (candidate / "config.json").is_file() or (candidate / "model.json").is_file():
            return candidate
    if path.is_file() and path.suffix == ".safetensors":
        return path.parent
    raise FileNotFoundError(
        f"no model at {path}: expected a package (config.json, model.onnx), a run folder or a weights folder"
    )


class Predictor:
    """A loaded model ready to answer; thread-compatible (``run`` may be called from one worker thread)."""

    def __init__(
        self,
        model: str | Path | None = None,
        backend: Literal["onnxruntime", "torch"] = "onnxruntime",
        threads: int | None = None,
        max_pixels: int = MAX_PIXELS,
        warmup: bool = True,
        device: str = "cpu",
        compile: bool = False,
        score_threshold: float | None = None,
    ) -> None:
        self.path = resolve_package(model)
        self.backend = backend
        self.threads = threads or default_threads()
        self.max_pixels = max_pixels
        self.device = device
        self.config = self._read_config()
        self.classes: list[str] = list(self.config["classes"])
        self.input_size: tuple[int, int] = tuple(self.config["input_size"])
        self.score_threshold = float(
            score_threshold if score_threshold is not None else self.config["score_threshold"]
        )
        self.nms_iou = float(self.config["nms_iou"])
        self.max_detections = int(self.config["max_detections"])
        if backend == "onnxruntime":
            self._run = self._load_onnxruntime()
        elif backend == "torch":
            self._run = self._load_torch(compile)
        else:
            raise ValueError(f"backend must be 'onnxruntime' or 'torch', got {backend!r}")
        if warmup:
            w, h = self.input_size
            for batch in (1, 2):
                self.run(np.full((batch, h, w, 3), 114, np.uint8))

    def __repr__(self) -> str:
        return f"Predictor({self.path}, backend={self.backend!r}, threads={self.threads}, device={self.device!r})"

    # ---- loading ----------------------------------------------------------------------------------------

    def _read_config(self) -> dict:
        config_path = self.path / "config.json"
        if config_path.is_file():
            return json.loads(config_path.read_text())
        # A run's weights (model.json + safetensors) without a package: the serving defaults of an export.
        from crosswalk.infer import export

        meta = json.loads((self.path / "model.json").read_text())
        mc = meta["model_config"]
        return {
            "name": "crosswalk",
            "version": "1",
            "classes": mc["class_names"],
            "input_size": mc["input_size"],
            "score_threshold": export.SCORE_THRESHOLD,
            "nms_iou": export.NMS_IOU,
            "max_detections": export.MAX_DETECTIONS,
            "model_config": mc,
            "metrics": meta.get("metrics", {}),
        }

    def _verified(self, path: Path) -> Path:
        """``path``, after checking it against the sha256 that ``config.json`` records for it (a package from
        ``crosswalk export``): a file changed or damaged after export fails here, not as wrong boxes."""
        expected = self.config.get("files", {}).get(path.name)
        if expected is not None and path.parent == self.path:
            from crosswalk.data.shards import sha256_file  # torch-free: a serving replica never loads torch

            actual = sha256_file(path)
            if actual != expected:
                raise ValueError(
                    f"{path}: sha256 {actual[:16]}... does not match {expected[:16]}... recorded in "
                    f"{self.path / 'config.json'}; the file changed after export (re-export the package)"
                )
        return path

    def _onnx_path(self) -> Path:
        path = self.path / "model.onnx"
        if path.is_file():
            return path
        # Weights without an ONNX file: export once into a cache keyed by the weights' hash.
        from crosswalk.infer.export import export_onnx
        from crosswalk.train.runs import load_model

        digest = json.loads((self.path / "model.json").read_text()).get("sha256", "nohash")[:16]
        cached = Path(tempfile.gettempdir()) / "crosswalk-onnx-cache" / f"{digest}.onnx"
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            export_onnx(load_model(self.path), tmp)
            os.replace(tmp, cached)
        return cached

    def _load_onnxruntime(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # polite on shared cores
        available = ort.get_available_providers()
        wanted = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            wanted = [
                p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available
            ] + wanted
        session = ort.InferenceSession(str(self._verified(self._onnx_path())), opts, providers=wanted)
        self.providers = session.get_providers()
        name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            boxes, scores = session.run(None, {name: batch})
            return boxes, scores

        return run

    def _load_torch(self, compile: bool):
        import torch
        from safetensors.torch import load_file

        from crosswalk.infer.export import ServingModule
        from crosswalk.model import DetectorConfig, build_detector

        torch.set_num_threads(self.threads)
        net = build_detector(DetectorConfig.from_dict(self.config["model_config"]))
        weights = self._verified(self.path / "model.safetensors")
        net.load_state_dict(load_file(str(weights)))
        device = torch.device(self.device)
        module = ServingModule(net.eval().to(device).to(memory_format=torch.channels_last)).eval()
        cuda = device.type == "cuda"
        if compile:
            module = torch.compile(module, mode="reduce-overhead" if cuda else "default", dynamic=False)
        self.providers = [f"torch-{device.type}{'-compile' if compile else ''}{'-bf16' if cuda else ''}"]

        @torch.inference_mode()
        def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = torch.from_numpy(batch).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                boxes, scores = module(x)
            return boxes.float().cpu().numpy(), scores.float().cpu().numpy()

        return run

    # ---- the contract ---------------------------------------------------------------------------------

    def load_image(self, image: bytes | np.ndarray) -> np.ndarray:
        return as_rgb(image, self.max_pixels)

    def prepare(self, image: bytes | np.ndarray) -> Prepared:
        """Encoded bytes or an RGB array -> the letterboxed input and the way back (``load_image`` first)."""
        return prepare(self.load_image(image), self.input_size)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, h = self.input_size
        if batch.dtype != np.uint8 or batch.shape[1:] != (h, w, 3):
            raise ValueError(f"run expects uint8 (B, {h}, {w}, 3), got {batch.dtype} {batch.shape}")
        return self._run(np.ascontiguousarray(batch))

    def postprocess(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        prep: Prepared,
        min_score: float | None = None,
        classes: list[int] | list[str] | None = None,
    ) -> list[Detection]:
        return postprocess(
            boxes,
            scores,
            prep,
            self.classes,
            self.score_threshold if min_score is None else float(min_score),
            self.nms_iou,
            self.max_detections,
            classes=self.class_ids(classes),
        )

    def class_ids(self, classes: list[int] | list[str] | None) -> list[int] | None:
        """Class names or ids -> ids; ValueError naming the unknown ones."""
        if classes is None:
            return None
        ids = []
        for c in classes:
            if isinstance(c, str) and not c.isdigit():
                if c not in self.classes:
                    raise ValueError(f"unknown class {c!r}; the model knows {self.classes}")
                ids.append(self.classes.index(c))
            else:
                if not 0 <= int(c) < len(self.classes):
                    raise ValueError(f"class id {c} out of range 0..{len(self.classes) - 1}")
                ids.append(int(c))
        return ids

    def predict(
        self,
        images: list[bytes | np.ndarray],
        min_score: float | None = None,
        classes: list[int] | list[str] | None = None,
    ) -> list[list[Detection]]:
        preps = [self.prepare(im) for im in images]
        if not preps:
            return []
        boxes, scores = self.run(np.stack([p.pixels for p in preps]))
        return [
            self.postprocess(boxes[i], scores[i], p, min_score=min_score, classes=classes)
            for i, p in enumerate(preps)
        ]
