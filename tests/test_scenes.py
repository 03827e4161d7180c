"""The procedural scene generator: determinism, the annotation contract, geometry, occlusion and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crosswalk.data.schema import LIGHTING, WEATHER, validate_annotation
from crosswalk.scenes import (
    Camera,
    SceneConfig,
    WorldObject,
    render_frame,
    render_scene,
    sample_pedestrian,
    sample_scene,
    sample_vehicle,
)

SMALL = SceneConfig(width=256, height=144)
KINDS = {"adult", "child", "poster", "mannequin", "cyclist", "car", "van", "truck", "bus"}


@pytest.fixture(scope="module")
def frames() -> list[tuple[bytes, dict]]:
    """60 small frames shared by the statistical tests (about a second to render)."""
    return [render_frame(11, i, SMALL) for i in range(60)]


def test_same_seed_and_index_give_identical_bytes_and_annotation():
    a_jpeg, a_ann = render_frame(3, 17, SMALL)
    b_jpeg, b_ann = render_frame(3, 17, SMALL)
    assert a_jpeg == b_jpeg
    assert a_ann == b_ann
    assert a_ann["key"] == "000000017"
    c_jpeg, c_ann = render_frame(3, 18, SMALL)
    assert c_jpeg != a_jpeg
    assert c_ann != a_ann


def test_every_annotation_meets_the_schema(frames):
    for jpeg, ann in frames:
        validate_annotation(ann)
        assert jpeg[:2] == b"\xff\xd8"  # a JPEG
        extra = ann["extra"]
        assert extra["generator"] == "crosswalk.scenes/1"
        assert 60 <= extra["jpeg_quality"] <= 95
        assert {"seed", "index", "zebra", "noise_sigma", "blur_px"} <= set(extra)
        assert (ann["width"], ann["height"]) == (256, 144)


def test_a_sliver_of_visible_pixels_rounding_to_zero_width_drops_the_object():
    # seed 0 frame 799 at the default size had an object whose visible box was under 0.001 px wide, so the
    # 3-decimal rounding made it empty and `data synth --frames 2048` stopped at that frame
    _, ann = render_frame(0, 799)
    validate_annotation(ann)
    assert all(o["visible_box"][2] > o["visible_box"][0] for o in ann["objects"])


def test_ground_point_projects_to_the_hand_computed_row():
    cam = Camera(height_m=1.5, pitch_deg=0.0, roll_deg=0.0, hfov_deg=90.0, width=256, height=144)
    f = cam.focal_px
    assert f == pytest.approx(128.0)  # (256 / 2) / tan(45 deg)
    for d in (5.0, 12.5, 40.0):
        uv, depth = cam.project(np.array([[0.0, d, 0.0]]))
        assert uv[0, 0] == pytest.approx(cam.cx)
        assert uv[0, 1] == pytest.approx(cam.cy + f * 1.5 / d)
        assert depth[0] == pytest.approx(d)
        assert cam.ground_distance_from_row(cam.cy + f * 1.5 / d) == pytest.approx(d)
    assert math.isinf(cam.ground_distance_from_row(cam.cy - 1.0))  # above the horizon


@pytest.mark.parametrize("pitch, roll", [(3.0, 0.0), (1.0, -2.0), (4.5, 1.7)])
def test_ground_distance_round_trip_with_pitch_and_roll(pitch, roll):
    cam = Camera(height_m=1.9, pitch_deg=pitch, roll_deg=roll, hfov_deg=70.0, width=512, height=288)
    pts = np.array([[x, d, 0.0] for x in (-4.0, 0.0, 3.0) for d in (6.0, 15.0, 33.0)])
    uv, _ = cam.project(pts)
    got = cam.ground_distance_from_row(uv[:, 1], uv[:, 0])
    np.testing.assert_allclose(got, pts[:, 1], rtol=1e-9)


def test_box_bottom_gives_the_pedestrian_distance(frames):
    """The vehicle loop's monocular estimate: ground-plane distance of the box's bottom edge."""
    errors = []
    for _, ann in frames:
        cam = Camera(
            **{k: ann["camera"][k] for k in ("height_m", "pitch_deg", "roll_deg", "hfov_deg")},
            width=ann["width"],
            height=ann["height"],
        )
        for obj in ann["objects"]:
            if obj["kind"] in ("adult", "child") and obj["visibility"] > 0.95 and obj["truncation"] == 0:
                if 10.0 <= obj["distance_m"] <= 40.0:
                    x1, _, x2, y2 = obj["box"]
                    estimate = cam.ground_distance_from_row(y2, (x1 + x2) / 2)
                    errors.append(abs(estimate - obj["distance_m"]) / obj["distance_m"])
    assert len(errors) >= 10
    # Walking feet sit up to ~0.4 m ahead of the body's foot point: a few percent at 10 m.
    assert max(errors) < 0.06
    assert float(np.mean(errors)) < 0.02


def _street(rng_seed: int = 0):
    scene = sample_scene(np.random.default_rng(rng_seed), SMALL)
    scene.lighting, scene.weather, scene.fog_visibility_m, scene.rain_streaks = "day", "clear", None, 0
    scene.camera = Camera(height_m=1.5, pitch_deg=2.0, roll_deg=0.0, hfov_deg=60.0, width=256, height=144)
    scene.objects = []
    return scene


def test_pedestrian_behind_a_van_is_mostly_hidden():
    rng = np.random.default_rng(4)
    scene = _street()
    person = sample_pedestrian(rng, 0.0, 20.0, 180.0, walking=False)
    scene.objects = [person]
    _, alone = render_scene(scene)
    (seen,) = [o for o in alone["objects"] if o["kind"] == "adult"]
    assert seen["visibility"] > 0.95

    van = sample_vehicle(rng, "van", 0.0, 13.0, 0.0)
    van.height_m, van.width_m = 2.4, 2.0
    scene.objects = [person, van]
    _, hidden = render_scene(scene)
    people = [o for o in hidden["objects"] if o["kind"] == "adult"]
    assert not people or people[0]["visibility"] < 0.3
    assert any(o["kind"] == "van" and o["visibility"] > 0.95 for o in hidden["objects"])


def test_unannotated_pole_occludes_too():
    scene = _street()
    person = sample_pedestrian(np.random.default_rng(1), 0.0, 12.0, 180.0, walking=False)
    pole = WorldObject(kind="bollard", x_m=0.0, y_m=8.0, height_m=3.0, colours={"body": (60, 60, 60)})
    scene.objects = [person]
    full = render_scene(scene)[1]["objects"][0]["visibility"]
    scene.objects = [person, pole]
    (partly,) = render_scene(scene)[1]["objects"]
    assert partly["visibility"] < full - 0.05


def test_moving_camera_keeps_the_world_fixed():
    scene = sample_scene(np.random.default_rng([5, 1]), SMALL)
    _, here = render_scene(scene)
    _, later = render_scene(scene, ego_y_m=4.0)
    before = {o["track_id"]: o["distance_m"] for o in here["objects"]}
    after = {o["track_id"]: o["distance_m"] for o in later["objects"]}
    common = set(before) & set(after)
    assert common
    for track in common:
        assert after[track] == pytest.approx(before[track] - 4.0, abs=1e-3)
    assert all(d > 0 for d in after.values())


def test_every_condition_and_kind_appears(frames):
    anns = [a for _, a in frames]
    assert {a["lighting"] for a in anns} == set(LIGHTING)
    assert {a["weather"] for a in anns} == set(WEATHER)
    kinds = {o["kind"] for a in anns for o in a["objects"]}
    assert KINDS <= kinds, f"missing kinds: {KINDS - kinds}"
    assert any(a["extra"]["zebra"] for a in anns)
    assert any(not a["extra"]["zebra"] for a in anns)
    peds = [o for a in anns for o in a["objects"] if o["category"] == "pedestrian" and not o["ignore"]]
    assert sum(15 <= o["height_px"] * 2 <= 150 for o in peds) > len(peds) / 3  # 15-150 px at 512 wide
    assert any(o["visibility"] < 0.65 for o in peds)  # occluded people exist


def test_lookalikes_are_ignore_regions(frames):
    lookalikes = [o for _, a in frames for o in a["objects"] if o["kind"] in ("poster", "mannequin")]
    assert lookalikes
    assert all(o["ignore"] and o["category"] == "pedestrian" for o in lookalikes)
    real = [o for _, a in frames for o in a["objects"] if o["kind"] in ("adult", "child", "cyclist", "car")]
    assert not any(o["ignore"] for o in real)


def test_config_rejects_unknown_keys_and_bad_ranges():
    with pytest.raises(ValueError, match="valid keys"):
        SceneConfig.from_dict({"widht": 320})
    with pytest.raises(ValueError, match="hfov_range_deg"):
        SceneConfig(hfov_range_deg=(90.0, 50.0))
    assert SceneConfig.from_dict({"width": 320, "jpeg_quality_range": [70, 80]}).jpeg_quality_range == (
        70,
        80,
    )
