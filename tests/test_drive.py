"""The vehicle loop: physics, ground-plane geometry and the decision rule on hand-worked cases; the loop with
a perfect detector; determinism with the real model; and the same drive over HTTP."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from crosswalk.drive.perception import Track, Tracker, TrackerConfig, box_ground_point, ground_point
from crosswalk.drive.physics import G_MS2, CarShape, ego_motion, outcome, stopping_distance_m
from crosswalk.drive.policy import PolicyConfig, conflict, corridor_interval, decide, entering_velocities
from crosswalk.drive.scenario import CASES, ScenarioSpec, build_world, parse_scenarios
from crosswalk.drive.sim import DriveConfig, FrameSource, simulate
from crosswalk.drive.sweep import drive_sweep, format_tables, max_safe_latency_ms
from crosswalk.scenes import Camera

SMALL_CAMERA = Camera(height_m=1.5, pitch_deg=2.0, roll_deg=0.0, hfov_deg=60.0, width=256, height=144)


# ---- physics -----------------------------------------------------------------------------------------


def test_stopping_distance_is_reaction_travel_plus_v_squared_over_2a():
    # 50 km/h = 13.888.. m/s at 0.7 g = 6.8647 m/s^2 after 0.15 s: 2.0833 m + 192.90 / 13.729 = 16.134 m.
    v, a = 50 / 3.6, 0.7 * G_MS2
    assert stopping_distance_m(v, a, 0.15) == pytest.approx(2.0833 + 14.0505, abs=1e-3)
    # infra.md §6's table: braking alone from 30 km/h at 0.7 g is 5.1 m.
    assert stopping_distance_m(30 / 3.6, a) == pytest.approx(5.06, abs=0.01)
    with pytest.raises(ValueError):
        stopping_distance_m(10.0, 0.0)


def test_braking_integration_stops_where_the_formula_says():
    v, a, t_brake = 20.0, 8.0, 1.0
    t = np.linspace(0.0, 5.0, 5001)
    travel, speed = ego_motion(t, v, a, t_brake)
    assert travel[-1] == pytest.approx(v * t_brake + v * v / (2 * a))  # 20 + 25 = 45 m
    assert speed[0] == v and speed[-1] == 0.0
    assert travel[np.searchsorted(t, 2.0)] == pytest.approx(20 + 20 * 1 - 0.5 * 8 * 1)  # 36 m


def test_outcome_collision_and_clearance():
    car = CarShape(camera_to_bumper_m=2.0, length_m=4.5, width_m=1.8)
    t = np.arange(0.0, 6.0, 0.001)
    # Pedestrian standing in the lane 40 m ahead of the camera: contact when the bumper reaches 39.75 m.
    hit, _, _ = outcome(t, 10.0, 7.0, None, np.zeros_like(t), 40.0, 0.25, car)
    assert (
        hit.collision and hit.collision_s == pytest.approx(3.775, abs=2e-3) and hit.impact_speed_kmh == 36.0
    )
    # Braking at t = 1 s stops after 10 + 100 / 14 = 17.14 m; gap 39.75 - 2 - 17.14 = 20.61 m.
    safe, _, _ = outcome(t, 10.0, 7.0, 1.0, np.zeros_like(t), 40.0, 0.25, car)
    assert not safe.collision and safe.stop_gap_m == pytest.approx(20.607, abs=1e-2)
    assert safe.min_gap_m == pytest.approx(20.607, abs=1e-2)


# ---- geometry ----------------------------------------------------------------------------------------


def test_ground_distance_from_a_box_on_a_known_projection():
    # Level camera, hfov 90 deg on 512 px: f = 256 px, cy = 144. Feet 25.6 px below the centre row are at
    # d = h f / dv = 1.5 * 256 / 25.6 = 15 m; a column 51.2 px right of centre is x = d * 51.2 / 256 = 3 m.
    cam = Camera(height_m=1.5, pitch_deg=0.0, hfov_deg=90.0, width=512, height=288)
    assert cam.focal_px == pytest.approx(256.0)
    x, d = box_ground_point(cam, [256 + 51.2 - 5, 100, 256 + 51.2 + 5, 144 + 25.6])
    assert d == pytest.approx(15.0) and x == pytest.approx(3.0)
    assert math.isinf(ground_point(cam, 256.0, 140.0)[1])  # above the horizon: no ground


def test_ground_point_inverts_the_pitched_projection():
    cam = Camera(height_m=1.4, pitch_deg=3.0, hfov_deg=60.0, width=512, height=288)
    points = np.array([[-2.0, 8.0, 0.0], [1.5, 20.0, 0.0], [3.0, 45.0, 0.0]])
    uv, _ = cam.project(points)
    x, d = ground_point(cam, uv[:, 0], uv[:, 1])
    np.testing.assert_allclose(np.stack([x, d], 1), points[:, :2], rtol=1e-9)
    # The scene package's own row formula agrees on the forward distance.
    np.testing.assert_allclose(cam.ground_distance_from_row(uv[:, 1], uv[:, 0]), d, rtol=1e-9)


def test_tracker_recovers_a_walkers_lateral_speed():
    cam = Camera(height_m=1.5, pitch_deg=2.0, hfov_deg=60.0, width=512, height=288)
    tracker = Tracker(cam, TrackerConfig())
    for k in range(12):  # 1.4 m/s towards the lane, 25 m ahead of a car driving 10 m/s, 10 fps
        t = k / 10
        ego = 10.0 * t
        x, y = 4.0 - 1.4 * t, 25.0
        (u0, v0), (u1, v1) = cam.project(np.array([[x, y, 0.0], [x, y, 1.7]]), ego)[0]
        box = [u0 - 0.2 * (v0 - v1), v1, u0 + 0.2 * (v0 - v1), v0]
        tracker.update([{"box": box, "score": 0.9, "label": 0, "class": "pedestrian"}], t, ego)
    (track,) = tracker.confirmed()
    assert track.state[2] == pytest.approx(-1.4, abs=0.15)
    assert track.predict(1.1) == pytest.approx([4.0 - 1.4 * 1.1, 25.0], abs=0.1)


# ---- decision rule -----------------------------------------------------------------------------------


def test_corridor_interval_by_hand():
    assert corridor_interval(3.0, -1.5, 1.4) == pytest.approx((1.6 / 1.5, 4.4 / 1.5))
    assert corridor_interval(0.5, 0.0, 1.4) == (0.0, math.inf)  # standing in the lane
    assert corridor_interval(3.0, 0.0, 1.4) == (math.inf, math.inf)  # standing on the curb
    assert corridor_interval(3.0, +1.0, 1.4) == (math.inf, math.inf)  # walking away


def test_decision_rule_on_hand_worked_cases():
    car, cfg = CarShape(camera_to_bumper_m=2.0, length_m=4.5, width_m=1.8), PolicyConfig(lateral_margin_m=0.5)
    # Person 22.25 m ahead of the camera (20 m from the bumper, radius 0.25); car at 10 m/s: TTC = 2 s.
    # Walking in at 1.5 m/s from x = 3: inside |x| <= 1.4 from 1.07 s to 2.93 s, which contains 2 s.
    hit, ttc, distance, t_in, t_out = conflict(3.0, 22.25, -1.5, 0.0, 10.0, car, horizon_s=3.0, cfg=cfg)
    assert hit and ttc == pytest.approx(2.0) and distance == pytest.approx(20.0)
    assert (t_in, t_out) == pytest.approx((1.6 / 1.5, 4.4 / 1.5))
    assert not conflict(3.0, 22.25, -1.5, 0.0, 10.0, car, horizon_s=1.5, cfg=cfg)[0]  # beyond the horizon
    assert not conflict(3.0, 22.25, 0.0, 0.0, 10.0, car, horizon_s=3.0, cfg=cfg)[0]  # waiting at the curb
    # Walking fast (3 m/s from x = 3) leaves the corridor at 1.47 s, before the car arrives (2 s): no conflict.
    assert not conflict(3.0, 22.25, -3.0, 0.0, 10.0, car, horizon_s=3.0, cfg=cfg)[0]


def test_entering_velocities_by_hand():
    # From x = 3 into |x| <= 1.4 between t = 1 s and t = 2 s: at 1 s it takes -1.6..-4.4 m/s, at 2 s -0.8..-2.2.
    assert entering_velocities(3.0, 1.4, 1.0, 2.0) == pytest.approx((-4.4, -0.8))
    assert entering_velocities(-3.0, 1.4, 1.0, 2.0) == pytest.approx((0.8, 4.4))  # from the left
    assert entering_velocities(0.5, 1.4, 1.0, 2.0) == (-math.inf, math.inf)  # already in the lane


def test_decision_weighs_the_tracks_velocity_uncertainty():
    car = CarShape(camera_to_bumper_m=2.0, length_m=4.5, width_m=1.8)

    def track(vx, sigma):  # a person 22.25 m ahead at x = 3 (TTC 2 s at 10 m/s; passing takes 0.5 s)
        cov = np.diag([0.1, 0.1, sigma**2, 0.1])
        return Track(0, np.array([3.0, 22.25, vx, 0.0]), cov, t_s=0.0)

    # Entering needs vx <= (1.4 - 3) / 2.5 = -0.64 m/s. An estimate of -0.3 +- 0.8 m/s allows it at 0.5 sigma.
    cfg = PolicyConfig(lateral_margin_m=0.5, motion_sigmas=0.5)
    assert decide([track(-0.3, 0.8)], 0.0, 0.0, 10.0, car, horizon_s=3.0, cfg=cfg) is not None
    assert decide([track(-0.3, 0.5)], 0.0, 0.0, 10.0, car, horizon_s=3.0, cfg=cfg) is None  # -0.55 at most
    assert decide([track(-0.3, 0.8)], 0.0, 0.0, 10.0, car, 3.0, PolicyConfig(motion_sigmas=0.0)) is None
    assert (
        decide([track(0.0, 2.0)], 0.0, 0.0, 10.0, car, horizon_s=1.5, cfg=cfg) is None
    )  # beyond the horizon


# ---- scenarios and the loop --------------------------------------------------------------------------


def test_scenario_names_and_timing():
    assert len(parse_scenarios("all")) == 15
    assert [s.name for s in parse_scenarios("night")][0] == "adult-walk-curb-night"
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenarios("adult-walk-moon")
    world = build_world(ScenarioSpec(CASES["adult-walk-curb"], "day"), 50.0, seed=3, camera=SMALL_CAMERA)
    # Without braking the bumper meets the person exactly as they reach the lane's centre.
    assert float(world.ped_x_m(world.arrival_s)) == pytest.approx(0.0, abs=1e-9)
    bumper = world.speed_ms * world.arrival_s + world.car.camera_to_bumper_m
    assert world.ped_y_m - world.ped_radius_m == pytest.approx(bumper)
    again = build_world(ScenarioSpec(CASES["adult-walk-curb"], "day"), 50.0, seed=3, camera=SMALL_CAMERA)
    assert again.pedestrian == world.pedestrian and again.scene.objects == world.scene.objects


class _Oracle:
    """A perfect detector: the simulator's own boxes for people (a test double for the model)."""

    name = "oracle:"

    def __init__(self) -> None:
        self.annotation: dict | None = None

    def detect(self, image):
        people = [o for o in self.annotation["objects"] if o["category"] == "pedestrian" and not o["ignore"]]
        return [{"box": o["box"], "score": 0.9, "label": 0, "class": "pedestrian"} for o in people], 0.001

    def close(self) -> None:
        pass


