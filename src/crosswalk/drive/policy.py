"""The decision rule: brake when a tracked person's predicted path meets the car's before the car gets there.

The car keeps its lane at constant speed; a person moves at their estimated constant velocity. The car's
path is its lane widened by a safety margin on each side. A conflict is when the person is predicted to be
inside that corridor at some instant while the car's front is at or past their line and its rear not yet
past it: ``[t_in, t_out]`` (the person's time inside the corridor) overlaps ``[TTC, TTC + pass time]``.
Only tracks confirmed by several fixes count, and only within the trigger horizon (``trigger_horizon_s``).

A track's lateral velocity is uncertain (a monocular fix at 30 m is good to a metre), so the rule does not
act on the estimate alone: it asks whether any velocity within ``motion_sigmas`` standard deviations of it
(and no faster than a person runs) brings the person into the corridor while the car passes. A person
walking in whose track is still young is then a conflict before the filter has converged, as a driver
treats someone stepping off the curb; one waiting well clear of the lane is not.
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
    # The lateral velocities a track may have: vx +- k sigma(vx), within +-max_speed_ms (a person does not
    # move faster; a faster track is two detections mismatched and is ignored).
    motion_sigmas: float = 0.5
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


def _distance_m(y_m: float, ego_travel_m: float, car: CarShape, cfg: PolicyConfig) -> float:
    """Front bumper to the near edge of a person at world y (the camera started at y = 0)."""
    return y_m - cfg.ped_radius_m - (ego_travel_m + car.camera_to_bumper_m)


def _passage_s(distance_m: float, speed_ms: float, car: CarShape, cfg: PolicyConfig) -> tuple[float, float]:
    """(time until the bumper reaches the person's line, time the car then takes to pass it)."""
    return max(distance_m, 0.0) / speed_ms, (car.length_m + 2 * cfg.ped_radius_m) / speed_ms


def _half_width_m(car: CarShape, cfg: PolicyConfig) -> float:
    """Half the car's path: half its width plus the safety margin."""
    return car.width_m / 2 + cfg.lateral_margin_m


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
    distance = _distance_m(y_m, ego_travel_m, car, cfg)
    if distance < -car.length_m or speed_ms <= 0:
        return False, math.inf, distance, math.inf, math.inf
    ttc, pass_s = _passage_s(distance, speed_ms, car, cfg)
    t_in, t_out = corridor_interval(x_m, vx_ms, _half_width_m(car, cfg))
    hit = ttc <= horizon_s and t_in <= ttc + pass_s and t_out >= ttc
    return hit, ttc, distance, t_in, t_out


def entering_velocities(x_m: float, half_width_m: float, t_lo_s: float, t_hi_s: float) -> tuple[float, float]:
    """The lateral velocities that put a person at ``x`` inside +-half_width at some time in [t_lo, t_hi].

    For each t they are [(-w - x) / t, (w - x) / t]; these intervals move continuously with t, so their union
    runs from the smallest lower end to the largest upper end, both taken at t_lo or t_hi."""
    if abs(x_m) <= half_width_m:
        return -math.inf, math.inf  # already inside: standing still is enough (and so is any slow drift)
    t_lo, t_hi = max(t_lo_s, 1e-6), max(t_hi_s, 1e-6)
    lo = min((-half_width_m - x_m) / t_lo, (-half_width_m - x_m) / t_hi)
    hi = max((half_width_m - x_m) / t_lo, (half_width_m - x_m) / t_hi)
    return lo, hi


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
        vx = _worst_velocity(
            float(x), float(y), vx, float(np.sqrt(tr.cov[2, 2])), ego_travel_m, speed_ms, car, cfg
        )
        hit, ttc, distance, t_in, t_out = conflict(
            float(x), float(y), vx, ego_travel_m, speed_ms, car, horizon_s, cfg
        )
        if hit and (best is None or ttc < best.ttc_s):
            best = Conflict(tr.id, ttc, distance, t_in, t_out)
    return best


def _worst_velocity(
    x_m: float, y_m: float, vx: float, sigma: float, ego_travel_m: float, speed_ms: float, car: CarShape, cfg
) -> float:
    """The velocity within vx +- k sigma (and +-max_speed) closest to vx that makes a conflict, else vx."""
    lo = max(vx - cfg.motion_sigmas * sigma, -cfg.max_speed_ms)
    hi = min(vx + cfg.motion_sigmas * sigma, cfg.max_speed_ms)
    if speed_ms <= 0:
        return vx
    ttc, pass_s = _passage_s(_distance_m(y_m, ego_travel_m, car, cfg), speed_ms, car, cfg)
    need_lo, need_hi = entering_velocities(x_m, _half_width_m(car, cfg), ttc, ttc + pass_s)
    lo, hi = max(lo, need_lo), min(hi, need_hi)
    return vx if lo > hi else min(max(vx, lo), hi)
