"""Dataset inspection: counts worked by hand, and a montage of the expected size."""

from __future__ import annotations

import json

import cv2
import numpy as np

from crosswalk.data.inspect import draw_montage, format_summary, pick_montage_samples, summarize
from crosswalk.data.schema import make_object


def _ann(key, lighting, weather, objects, **extra):
    return {
        "key": key,
        "width": 64,
        "height": 36,
        "lighting": lighting,
        "weather": weather,
        "camera": None,
        "objects": objects,
        "extra": extra,
    }


def _hand_built() -> list[dict]:
    W, H = 64, 36
    ped_small = make_object("pedestrian", [1, 1, 5, 11], W, H, kind="adult", visibility=0.9, distance_m=30.0)
    ped_tall = make_object(
        "pedestrian", [10, -30, 30, 30], W, H, kind="child", visibility=0.5, distance_m=5.0
    )
    ped_hidden = make_object(
        "pedestrian", [40, 0, 44, 30], W, H, kind="adult", visibility=0.1, distance_m=None
    )
    car = make_object("vehicle", [0, 20, 60, 35], W, H, kind="car", visibility=1.0, distance_m=12.0)
    bike = make_object("cyclist", [20, 5, 26, 65], W, H, kind="cyclist", visibility=0.7, distance_m=90.0)
    poster = make_object("pedestrian", [50, 2, 60, 30], W, H, kind="poster", ignore=True)
    return [
        _ann("a", "day", "clear", [ped_small, car]),
        _ann("b", "night", "fog", [ped_tall, ped_hidden, poster], zebra=True),
        _ann("c", "dusk", "rain", [bike], blur_px=3),
    ]


def test_summarize_counts_by_hand():
    stats = summarize(_hand_built())
    json.dumps(stats)  # serialisable as is
    assert stats["frames"] == 3
    assert stats["objects"] == {"cyclist": 1, "pedestrian": 3, "vehicle": 1}
    assert stats["ignore"] == 1
    assert stats["kinds"] == {"adult": 2, "car": 1, "child": 1, "cyclist": 1, "poster": 1}
    assert stats["lighting"] == {"day": 1, "dusk": 1, "night": 1}
    assert stats["weather"] == {"clear": 1, "fog": 1, "rain": 1}
    # Heights 10, 60, 30, 15, 60 px (the poster is ignored).
    assert stats["height_px"] == {"<20": 2, "20-50": 1, "50-75": 2, "75-150": 0, ">=150": 0}
    assert stats["pedestrian_height_px"] == {"<20": 1, "20-50": 1, "50-75": 1, "75-150": 0, ">=150": 0}
    assert stats["visibility"] == {"<0.2": 1, "0.2-0.65": 1, ">=0.65": 3}
    assert stats["distance_m"] == {"<10": 1, "10-20": 1, "20-40": 1, "40-80": 0, ">=80": 1, "unknown": 1}
    assert stats["frames_without_pedestrians"] == 1
    assert stats["truncated"] == 2  # the tall child and the cyclist leave the image
    assert stats["pedestrians_per_frame"] == 1.0
    text = format_summary(stats)
    assert "frames 3" in text and "pedestrian" in text and "night" in text


def test_pick_montage_samples_covers_every_condition_and_kind():
    anns = [_ann(f"d{i}", "day", "clear", []) for i in range(10)] + _hand_built()
    picked = pick_montage_samples(anns, n=4)
    assert len(picked) == len(set(picked)) == 4
    chosen = [anns[i] for i in picked]
    assert {a["lighting"] for a in chosen} == {"day", "dusk", "night"}
    assert {a["weather"] for a in chosen} == {"clear", "fog", "rain"}
    kinds = {o["kind"] for a in chosen for o in a["objects"]}
    assert kinds == {"adult", "car", "child", "cyclist", "poster"}
    assert sorted(pick_montage_samples(anns[:2], n=16)) == [0, 1]


def test_draw_montage_writes_a_png_of_the_expected_size(tmp_path):
    anns = _hand_built()
    rng = np.random.default_rng(0)
    samples = [(rng.integers(0, 255, (36, 64, 3), dtype=np.uint8), a) for a in anns + anns[:2]]
    path = draw_montage(samples, tmp_path / "sub" / "montage.png", columns=2, tile_width=128)
    image = cv2.imread(str(path))
    # Legend strip 26 px, then 3 rows of (72 px tile + 20 px caption); 2 columns of 128 px.
    assert image.shape == (26 + 3 * (72 + 20), 256, 3)
