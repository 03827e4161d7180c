"""Scenario specs and the world they build: a straight street, parked cars, one pedestrian stepping out.

A scenario is a case (who crosses, how fast, from where) under a condition (day, dusk, night, fog, rain).
The street, its buildings and its conditions come from the scene generator's public pieces
(``sample_scene`` with the condition forced, ``sample_vehicle``, ``sample_prop``, ``sample_pedestrian``);
this module replaces the sampled road and cast with a fixed layout: a clear ego lane, parked cars at the
right curb, street lamps, and the pedestrian, timed so that without braking they reach the ego lane's centre
exactly when the car's bumper arrives. Everything follows from the seed.

Walking 1.4 m/s and a child's run ~3 m/s are the usual design speeds for pedestrians (the US MUTCD uses
3.5 ft/s = 1.07 m/s for signal timing; free walking is 1.2-1.5 m/s); road friction 0.7 g dry and 0.45 g wet
follow ../shared/reference/infra.md §6.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from crosswalk.scenes import (
    Camera,
    SceneConfig,
    WorldObject,
    sample_pedestrian,
    sample_prop,
    sample_scene,
    sample_vehicle,
)
from crosswalk.scenes.world import CURB_M, Road, Scene

from .physics import G_MS2, CarShape

CONDITIONS = ("day", "dusk", "night", "fog", "rain")
# (lighting, weather) of each condition, in the scene generator's vocabulary.
_CONDITION_SCENE = {
    "day": ("day", "clear"),
    "dusk": ("dusk", "clear"),
    "night": ("night", "clear"),
    "fog": ("day", "fog"),
    "rain": ("day", "rain"),
}
FRICTION_G = {"day": 0.7, "dusk": 0.7, "night": 0.7, "fog": 0.7, "rain": 0.45}


@dataclass(frozen=True)
class Case:
    """Who steps out, at what speed, and from where."""

    name: str
    child: bool
    walk_speed_ms: float
    occluded: bool  # True: from between two parked cars, hidden by the nearer one until they emerge


CASES = {
    "adult-walk-curb": Case("adult-walk-curb", child=False, walk_speed_ms=1.4, occluded=False),
    "child-walk-parked": Case("child-walk-parked", child=True, walk_speed_ms=1.4, occluded=True),
    "child-run-parked": Case("child-run-parked", child=True, walk_speed_ms=3.0, occluded=True),
}


@dataclass(frozen=True)
class ScenarioSpec:
    case: Case
    condition: str

    @property
    def name(self) -> str:
        return f"{self.case.name}-{self.condition}"

    @property
    def friction_g(self) -> float:
        return FRICTION_G[self.condition]

    @property
    def decel_ms2(self) -> float:
        return self.friction_g * G_MS2


def scenario_names() -> list[str]:
    return [f"{c}-{cond}" for c in CASES for cond in CONDITIONS]


def parse_scenarios(text: str) -> list[ScenarioSpec]:
    """``all``, a comma-separated list of names, or a case / condition alone (``night``: every case at night)."""
    specs = []
    for token in [t.strip() for t in text.split(",") if t.strip()]:
        if token == "all":
            specs += [ScenarioSpec(CASES[c], cond) for c in CASES for cond in CONDITIONS]
        elif token in CASES:
            specs += [ScenarioSpec(CASES[token], cond) for cond in CONDITIONS]
        elif token in CONDITIONS:
            specs += [ScenarioSpec(CASES[c], token) for c in CASES]
        else:
            case, _, cond = token.rpartition("-")
            if case not in CASES or cond not in CONDITIONS:
                raise ValueError(
                    f"unknown scenario {token!r}; use all, a case {sorted(CASES)}, a condition "
                    f"{list(CONDITIONS)}, or CASE-CONDITION such as adult-walk-curb-night"
                )
            specs.append(ScenarioSpec(CASES[case], cond))
    if not specs:
        raise ValueError("no scenario given")
    return list(dict.fromkeys(specs))  # keep order, drop repeats


@dataclass(frozen=True)
class World:
    """A built scenario: the static scene, the pedestrian's template and path, and the timing."""

    spec: ScenarioSpec
    speed_ms: float
    scene: Scene  # static street; objects exclude the pedestrian
    pedestrian: WorldObject  # looks and stature; x_m / pose are set per instant by ``pedestrian_at``
    ped_x0_m: float  # lateral start (metres right of the ego lane's centre)
    ped_y_m: float  # where along the road they cross
    arrival_s: float  # when, without braking, both reach the crossing point
    car: CarShape
    ped_radius_m: float

    @property
    def camera(self) -> Camera:
        return self.scene.camera

    def ped_x_m(self, t_s):
        """Lateral position at time(s) ``t_s``: walking straight across, towards -x, from t = 0."""
        return self.ped_x0_m - self.spec.case.walk_speed_ms * np.asarray(t_s, dtype=np.float64)

    def pedestrian_at(self, t_s: float) -> WorldObject:
        """The pedestrian at time ``t_s``, with the gait phase advanced (about one stride cycle per 1.4 m)."""
        p = self.pedestrian
        stride_m = 1.4 * p.height_m / 1.7
        phase = p.pose["phase"] + 2 * math.pi * self.spec.case.walk_speed_ms * t_s / stride_m
        return dataclasses.replace(p, x_m=float(self.ped_x_m(t_s)), pose={**p.pose, "phase": phase})

    def scene_at(self, t_s: float) -> Scene:
        """The scene at ``t_s``: the static street plus the moving pedestrian (last object)."""
        return dataclasses.replace(self.scene, objects=[*self.scene.objects, self.pedestrian_at(t_s)])

    @property
    def ped_index(self) -> int:
        return len(self.scene.objects)  # the annotation's track_id of the pedestrian in ``scene_at``


