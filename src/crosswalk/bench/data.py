"""``crosswalk bench data``: does the loader keep up with the JPEG decoder?

Three figures from one run, on the same JPEGs: the scene generator's frames/s, the loader's images/s
(workers decode, augment and batch, as in training), and the decode limit, which is the same number of
processes doing nothing but ``cv2.imdecode`` in a tight loop. ``ratio`` = loader / limit says how much the
loader costs above decoding (1.0 = free). Medians over repeats, measured in the same run (timm's recipe).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from crosswalk.data.loader import LoaderConfig, ShardLoader, worker_context
from crosswalk.data.shards import ShardReader


@dataclass(frozen=True)
class DataBenchConfig:
    workers: int = 2
    batch_size: int = 32
    seconds: float = 5.0  # per measurement
    repeats: int = 5
    synth_frames: int = 48
    decode_samples: int = 256  # distinct JPEGs held in memory for the decode limit


def _decode_loop(blobs: list[bytes], seconds: float, decoder: str, queue) -> None:
    cv2.setNumThreads(1)
    arrays = [np.frombuffer(b, np.uint8) for b in blobs]
    h, w, _, _ = simplejpeg.decode_jpeg_header(blobs[0])
    out = np.empty((h, w, 3), np.uint8)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if decoder == "opencv":
            for a in arrays:
                cv2.imdecode(a, cv2.IMREAD_COLOR_RGB)
        else:  # simplejpeg into one reused buffer: the fastest way this machine decodes these JPEGs
            for b in blobs:
                simplejpeg.decode_jpeg(b, colorspace="RGB", buffer=out)
        n += len(arrays)
    queue.put(n / (time.perf_counter() - start))


def decode_limit(blobs: list[bytes], workers: int, seconds: float, decoder: str = "simplejpeg") -> float:
    """Images/s of ``workers`` processes decoding the same JPEGs as fast as they can, summed."""
    ctx = worker_context()
    queue = ctx.Queue()
    procs = [ctx.Process(target=_decode_loop, args=(blobs, seconds, decoder, queue)) for _ in range(workers)]
    for p in procs:
        p.start()
    rates = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return float(sum(rates))


def loader_rate(data_dir: Path, cfg: DataBenchConfig, seconds: float) -> float:
    """Training-loader images/s after the first batch (worker start-up excluded), across epochs."""
    loader = ShardLoader(data_dir, LoaderConfig(batch_size=cfg.batch_size, workers=cfg.workers))
    images, start = 0, None
    try:
        while True:
            for batch in loader:
                if start is None:
                    start = time.perf_counter()
                    continue
                images += len(batch["index"])
                if time.perf_counter() - start >= seconds:
                    return images / (time.perf_counter() - start)
    finally:
        loader.close()


def synth_rate(workers: int, frames: int) -> float:
    from crosswalk.data.synth import SynthConfig, synthesize

    with tempfile.TemporaryDirectory() as tmp:
        result = synthesize(Path(tmp) / "d", SynthConfig(frames=frames, workers=workers), progress=False)
    return result.frames_per_s


def bench_data(data_dir: str | Path, cfg: DataBenchConfig = DataBenchConfig(), progress: bool = True) -> dict:
    data_dir = Path(data_dir)
    reader = ShardReader(data_dir)
    blobs = [reader.image_bytes(i) for i in range(min(cfg.decode_samples, len(reader)))]
    say = print if progress else (lambda *a, **k: None)
    synth = synth_rate(cfg.workers, cfg.synth_frames)
    say(f"synth: {synth:.1f} frames/s with {cfg.workers} workers")
    limits, loaders, opencv = [], [], []
    for r in range(cfg.repeats):  # interleaved, so drifting background load hits both alike
        # The limit is the faster of two decoders: the loader's own (simplejpeg) and OpenCV's.
        opencv.append(decode_limit(blobs, cfg.workers, cfg.seconds / 2, "opencv"))
        limits.append(max(decode_limit(blobs, cfg.workers, cfg.seconds, "simplejpeg"), opencv[-1]))
        loaders.append(loader_rate(data_dir, cfg, cfg.seconds))
        say(
            f"repeat {r + 1}/{cfg.repeats}: decode limit {limits[-1]:.0f} img/s (OpenCV {opencv[-1]:.0f}), "
            f"loader {loaders[-1]:.0f} img/s"
        )
    limit, loader = statistics.median(limits), statistics.median(loaders)
    first = reader.annotation(0)
    result = {
        "synth_frames_per_s": round(synth, 2),
        "synth_frames_per_s_per_core": round(synth / cfg.workers, 2),
        "loader_images_per_s": round(loader, 1),
        "decode_limit_images_per_s": round(limit, 1),
        "ratio": round(loader / limit, 3),
        "decode_limit_opencv_images_per_s": round(statistics.median(opencv), 1),
        "ratio_per_repeat": [round(a / b, 3) for a, b in zip(loaders, limits, strict=True)],
        "workers": cfg.workers,
        "batch_size": cfg.batch_size,
        "image_size": [first["width"], first["height"]],
        "samples": len(reader),
        "mean_jpeg_bytes": round(float(np.mean([len(b) for b in blobs])), 1),
        "repeats": {"decode_limit": [round(x, 1) for x in limits], "loader": [round(x, 1) for x in loaders]},
        "cpu_count": os.cpu_count(),
        "config": asdict(cfg),
    }
    say(f"loader {loader:.0f} img/s vs decode limit {limit:.0f} img/s: ratio {result['ratio']:.2f}")
    return result
