"""Look at a dataset before training on it: counts and histograms, and a labelled montage of chosen frames.

Pure functions over annotation dicts (crosswalk.data.schema) and images; no shard I/O here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from .schema import LIGHTING, WEATHER

# Bins follow the Caltech/CityPersons evaluation splits: "reasonable" is >= 50 px tall and >= 0.65 visible.
HEIGHT_BINS_PX = (20.0, 50.0, 75.0, 150.0)
VISIBILITY_BINS = (0.2, 0.65)
DISTANCE_BINS_M = (10.0, 20.0, 40.0, 80.0)
CLASS_RGB = {"pedestrian": (255, 70, 70), "cyclist": (255, 205, 0), "vehicle": (70, 160, 255)}
IGNORE_RGB = (255, 0, 255)
OTHER_RGB = (160, 255, 160)


def _bin_labels(edges: Sequence[float], unit: str = "") -> list[str]:
    fmt = [f"{e:g}" for e in edges]
    return (
        [f"<{fmt[0]}{unit}"]
        + [f"{a}-{b}{unit}" for a, b in zip(fmt, fmt[1:], strict=False)]
        + [f">={fmt[-1]}{unit}"]
    )


def _bin(value: float, edges: Sequence[float], labels: list[str]) -> str:
    for edge, label in zip(edges, labels, strict=False):
        if value < edge:
            return label
    return labels[-1]


def summarize(annotations: Iterable[dict]) -> dict:
    """Dataset statistics (JSON-serialisable). Histograms count non-ignore objects only."""
    h_labels, v_labels, d_labels = (
        _bin_labels(HEIGHT_BINS_PX),
        _bin_labels(VISIBILITY_BINS),
        _bin_labels(DISTANCE_BINS_M),
    )
    frames, ignore, truncated, no_ped = 0, 0, 0, 0
    categories, kinds, lighting, weather = Counter(), Counter(), Counter(), Counter()
    heights, vis, dist = Counter({k: 0 for k in h_labels}), Counter({k: 0 for k in v_labels}), Counter()
    ped_heights = Counter({k: 0 for k in h_labels})
    for ann in annotations:
        frames += 1
        lighting[str(ann.get("lighting"))] += 1
        weather[str(ann.get("weather"))] += 1
        peds = 0
        for obj in ann.get("objects", []):
            kinds[str(obj.get("kind", obj["category"]))] += 1
            if obj.get("ignore"):
                ignore += 1
                continue
            categories[obj["category"]] += 1
            h = float(obj.get("height_px", obj["box"][3] - obj["box"][1]))
            heights[_bin(h, HEIGHT_BINS_PX, h_labels)] += 1
            if obj["category"] == "pedestrian":
                peds += 1
                ped_heights[_bin(h, HEIGHT_BINS_PX, h_labels)] += 1
            vis[_bin(float(obj.get("visibility", 1.0)), VISIBILITY_BINS, v_labels)] += 1
            d = obj.get("distance_m")
            dist["unknown" if d is None else _bin(float(d), DISTANCE_BINS_M, d_labels)] += 1
            truncated += float(obj.get("truncation", 0.0)) > 0.0
        no_ped += peds == 0
    n_obj = sum(categories.values())
    return {
        "frames": frames,
        "objects": dict(sorted(categories.items())),
        "objects_per_frame": round(n_obj / frames, 3) if frames else 0.0,
        "pedestrians_per_frame": round(categories["pedestrian"] / frames, 3) if frames else 0.0,
        "frames_without_pedestrians": no_ped,
        "ignore": ignore,
        "truncated": truncated,
        "kinds": dict(sorted(kinds.items())),
        "lighting": {k: lighting[k] for k in (*LIGHTING, "None") if lighting[k]},
        "weather": {k: weather[k] for k in (*WEATHER, "None") if weather[k]},
        "height_px": {k: heights[k] for k in h_labels},
        "pedestrian_height_px": {k: ped_heights[k] for k in h_labels},
        "visibility": {k: vis[k] for k in v_labels},
        "distance_m": {k: dist[k] for k in (*d_labels, "unknown") if dist[k] or k != "unknown"},
    }


def format_summary(stats: dict) -> str:
    """A plain-text report of ``summarize``'s output, one section per statistic."""
    lines = [
        f"frames {stats['frames']}   objects/frame {stats['objects_per_frame']}   "
        f"pedestrians/frame {stats['pedestrians_per_frame']}   frames without pedestrians "
        f"{stats['frames_without_pedestrians']}   ignore regions {stats['ignore']}   "
        f"truncated {stats['truncated']}"
    ]
    for name in (
        "objects",
        "kinds",
        "lighting",
        "weather",
        "height_px",
        "pedestrian_height_px",
        "visibility",
        "distance_m",
    ):
        table = stats.get(name) or {}
        total = sum(table.values()) or 1
        lines.append(f"\n{name}")
        width = max((len(str(k)) for k in table), default=0)
        for key, count in table.items():
            bar = "#" * int(round(30 * count / total))
            lines.append(f"  {str(key):<{width}}  {count:>7d}  {100 * count / total:5.1f}%  {bar}")
    return "\n".join(lines)