class _OracleSource(FrameSource):
    def render(self, t_s, ego_y_m):
        image, ann = super().render(t_s, ego_y_m)
        self.detector.annotation = ann
        return image, ann


def test_perfect_detector_brakes_in_time_and_latency_costs_metres():
    world = build_world(ScenarioSpec(CASES["adult-walk-curb"], "day"), 30.0, seed=0, camera=SMALL_CAMERA)
    cfg = DriveConfig(fps=10.0)
    source = _OracleSource(world, _Oracle(), cfg.fps, cfg.tracker.min_score)
    fast = simulate(world, source, cfg, latency_ms=50.0).summary
    assert not fast["collision"] and fast["false_alarm"] is False and fast["false_alarms"] == []
    assert fast["first_detection_m"] > fast["brake_decision_m"] > 0
    assert fast["latency_travel_m"] == pytest.approx(30 / 3.6 * 0.05, abs=1e-3)
    slow = simulate(world, source, cfg, latency_ms=400.0).summary
    assert slow["frames"]["dropped"] > 0 and slow["frames"]["processed"] < fast["frames"]["processed"]
    assert slow["brake_decision_m"] is None or slow["brake_decision_m"] < fast["brake_decision_m"]
    safe, saturated = max_safe_latency_ms(source, cfg, step_ms=100.0, max_ms=3000.0)
    assert safe is not None and not saturated
    assert simulate(world, source, cfg, latency_ms=safe).summary["collision"] is False
    assert simulate(world, source, cfg, latency_ms=safe + 100.0).summary["collision"] is True