CAMERA = Camera(height_m=1.5, pitch_deg=2.0, roll_deg=0.0, hfov_deg=60.0, width=512, height=288)
ROAD = Road(lane_width_m=3.4, lanes_same=1, lanes_opposite=1, parking_right_m=2.2, sidewalk_right_m=3.5)
APPROACH_M = 1.5  # an open-curb pedestrian starts this far back on the sidewalk, already walking


def build_world(spec: ScenarioSpec, speed_kmh: float, seed: int = 0, camera: Camera = CAMERA) -> World:
    """The scenario's world at ``speed_kmh``, deterministic in ``seed`` (same seed, same street and person)."""
    lighting, weather = _CONDITION_SCENE[spec.condition]
    cfg = SceneConfig(
        width=camera.width,
        height=camera.height,
        lighting_weights=tuple(float(x == lighting) for x in ("day", "dusk", "night")),
        weather_weights=tuple(float(x == weather) for x in ("clear", "fog", "rain")),
        fog_visibility_range_m=(35.0, 70.0),
        p_motion_blur=0.0,
        jpeg_quality_range=(90, 90),
    )
    case_index = list(CASES).index(spec.case.name)
    rng = np.random.default_rng([seed, case_index, CONDITIONS.index(spec.condition)])
    scene = sample_scene(rng, cfg)  # buildings, skyline, light, fog, rain, sensor noise
    scene.camera, scene.road = camera, ROAD
    car = CarShape()
    speed_ms = speed_kmh / 3.6

    ped = _pedestrian(rng, spec.case)
    radius = max(ped.width_m, ped.length_m) / 2
    curb_x = ROAD.x_right_m  # road edge on the right (parking lane's outer edge)
    if spec.case.occluded:
        x0 = curb_x - 0.3  # between two parked cars, next to the curb
    else:
        x0 = curb_x + CURB_M + APPROACH_M
    arrival_s = x0 / spec.case.walk_speed_ms
    # The bumper touches the pedestrian's disc when the pedestrian reaches x = 0.
    ped_y = car.camera_to_bumper_m + speed_ms * arrival_s + radius
    ped.y_m = ped_y
    lit = lighting != "day"
    scene.objects = _street(rng, ped_y, spec.case.occluded, radius, lit)
    return World(spec, speed_ms, scene, ped, x0, ped_y, arrival_s, car, radius)


def _pedestrian(rng: np.random.Generator, case: Case) -> WorldObject:
    ped = sample_pedestrian(rng, 0.0, 0.0, -90.0, child=case.child, walking=True)
    if case.walk_speed_ms > 2.0:  # running: longer stride, more lean and arm swing
        ped.pose.update(stride_deg=38.0, lean_deg=10.0, arm_swing_deg=45.0, elbow_deg=70.0)
    return ped


def _street(rng: np.random.Generator, ped_y: float, occluded: bool, radius: float, lit: bool) -> list:
    """Parked cars along the right curb, lamps on both sidewalks, a few trees; the ego lane stays clear."""
    objects: list[WorldObject] = []
    x_park = ROAD.x_right_m - ROAD.parking_right_m / 2 + 0.15
    y = float(rng.uniform(-3.0, 6.0))
    while y < ped_y + 60.0:
        car = sample_vehicle(rng, "car", x_park, 0.0, float(rng.normal(0, 1.0)))
        car.y_m = y + car.length_m / 2
        front, rear = car.y_m + car.length_m / 2, car.y_m - car.length_m / 2
        if occluded and front > ped_y - radius - 0.5 and rear < ped_y + radius:
            # The hiding car: its front end 0.5 m short of the pedestrian's path.
            car.y_m = ped_y - radius - 0.5 - car.length_m / 2
            y = ped_y + radius + float(rng.uniform(0.8, 1.5))  # the next car leaves the gap they walk through
            objects.append(car)
            continue
        if not occluded and front > ped_y - 10.0 and rear < ped_y + 4.0:
            y = ped_y + 4.0  # an open stretch of curb before and at the crossing point
            continue
        objects.append(car)
        y = front + float(rng.uniform(1.0, 8.0))
    spacing = float(rng.uniform(28.0, 36.0))
    for side in (-1, 1):
        inner, _ = ROAD.sidewalk_x_range(side)
        y = float(rng.uniform(0.0, spacing))
        while y < ped_y + 80.0:
            objects.append(sample_prop(rng, "lamp", inner + side * 0.4, y, -90.0 * side, lit=lit))
            y += spacing
    for _ in range(4):
        side = int(rng.choice([-1, 1]))
        inner, outer = ROAD.sidewalk_x_range(side)
        y = float(rng.uniform(5.0, ped_y + 60.0))
        if abs(y - ped_y) > 6.0:
            objects.append(sample_prop(rng, "tree", (inner + outer) / 2 + side * 0.5, y, 0.0))
    return objects
