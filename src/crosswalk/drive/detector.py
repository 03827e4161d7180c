"""The car's access to the model: one small interface, in process or over HTTP, so the loop is the same.

``detect(image)`` returns the detections (every class) in the frame's pixels and the wall-clock seconds the call
took: in process that is preprocess + network + NMS; over HTTP it adds JPEG encoding and the round trip, as
a car streaming frames to a remote server would pay.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

DETECT_PATH = "/v1/detect"


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> tuple[list[dict], float]:
        """RGB uint8 (H, W, 3) -> (detections of every class, wall-clock seconds)."""
        ...

    def close(self) -> None: ...


class InProcessDetector:
    """``crosswalk.infer.Predictor`` called directly (onnxruntime by default, one thread per call)."""

    def __init__(
        self,
        model: str | Path | None = None,
        min_score: float = 0.05,
        threads: int | None = 1,
        backend: str = "onnxruntime",
    ) -> None:
        from crosswalk.infer import Predictor

        self.predictor = Predictor(model, backend=backend, threads=threads)
        self.min_score = min_score
        self.name = f"inproc:{self.predictor.path.name}:{backend}"

    def detect(self, image: np.ndarray) -> tuple[list[dict], float]:
        t0 = time.perf_counter()
        dets = self.predictor.predict([image], min_score=self.min_score)[0]
        return [dict(d) for d in dets], time.perf_counter() - t0

    def close(self) -> None:
        pass


class HttpDetector:
    """POST JPEG bytes to a running ``crosswalk serve`` at ``URL/v1/detect`` over one reused connection."""

    def __init__(self, url: str, min_score: float = 0.05, jpeg_quality: int = 95, timeout_s: float = 30.0):
        import httpx

        self.url = url.rstrip("/")
        self.min_score = min_score
        self.jpeg_quality = jpeg_quality
        self.client = httpx.Client(base_url=self.url, timeout=timeout_s)
        self.name = f"http:{self.url}"

    def detect(self, image: np.ndarray) -> tuple[list[dict], float]:
        t0 = time.perf_counter()
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        )
        if not ok:
            raise RuntimeError("JPEG encoding of a camera frame failed")
        response = self.client.post(
            DETECT_PATH,
            content=jpeg.tobytes(),
            headers={"content-type": "image/jpeg"},
            params={"min_score": self.min_score},
        )
        response.raise_for_status()
        dets = response.json()["detections"]
        return dets, time.perf_counter() - t0

    def close(self) -> None:
        self.client.close()