# ---- the real model ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    from crosswalk.drive.detector import InProcessDetector

    det = InProcessDetector(None, threads=1)
    yield det
    det.close()


def test_same_seed_and_fixed_latency_give_identical_json(detector):
    from crosswalk.drive.detector import InProcessDetector

    specs = parse_scenarios("adult-walk-curb-day")
    kw = dict(speeds_kmh=(50.0,), cfg=DriveConfig(fps=10.0), latency_ms=60.0, seed=1, sweep_step_ms=100.0)
    a, _ = drive_sweep(detector, specs, sweep_max_ms=600.0, progress=None, **kw)
    b, _ = drive_sweep(InProcessDetector(None, threads=1), specs, sweep_max_ms=600.0, progress=None, **kw)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    row = a["scenarios"][0]
    for key in (
        "name",
        "speed_kmh",
        "condition",
        "collision",
        "min_gap_m",
        "first_detection_m",
        "latency_ms",
    ):
        assert key in row
    assert row["latency_ms"] == 60.0 and "measured_latency_ms" not in row
    assert set(a["max_safe_latency_ms"]["50"]) == {"day"}
    assert "max safe inference latency" in format_tables(a)


def test_cli_rejects_an_unknown_scenario(capsys):
    from crosswalk.cli import main

    assert main(["drive", "--scenario", "nope", "--no-sweep"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown scenario")


def test_drive_over_http_matches_in_process(detector):
    """Written last: the same frames through a live ``crosswalk serve`` on loopback (JPEG q95 on the wire)."""
    from crosswalk.drive.detector import HttpDetector
    from crosswalk.drive.sim import _iou
    from crosswalk.serve import running_server

    world = build_world(ScenarioSpec(CASES["adult-walk-curb"], "day"), 30.0, seed=0)
    cfg = DriveConfig(fps=10.0)
    local_source = FrameSource(world, detector, cfg.fps, cfg.tracker.min_score)
    local = simulate(world, local_source, cfg, 50.0).summary
    with running_server(None, threads=1) as url:
        remote_detector = HttpDetector(url)
        try:
            remote_source = FrameSource(world, remote_detector, cfg.fps, cfg.tracker.min_score)
            remote = simulate(world, remote_source, cfg, 50.0).summary
            measured = simulate(world, remote_source, cfg).summary  # the round trip's own latency
        finally:
            remote_detector.close()
    # Perception agrees frame by frame (JPEG on the wire moves boxes by a pixel or a borderline score).
    both = sorted(set(local_source.cache) & set(remote_source.cache))
    same = [(local_source.cache[i].match is None) == (remote_source.cache[i].match is None) for i in both]
    assert len(both) >= 20 and np.mean(same) >= 0.8
    ious = [
        _iou(local_source.cache[i].match["box"], remote_source.cache[i].match["box"])
        for i in both
        if local_source.cache[i].match and remote_source.cache[i].match
    ]
    assert ious and np.median(ious) >= 0.8
    # At the same latency the drive ends the same way.
    assert remote["collision"] == local["collision"]
    assert measured["latency_mode"] == "measured" and measured["latency_ms"] > 0
