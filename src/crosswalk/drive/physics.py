"""Longitudinal physics of the ego car: stopping distance, braking in time, and contact with a pedestrian.

Pure functions of numbers and arrays. The figures and the formula come from ../shared/reference/infra.md §6:
stopping distance = v * (t_perception + t_actuation) + v^2 / (2 a), with a = mu * g (mu ~0.7 dry, ~0.4 wet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

G_MS2 = 9.80665  # standard gravity


def kmh_to_ms(speed_kmh: float) -> float:
    return speed_kmh / 3.6


def stopping_distance_m(speed_ms: float, decel_ms2: float, delay_s: float = 0.0) -> float:
    """Distance covered from the moment a hazard is seen: ``v * delay + v^2 / (2 a)``."""
    if decel_ms2 <= 0:
        raise ValueError(f"deceleration must be positive, got {decel_ms2} m/s^2")
    return speed_ms * delay_s + speed_ms * speed_ms / (2.0 * decel_ms2)


def ego_motion(
    t_s: np.ndarray, speed_ms: float, decel_ms2: float, brake_start_s: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Travel (m) and speed (m/s) at times ``t_s``: constant speed, then constant deceleration to a stop.

    ``brake_start_s`` None means the car never brakes."""
    t = np.asarray(t_s, dtype=np.float64)
    if brake_start_s is None:
        return speed_ms * t, np.full_like(t, speed_ms)
    tau = np.clip(t - brake_start_s, 0.0, speed_ms / decel_ms2)  # braking time so far, until standstill
    before = speed_ms * np.minimum(t, brake_start_s)
    travel = before + speed_ms * tau - 0.5 * decel_ms2 * tau * tau
    speed = np.where(t < brake_start_s, speed_ms, speed_ms - decel_ms2 * tau)
    return travel, speed


@dataclass(frozen=True)
class CarShape:
    """The ego car's footprint relative to its camera, in metres."""

    camera_to_bumper_m: float = 2.0  # roof camera behind the windscreen to the front bumper
    length_m: float = 4.5
    width_m: float = 1.8


def footprint_gap_m(
    travel_m: np.ndarray, ped_x_m: np.ndarray, ped_y_m: float, ped_radius_m: float, car: CarShape
) -> np.ndarray:
    """Euclidean clearance (m) between the car's rectangle and the pedestrian's disc; <= 0 means contact.

    The camera starts at y = 0 and x = 0 (the ego lane's centre); the pedestrian stands at (ped_x_m, ped_y_m)."""
    front = np.asarray(travel_m) + car.camera_to_bumper_m
    rear = front - car.length_m
    dy = np.maximum(np.maximum(ped_y_m - front, rear - ped_y_m), 0.0)
    dx = np.maximum(np.abs(np.asarray(ped_x_m)) - car.width_m / 2, 0.0)
    return np.hypot(dx, dy) - ped_radius_m


@dataclass(frozen=True)
class Outcome:
    collision: bool
    impact_speed_kmh: float  # 0 when no collision
    collision_s: float | None
    min_gap_m: float  # 0 on collision
    stop_s: float | None  # when the car came to rest (None: it never stopped in the window)
    stop_travel_m: float | None
    stop_gap_m: float | None  # bumper to the pedestrian's line (their y) at rest; negative: stopped past it


def outcome(
    t_s: np.ndarray,
    speed_ms: float,
    decel_ms2: float,
    brake_start_s: float | None,
    ped_x_m: np.ndarray,
    ped_y_m: float,
    ped_radius_m: float,
    car: CarShape,
) -> tuple[Outcome, np.ndarray, np.ndarray]:
    """Integrate the car on the time grid ``t_s`` against the pedestrian's lateral path ``ped_x_m`` (same grid).

    Returns the outcome, and the car's travel and speed on the grid (cut at the collision, if any)."""
    travel, speed = ego_motion(t_s, speed_ms, decel_ms2, brake_start_s)
    gap = footprint_gap_m(travel, ped_x_m, ped_y_m, ped_radius_m, car)
    hit = np.flatnonzero(gap <= 0.0)
    stop_s = stop_travel = stop_gap = None
    if brake_start_s is not None:
        t_stop = brake_start_s + speed_ms / decel_ms2
        if t_stop <= t_s[-1]:
            stop_s = t_stop
            stop_travel = float(ego_motion(np.array([t_stop]), speed_ms, decel_ms2, brake_start_s)[0][0])
            stop_gap = ped_y_m - ped_radius_m - (stop_travel + car.camera_to_bumper_m)
    if len(hit):
        i = int(hit[0])
        result = Outcome(True, float(speed[i]) * 3.6, float(t_s[i]), 0.0, None, None, None)
        return result, travel[: i + 1], speed[: i + 1]
    result = Outcome(False, 0.0, None, float(gap.min()), stop_s, stop_travel, stop_gap)
    return result, travel, speed
