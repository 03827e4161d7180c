"""The decision rule: brake when a tracked person's predicted path meets the car's before the car gets there.

The car keeps its lane at constant speed; a person moves at their estimated constant velocity. The car's
path is its lane widened by a safety margin on each side. A conflict is when the person is predicted to be
inside that corridor at some instant while the car's front is at or past their line and its rear not yet
past it: ``[t_in, t_out]`` (the person's time inside the corridor) overlaps ``[TTC, TTC + pass time]``.
Only tracks confirmed by several fixes count, and only within the trigger horizon (``trigger_horizon_s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .physics import CarShape


@dataclass(frozen=True)
class PolicyConfig:
    lateral_margin_m: float = 0.5  # added to each side of the car's half width
    # Emergency braking is for the last seconds: it triggers when the time to collision is within the time
    # the car needs to stop (actuation + v / 2a, the stopping distance divided by v) plus this margin. Earlier
    # a monocular fix is too coarse to act on, and a far false positive would stop the car for nothing.
    margin_s: float = 1.0
    ped_radius_m: float = 0.25
    # A track's lateral velocity must be told apart from noise before it counts: |vx| >= k sigma(vx), and a
    # person does not move faster than max_speed_ms (a faster track is two detections mismatched).
    motion_sigmas: float = 2.0
    max_speed_ms: float = 4.5


@dataclass(frozen=True)
class Conflict:
    track_id: int
    ttc_s: float
    distance_m: float  # bumper to the person's line
    t_in_s: float
    t_out_s: float


def corridor_interval(x_m: float, vx_ms: float, half_width_m: float) -> tuple[float, float]:
    """[t_in, t_out] (s from now) while ``x + vx t`` lies within +-half_width; (inf, inf) if never."""
    if abs(x_m) <= half_width_m and abs(vx_ms) < 1e-9:
        return 0.0, math.inf
    if abs(vx_ms) < 1e-9:
        return math.inf, math.inf
    t1, t2 = (-half_width_m - x_m) / vx_ms, (half_width_m - x_m) / vx_ms
    t_in, t_out = min(t1, t2), max(t1, t2)
    if t_out < 0:
        return math.inf, math.inf
    return max(t_in, 0.0), t_out


def conflict(
    x_m: float,
    y_m: float,
    vx_ms: float,
    ego_travel_m: float,
    speed_ms: float,
    car: CarShape,
    horizon_s: float,
    cfg: PolicyConfig = PolicyConfig(),
) -> tuple[bool, float, float, float, float]:
    """Does a person at world (x, y) moving at vx cross the car's path while it passes?

    Returns (conflict, ttc_s, distance_m, t_in_s, t_out_s); the camera started at y = 0, the person's y is
    fixed (a crossing pedestrian's motion along the road is noise to this rule)."""
    distance = y_m - cfg.ped_radius_m - (ego_travel_m + car.camera_to_bumper_m)
    if distance < -car.length_m or speed_ms <= 0:
        return False, math.inf, distance, math.inf, math.inf
    ttc = max(distance, 0.0) / speed_ms
    pass_s = (car.length_m + 2 * cfg.ped_radius_m) / speed_ms
    t_in, t_out = corridor_interval(x_m, vx_ms, car.width_m / 2 + cfg.lateral_margin_m)
    hit = ttc <= horizon_s and t_in <= ttc + pass_s and t_out >= ttc
    return hit, ttc, distance, t_in, t_out


def trigger_horizon_s(speed_ms: float, decel_ms2: float, actuation_s: float, cfg: PolicyConfig) -> float:
    """Time to collision below which a conflict triggers braking."""
    return actuation_s + speed_ms / (2.0 * decel_ms2) + cfg.margin_s


def decide(
    tracks,
    t_s: float,
    ego_travel_m: float,
    speed_ms: float,
    car: CarShape,
    horizon_s: float,
    cfg: PolicyConfig = PolicyConfig(),
) -> Conflict | None:
    """The most urgent conflict among confirmed ``tracks`` (perception.Track) at time ``t_s``, or None."""
    best = None
    for tr in tracks:
        x, y = tr.predict(t_s)
        vx = float(tr.state[2])
        if abs(vx) > cfg.max_speed_ms:
            continue
        if abs(vx) < cfg.motion_sigmas * float(np.sqrt(tr.cov[2, 2])):
            vx = 0.0  # not distinguishable from standing still
        hit, ttc, distance, t_in, t_out = conflict(
            float(x), float(y), vx, ego_travel_m, speed_ms, car, horizon_s, cfg
        )
        if hit and (best is None or ttc < best.ttc_s):
            best = Conflict(tr.id, ttc, distance, t_in, t_out)
    return best