def _features(ann: dict) -> set[str]:
    """What a frame shows, for coverage: conditions, kinds, ignore regions, occlusion, size extremes."""
    out = {f"lighting:{ann.get('lighting')}", f"weather:{ann.get('weather')}"}
    peds = 0
    for obj in ann.get("objects", []):
        out.add(f"kind:{obj.get('kind', obj['category'])}")
        if obj.get("ignore"):
            out.add("ignore")
            continue
        peds += obj["category"] == "pedestrian"
        v, h = float(obj.get("visibility", 1.0)), float(obj.get("height_px", 0.0))
        if v < 0.2:
            out.add("occlusion:heavy")
        elif v < 0.65:
            out.add("occlusion:partial")
        if float(obj.get("truncation", 0.0)) > 0.05:
            out.add("truncated")
        if obj["category"] == "pedestrian":
            out.add("ped:small" if h < 50 else ("ped:large" if h >= 150 else "ped:medium"))
    extra = ann.get("extra") or {}
    if extra.get("zebra"):
        out.add("zebra")
    if extra.get("blur_px"):
        out.add("motion_blur")
    if peds == 0:
        out.add("no_pedestrians")
    return out


def pick_montage_samples(annotations: Sequence[dict], n: int = 16) -> list[int]:
    """Indices of up to ``n`` frames chosen greedily to cover every condition and object kind present.

    Each step takes the frame showing the most not-yet-covered features (ties: more objects, then lower
    index); once everything is covered it keeps filling with the least-represented lighting/weather pair."""
    feats = [_features(a) for a in annotations]
    chosen: list[int] = []
    covered: set[str] = set()
    while len(chosen) < min(n, len(annotations)):
        best, best_key = None, None
        pairs = Counter((annotations[i].get("lighting"), annotations[i].get("weather")) for i in chosen)
        for i, f in enumerate(feats):
            if i in chosen:
                continue
            a = annotations[i]
            key = (
                len(f - covered),
                -pairs[(a.get("lighting"), a.get("weather"))],
                len(a.get("objects", [])),
                -i,
            )
            if best_key is None or key > best_key:
                best, best_key = i, key
        chosen.append(best)
        covered |= feats[best]
    return chosen


