"""crosswalk.evaluate: matching and MR⁻² on hand-worked cases, COCO AP against pycocotools run directly."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from crosswalk.data.schema import make_object
from crosswalk.evaluate import (
    SETUPS,
    evaluate_image,
    evaluate_predictions,
    log_average_miss_rate,
    match_image,
    miss_rate_curve,
    miss_rates_at,
    pedestrian_miss_rates,
    write_plots,
)
from crosswalk.evaluate.coco import coco_ap

CATEGORIES = ("pedestrian", "cyclist", "vehicle")


# ------------------------------------------------------------------ matching


def test_match_image_two_gts_three_detections():
    gts = [[0, 0, 10, 20], [20, 0, 30, 20]]  # A and B, 10 x 20 = 200 px² each
    # Given out of score order; matching runs highest score first: d1 (.9), d2 (.8), d3 (.7).
    dets = [
        [22, 0, 32, 20],  # d3: B ∩ = 8*20 = 160, union 200+200-160 = 240 -> IoU .667 -> TP on B
        [0, 0, 10, 18],  # d1: A ∩ = 10*18 = 180, union 200+180-180 = 200 -> IoU .9 -> TP on A
        [1, 0, 11, 20],  # d2: A ∩ = 9*20 = 180, union 220 -> .818, but A is taken; B ∩ = 0 -> FP (duplicate)
    ]
    tp, fp = match_image(dets, [0.7, 0.9, 0.8], gts, [False, False])
    assert tp.tolist() == [True, False, True]  # d1, d2, d3
    assert fp.tolist() == [False, True, False]


def test_match_image_takes_the_best_iou_among_unmatched_gts():
    gts = [[0, 0, 10, 20], [2, 0, 12, 20]]
    # det [2,0,12,20]: with A ∩ = 8*20 = 160, union 240 -> .667; with B identical -> 1.0 -> takes B.
    # det2 [0,0,10,20] (lower score): A is still free -> IoU 1.0 -> TP. Greedy-by-first-GT would waste A.
    tp, fp = match_image([[2, 0, 12, 20], [0, 0, 10, 20]], [0.9, 0.8], gts, [False, False])
    assert tp.tolist() == [True, True] and not fp.any()


def test_detection_on_an_ignore_region_is_neither_tp_nor_fp():
    region = [0, 0, 100, 100]  # ignore GT, 10 000 px²
    dets = [
        [
            10,
            10,
            30,
            50,
        ],  # 20 x 40 = 800 px² inside: IoU 800/10000 = .08 < .5, but ∩/det = 800/800 = 1 -> absorbed
        [40, 40, 60, 80],  # another 800 px² inside: the same region absorbs it too
        [90, 0, 120, 10],  # 30 x 10 = 300 px², ∩ = 10*10 = 100 -> ∩/det = .333 < .5 -> FP
    ]
    tp, fp = match_image(dets, [0.9, 0.8, 0.7], [region], [True])
    assert tp.tolist() == [False, False, False]
    assert fp.tolist() == [False, False, True]


def test_regular_gt_beats_ignore_region():
    # The detection is an exact match of the regular GT (IoU 1) and lies inside the ignore region (∩/det 1):
    # regular GTs are tried first, so it is a TP.
    tp, fp = match_image([[10, 10, 20, 30]], [0.5], [[0, 0, 50, 50], [10, 10, 20, 30]], [True, False])
    assert tp.tolist() == [True] and fp.tolist() == [False]


def test_setup_makes_out_of_range_gt_ignore_and_drops_detections_by_height():
    reasonable = SETUPS["reasonable"]  # height [50, inf), visibility [0.65, inf)
    gts = [[0, 0, 40, 100], [100, 0, 118, 45]]
    heights, vis = [100.0, 45.0], [0.9, 0.9]  # the 45 px GT is below 50 -> ignore GT in "reasonable"
    dets = [
        [0, 0, 40, 100],  # .9: IoU 1 with the 100 px GT -> TP
        [100, 0, 118, 45],  # .8: 45 px tall >= 50/1.25 = 40 -> kept; on the ignore GT (∩/det 1) -> neither
        [200, 0, 212, 30],  # .7: 30 px tall < 40 -> dropped before matching (expFilter 1.25)
        [300, 0, 340, 100],  # .6: 100 px, on nothing -> FP
    ]
    scores, tp, fp = evaluate_image(dets, [0.9, 0.8, 0.7, 0.6], gts, [False, False], heights, vis, reasonable)
    assert scores.tolist() == [0.9, 0.8, 0.6]
    assert tp.tolist() == [True, False, False]
    assert fp.tolist() == [False, False, True]
    # Under "all" (height >= 20) the 45 px GT counts: the .8 detection is a TP and the 30 px one is kept
    # (30 >= 20/1.25 = 16) and is an FP.
    scores, tp, fp = evaluate_image(
        dets, [0.9, 0.8, 0.7, 0.6], gts, [False, False], heights, vis, SETUPS["all"]
    )
    assert tp.tolist() == [True, True, False, False]
    assert fp.tolist() == [False, False, True, True]


# ------------------------------------------------------------------ MR⁻²


def test_log_average_miss_rate_on_a_hand_built_curve():
    # 10 images, 4 GTs. Detections by score: .9 TP, .85 ignored (neither), .8 FP, .7 TP, .6 FP, .5 TP.
    scores = [0.6, 0.9, 0.5, 0.85, 0.8, 0.7]
    tp = [False, True, True, False, False, True]
    fp = [True, False, False, False, True, False]
    fppi, mr = miss_rate_curve(scores, tp, fp, num_gt=4, num_images=10)
    # Counted: TP FP TP FP TP -> cum TP 1 1 2 2 3, cum FP 0 1 1 2 2.
    np.testing.assert_allclose(fppi, [0.0, 0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(mr, [0.75, 0.75, 0.5, 0.5, 0.25])
    # FPPI points .01 .0178 .0316 .0562 -> last point with FPPI <= them is the first (FPPI 0): .75
    #            .1 .1778             -> third point (FPPI .1): .5
    #            .3162 .5623 1        -> fifth point (FPPI .2): .25
    expected = [0.75] * 4 + [0.5] * 2 + [0.25] * 3
    np.testing.assert_allclose(miss_rates_at(fppi, mr), expected)
    # exp((4 ln .75 + 2 ln .5 + 3 ln .25) / 9) = .75^(4/9) * .5^(8/9) = .87997 * .54002 = .47520
    assert log_average_miss_rate(fppi, mr) == pytest.approx(0.75 ** (4 / 9) * 0.5 ** (8 / 9), rel=1e-12)
    assert log_average_miss_rate(fppi, mr) == pytest.approx(0.47520, abs=5e-5)


def test_fppi_points_before_the_curve_have_miss_rate_one():
    # 10 images, 2 GTs, by score: FP, TP, TP -> FPPI .1 .1 .1, miss rate 1 .5 0.
    fppi, mr = miss_rate_curve([0.9, 0.8, 0.7], [False, True, True], [True, False, False], 2, 10)
    # Points .01 .. .0562 lie before the first point (FPPI .1): miss rate 1 (Dollár's compRoc; the CityPersons
    # Python port would read recall[-1] = 1 there). Points .1 .. 1: the last point, miss rate 0 -> floor 1e-10.
    np.testing.assert_allclose(miss_rates_at(fppi, mr), [1.0] * 4 + [0.0] * 5)
    # exp((4 ln 1 + 5 ln 1e-10) / 9) = 10^(-50/9) = 2.78e-6
    assert log_average_miss_rate(fppi, mr) == pytest.approx(10 ** (-50 / 9), rel=1e-9)


def test_perfect_detector_hits_the_floor_and_no_detections_score_one():
    # 4 TPs, no FP: miss rate 0 at every FPPI point, floored at 1e-10, so MR⁻² = 1e-10 (not 0).
    fppi, mr = miss_rate_curve([0.9, 0.8, 0.7, 0.6], [True] * 4, [False] * 4, num_gt=4, num_images=10)
    assert log_average_miss_rate(fppi, mr) == pytest.approx(1e-10, rel=1e-9)
    # No detections: an empty curve, miss rate 1 everywhere.
    fppi, mr = miss_rate_curve([], [], [], num_gt=4, num_images=10)
    assert len(fppi) == 0 and log_average_miss_rate(fppi, mr) == 1.0
    with pytest.raises(ValueError, match="num_gt"):
        miss_rate_curve([], [], [], num_gt=0, num_images=10)


def _ped(box, vis=0.9, **kw):
    return make_object("pedestrian", box, 640, 480, visibility=vis, **kw)


def _ann(key, objects, lighting="day", weather="clear"):
    return {"key": key, "width": 640, "height": 480, "lighting": lighting, "weather": weather, "camera": None,
            "objects": objects, "extra": {}}  # fmt: skip


def test_pedestrian_miss_rates_over_a_dataset():
    # Image a: pedestrian 100 px tall, 0.9 visible, detected at .6.
    # Image b: pedestrian 60 px, 0.4 visible, detected at .8; an FP 100 px tall at .9; a cyclist detected as
    #          a cyclist (label 1), which the pedestrian evaluation never sees.
    annotations = [
        _ann("a", [_ped([0, 0, 40, 100])]),
        _ann("b", [_ped([0, 0, 24, 60], vis=0.4), make_object("cyclist", [300, 0, 340, 100], 640, 480)]),
    ]
    predictions = [
        {"boxes": [[0, 0, 40, 100]], "scores": [0.6], "labels": [0]},
        {"boxes": [[0, 0, 24, 60], [500, 0, 540, 100], [300, 0, 340, 100]], "scores": [0.8, 0.9, 0.7],
         "labels": [0, 0, 1]},
    ]  # fmt: skip
    mr = pedestrian_miss_rates(predictions, annotations)
    # reasonable: b's pedestrian (vis .4) is ignore and absorbs its detection. By score: .9 FP, .6 TP ->
    #   FPPI .5 .5 (2 images), miss rate 1 0. Points < .5 (seven) come before the curve: 1; .5623 and 1: 0.
    #   MR = exp(2 ln 1e-10 / 9) = 10^(-20/9).
    # heavy (vis [.2, .65]): a's pedestrian is ignore, b's counts: .9 FP, .8 TP -> the same curve.
    # all: both count: .9 FP, .8 TP, .6 TP -> FPPI .5 .5 .5, miss rate 1 .5 0 -> the same nine values.
    # small (height [50, 75]): a is 100 px, b is 0.4 visible -> no pedestrian counts -> nan.
    for name in ("reasonable", "heavy", "all"):
        assert mr[name] == pytest.approx(10 ** (-20 / 9), rel=1e-9), name
    assert math.isnan(mr["small"])
    # Without any detection every setup with pedestrians scores 1.
    empty = [{"boxes": np.zeros((0, 4)), "scores": [], "labels": []}] * 2
    assert pedestrian_miss_rates(empty, annotations)["all"] == 1.0


# ------------------------------------------------------------------ COCO AP


def _random_dataset(seed: int = 0, n: int = 20):
    """GTs of classes 0 and 1 only (class 2 has detections but no GT), jittered detections, false positives
    and a few ignore (crowd) objects."""
    rng = np.random.default_rng(seed)
    annotations, predictions = [], []
    for i in range(n):
        objects, boxes, scores, labels = [], [], [], []
        for _ in range(int(rng.integers(1, 5))):
            x, y, w, h = rng.uniform(0, 500), rng.uniform(0, 350), rng.uniform(8, 120), rng.uniform(16, 120)
            c = int(rng.integers(0, 2))
            ignore = bool(rng.random() < 0.15) or (i == 0 and not objects)  # image 0 surely has one
            objects.append(make_object(CATEGORIES[c], [x, y, x + w, y + h], 640, 480, ignore=ignore))
            if rng.random() < 0.85:
                j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
                scores.append(float(rng.uniform(0.2, 1.0)))
                labels.append(c if rng.random() < 0.9 else 1 - c)
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 500), rng.uniform(0, 350)
            boxes.append([x, y, x + rng.uniform(8, 80), y + rng.uniform(16, 100)])
            scores.append(float(rng.uniform(0.0, 0.7)))
            labels.append(int(rng.integers(0, 3)))
        annotations.append(_ann(f"{i:03d}", objects, lighting=[None, "day", "night"][i % 3]))
        predictions.append({"boxes": np.array(boxes).reshape(-1, 4), "scores": np.array(scores),
                            "labels": np.array(labels)})  # fmt: skip
    return predictions, annotations


def _pycocotools_direct(predictions, annotations, cat_ids=None):
    """COCOeval as its README runs it, on dicts built here independently of crosswalk.evaluate.coco."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, gts, dets = [], [], []
    for i, (pred, ann) in enumerate(zip(predictions, annotations, strict=True)):
        images.append({"id": i + 1, "width": ann["width"], "height": ann["height"]})
        for obj in ann["objects"]:
            x1, y1, x2, y2 = obj["box"]
            gts.append({"id": len(gts) + 1, "image_id": i + 1, "category_id": CATEGORIES.index(obj["category"]) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": int(obj["ignore"])})  # fmt: skip
        for (x1, y1, x2, y2), s, c in zip(pred["boxes"], pred["scores"], pred["labels"], strict=True):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": float(s)})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gts,
                      "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CATEGORIES)]}  # fmt: skip
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("backend", [None, "pycocotools"])
def test_coco_ap_agrees_with_pycocotools(backend):
    predictions, annotations = _random_dataset()
    assert any(o["ignore"] for a in annotations for o in a["objects"])  # crowd regions are exercised
    ours = coco_ap(predictions, annotations, CATEGORIES, backend=backend)
    assert ours["backend"] == (backend or "faster_coco_eval")
    stats = _pycocotools_direct(predictions, annotations)
    assert 0.05 < stats[0] < 0.95  # a non-degenerate case
    assert ours["map"] == pytest.approx(stats[0], abs=1e-6)
    assert ours["map50"] == pytest.approx(stats[1], abs=1e-6)
    for k, name in enumerate(CATEGORIES[:2]):  # each class on its own, COCOeval restricted to that category
        alone = _pycocotools_direct(predictions, annotations, cat_ids=[k + 1])
        assert ours["per_class"][name]["ap"] == pytest.approx(alone[0], abs=1e-6)
        assert ours["per_class"][name]["ap50"] == pytest.approx(alone[1], abs=1e-6)
    # "vehicle" has detections but no GT: precision -1 (pycocotools prints -1); reported nan, out of the mean.
    assert math.isnan(ours["per_class"]["vehicle"]["ap"]) and "vehicle" not in ours["pr"]
    assert len(ours["pr"]["pedestrian"]["precision"]) == 101


def test_coco_ap_without_detections_is_zero():
    _, annotations = _random_dataset(n=3)
    empty = [{"boxes": np.zeros((0, 4)), "scores": [], "labels": []}] * 3
    for backend in (None, "pycocotools"):
        assert coco_ap(empty, annotations, CATEGORIES, backend=backend)["map"] == 0.0


# ------------------------------------------------------------------ everything


def test_evaluate_predictions_and_plots(tmp_path):
    predictions, annotations = _random_dataset(seed=1)
    results = evaluate_predictions(predictions, annotations, CATEGORIES)
    json.dumps(results, allow_nan=False)  # strict JSON: nan became null
    assert results["images"] == 20
    for key in ("map", "map50"):
        assert 0.0 <= results[key] <= 1.0
    for name in ("pedestrian", "cyclist"):
        assert set(results["per_class"][name]) == {"ap", "ap50"}
    assert results["per_class"]["vehicle"]["ap"] is None
    assert set(results["pedestrian_mr"]) == {"reasonable", "small", "heavy", "all"}
    assert set(results["by_condition"]) == {"lighting", "weather", "distance_m", "occlusion"}
    lighting = results["by_condition"]["lighting"]
    assert {b: lighting[b]["images"] for b in lighting} == {"day": 7, "dusk": 0, "night": 6, "unknown": 7}
    assert lighting["dusk"]["recall"] is None
    assert set(results["curves"]["miss_rate"]) == set(SETUPS)
    assert set(results["curves"]["pr"]) == {"pedestrian", "cyclist"}

    paths = write_plots(results, tmp_path / "plots")
    assert [p.name for p in paths] == ["pr_curves.png", "miss_rate.png", "by_condition.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
