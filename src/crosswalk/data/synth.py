"""``crosswalk data synth``: render driving scenes in parallel and write them, in index order, to shards.

Frames are rendered by a pool of processes but written by this one process in index order, so the shards
(and their sha256) depend only on the seed, the frame count and the scene config, never on ``workers``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from crosswalk.data.loader import exit_with_parent, worker_context
from crosswalk.data.shards import DEFAULT_SHARD_SIZE, ShardWriter
from crosswalk.scenes import SceneConfig, render_frame


@dataclass(frozen=True)
class SynthConfig:
    frames: int = 256
    seed: int = 0
    width: int = 512
    height: int = 288
    workers: int = 2
    shard_size_bytes: int = DEFAULT_SHARD_SIZE


@dataclass
class SynthResult:
    manifest: dict
    seconds: float
    frames_per_s: float
    frames_per_s_per_core: float


_SCENE: SceneConfig | None = None


def _init_worker(scene: SceneConfig) -> None:
    global _SCENE
    _SCENE = scene
    cv2.setNumThreads(1)
    exit_with_parent()


def _render(args: tuple[int, int]) -> tuple[bytes, dict]:
    seed, index = args
    return render_frame(seed, index, _SCENE)


def synthesize(out_dir: str | Path, cfg: SynthConfig, progress: bool = True) -> SynthResult:
    scene = SceneConfig(width=cfg.width, height=cfg.height)
    source = {
        "generator": "crosswalk.scenes",
        "seed": cfg.seed,
        "frames": cfg.frames,
        "scene_config": dataclasses.asdict(scene),
    }
    jobs = [(cfg.seed, i) for i in range(cfg.frames)]
    workers = max(1, cfg.workers)
    start, first = time.perf_counter(), 0.0
    bar = tqdm(total=cfg.frames, desc="synth", unit="frame", disable=not progress)
    with ShardWriter(out_dir, source=source, shard_size_bytes=cfg.shard_size_bytes) as writer:
        if workers == 1:
            _init_worker(scene)
            frames = map(_render, jobs)
            pool = None
        else:
            pool = worker_context().Pool(workers, initializer=_init_worker, initargs=(scene,))
            frames = pool.imap(_render, jobs, chunksize=4)
        try:
            for jpeg, ann in frames:
                first = first or time.perf_counter()
                writer.write(ann["key"], jpeg, ann)
                bar.update()
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    bar.close()
    end = time.perf_counter()
    # Steady-state rate: from the first frame on, so worker start-up (importing torch once) is left out.
    fps = (cfg.frames - 1) / (end - first) if cfg.frames > 1 and end > first else float("nan")
    return SynthResult(writer.manifest, end - start, fps, fps / workers)
