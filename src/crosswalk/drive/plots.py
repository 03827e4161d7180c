"""Pictures of a drive: gap and speed over time with the events marked, and a GIF of the camera view.

The GIF shows what the car knew when: each frame carries the boxes of the latest detector result available
at that instant, so with a long latency the boxes visibly trail the person.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from .sim import FrameSource, Run

EVENT_COLOURS = {
    "first detection": "tab:blue",
    "brake decision": "tab:orange",
    "brakes on": "tab:red",
    "stopped": "tab:green",
    "collision": "black",
}


def plot_runs(runs: list[Run], path: str | Path, max_panels: int = 24) -> Path:
    """One panel per run: bumper-to-pedestrian gap (left axis) and speed (right axis) against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs[:max_panels]
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs, strict=False):
        s = run.summary
        step = max(1, len(run.t_s) // 600)
        t, travel, speed = run.t_s[::step], run.travel_m[::step], run.speed_ms[::step]
        gap = s["start_gap_m"] - travel
        ax.plot(t, gap, color="tab:purple", label="gap to pedestrian (m)")
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("gap (m)")
        ax2 = ax.twinx()
        ax2.plot(t, speed * 3.6, color="tab:gray", ls="--", label="speed (km/h)")
        ax2.set_ylabel("speed (km/h)")
        ax2.set_ylim(0, max(5.0, s["speed_kmh"] * 1.1))
        for name, when in run.events.items():
            if when is not None:
                ax.axvline(when, color=EVENT_COLOURS.get(name, "k"), lw=1.0, ls=":", label=name)
        verdict = f"HIT at {s['impact_speed_kmh']:.0f} km/h" if s["collision"] else "no collision"
        ax.set_title(f"{s['name']} @ {s['speed_kmh']:.0f} km/h: {verdict}", fontsize=9)
        ax.legend(fontsize=6, loc="upper right")
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_gif(
    run: Run,
    source: FrameSource,
    path: str | Path,
    max_seconds: float = 8.0,
    gif_fps: float = 10.0,
    scale: float = 0.75,
) -> Path:
    """The camera view along the driven trajectory (braking included), with the latest boxes and a readout.

    At most ``gif_fps`` frames a second, scaled by ``scale``, on a 48-colour palette without dithering:
    sensor noise otherwise defeats GIF's compression (12 MB for 5 s at full size and rate)."""
    from PIL import Image

    fps = source.fps
    s = run.summary
    t_end = min(float(run.t_s[-1]), max_seconds)
    results = sorted(run.processed, key=lambda p: p[2])  # (frame, capture, result time)
    brake_on = run.events.get("brakes on")
    hit = run.events.get("collision")
    frames = []
    every = max(1, round(fps / gif_fps))
    for k in range(0, int(t_end * fps) + 1, every):
        t = k / fps
        i = min(int(round(t / 0.001)), len(run.t_s) - 1)
        image, _ = source.render(t, float(run.travel_m[i]))
        image = np.ascontiguousarray(image)
        latest = [p for p in results if p[2] <= t]
        if latest:
            obs = source.observe(latest[-1][0])
            for det in obs.detections:
                if det["class"] == "pedestrian" and det["score"] >= source.min_score:
                    x1, y1, x2, y2 = (int(round(c)) for c in det["box"])
                    cv2.rectangle(image, (x1, y1), (x2, y2), (255, 60, 60), 1)
        speed = float(run.speed_ms[i]) * 3.6
        cv2.rectangle(image, (0, 0), (image.shape[1], 18), (0, 0, 0), -1)
        text = f"{s['name']}  {speed:5.1f} km/h  t {t:4.2f} s  latency {s['latency_ms'] or 0:.0f} ms"
        cv2.putText(image, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
        if hit is not None and t >= hit:
            cv2.putText(
                image, "COLLISION", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 0, 0), 2, cv2.LINE_AA
            )
        elif brake_on is not None and t >= brake_on:
            cv2.putText(image, "BRAKE", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 140, 0), 2, cv2.LINE_AA)
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frames.append(Image.fromarray(small).quantize(48, dither=Image.Dither.NONE))
        if hit is not None and t >= hit + 0.5:
            break
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 * every / fps), loop=0)
    return path