def draw_montage(
    samples: Sequence[tuple[np.ndarray, dict]], path: str | Path, columns: int = 4, tile_width: int = 512
) -> Path:
    """Write a PNG grid of RGB images with their boxes: full box dashed, visible box solid, ignore hatched."""
    if not samples:
        raise ValueError("draw_montage needs at least one (image, annotation) sample")
    columns = max(1, min(columns, len(samples)))
    h0, w0 = samples[0][0].shape[:2]
    tile_h = int(round(h0 * tile_width / w0))
    caption_h, legend_h = 20, 26
    rows = math.ceil(len(samples) / columns)
    sheet = np.full((legend_h + rows * (tile_h + caption_h), columns * tile_width, 3), 24, np.uint8)
    _legend(sheet[:legend_h])
    for n, (image, ann) in enumerate(samples):
        r, c = divmod(n, columns)
        y, x = legend_h + r * (tile_h + caption_h), c * tile_width
        tile = cv2.resize(image, (tile_width, tile_h), interpolation=cv2.INTER_AREA)
        scale = tile_width / image.shape[1]
        for obj in ann.get("objects", []):
            _draw_object(tile, obj, scale)
        sheet[y : y + tile_h, x : x + tile_width] = tile
        peds = sum(o["category"] == "pedestrian" and not o.get("ignore") for o in ann.get("objects", []))
        text = f"{ann.get('key')}  {ann.get('lighting')}/{ann.get('weather')}  ped {peds}  "
        text += f"obj {len(ann['objects'])}"
        cv2.putText(
            sheet,
            text,
            (x + 4, y + tile_h + 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.42,
            (235, 235, 235),
            1,
            cv2.LINE_AA,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write montage to {path}")
    return path


def _draw_object(tile: np.ndarray, obj: dict, scale: float) -> None:
    colour = CLASS_RGB.get(obj["category"], OTHER_RGB)
    x1, y1, x2, y2 = (v * scale for v in obj["box"])
    _dashed_rect(tile, x1, y1, x2, y2, colour)
    if obj.get("visible_box") is not None:
        vx1, vy1, vx2, vy2 = (int(round(v * scale)) for v in obj["visible_box"])
        cv2.rectangle(tile, (vx1, vy1), (vx2 - 1, vy2 - 1), colour, 1, cv2.LINE_AA)
    if obj.get("ignore"):
        H, W = tile.shape[:2]
        ix1, iy1 = max(int(x1), 0), max(int(y1), 0)
        ix2, iy2 = min(int(math.ceil(x2)), W), min(int(math.ceil(y2)), H)
        if ix2 > ix1 and iy2 > iy1:
            roi = tile[iy1:iy2, ix1:ix2].copy()  # lines drawn in the crop are clipped to the box
            h, w = roi.shape[:2]
            for k in range(-h, w, 6):
                cv2.line(roi, (k, h), (k + h, 0), IGNORE_RGB, 1, cv2.LINE_AA)
            tile[iy1:iy2, ix1:ix2] = roi


def _dashed_rect(img: np.ndarray, x1: float, y1: float, x2: float, y2: float, colour, dash: int = 4) -> None:
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    for (ax, ay), (bx, by) in zip(corners, corners[1:], strict=False):
        length = math.hypot(bx - ax, by - ay)
        steps = max(1, int(length // dash))
        for s in range(0, steps, 2):
            t0, t1 = s / steps, min(1.0, (s + 1) / steps)
            p0 = (int(round(ax + (bx - ax) * t0)), int(round(ay + (by - ay) * t0)))
            p1 = (int(round(ax + (bx - ax) * t1)), int(round(ay + (by - ay) * t1)))
            cv2.line(img, p0, p1, colour, 1)


def _legend(strip: np.ndarray) -> None:
    x = 6
    items = [(name, rgb) for name, rgb in CLASS_RGB.items()] + [("ignore (hatched)", IGNORE_RGB)]
    for name, rgb in items:
        cv2.rectangle(strip, (x, 7), (x + 12, 19), rgb, -1)
        cv2.putText(
            strip, name, (x + 16, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA
        )
        x += 22 + 9 * len(name)
    cv2.putText(
        strip,
        "solid: visible box   dashed: full box",
        (x + 10, 18),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (200, 200, 200),
        1,
        cv2.LINE_AA,
    )


def inspect_dataset(data_dir: str | Path, montage: str | Path | None = None, frames: int = 16) -> dict:
    """Print the statistics of a shard dataset and optionally write a montage that covers its conditions."""
    from .shards import ShardReader

    reader = ShardReader(data_dir)
    annotations = list(reader.annotations())
    stats = summarize(annotations)
    print(format_summary(stats))
    if montage is not None:
        chosen = pick_montage_samples(annotations, frames)
        samples = []
        for i in chosen:
            image = cv2.imdecode(np.frombuffer(reader.image_bytes(i), np.uint8), cv2.IMREAD_COLOR_RGB)
            samples.append((image, annotations[i]))
        path = draw_montage(samples, montage)
        print(f"montage of {len(samples)} frames: {path}")
    return stats
