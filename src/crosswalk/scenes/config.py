"""Every knob of the scene generator, with defaults that give a varied, CityPersons-like mix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SceneConfig:
    width: int = 512
    height: int = 288
    jpeg_quality_range: tuple[int, int] = (60, 95)

    # Conditions, weights in schema order: LIGHTING = (day, dusk, night), WEATHER = (clear, fog, rain).
    lighting_weights: tuple[float, float, float] = (0.55, 0.2, 0.25)
    weather_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)
    fog_visibility_range_m: tuple[float, float] = (25.0, 110.0)  # e-folding distance of the fog blend

    # Camera: a car's roof (1.2 m) to a truck cab (2.5 m); pitch a few degrees down; dash-cam to wide FOV.
    camera_height_range_m: tuple[float, float] = (1.2, 2.5)
    pitch_range_deg: tuple[float, float] = (0.5, 5.0)
    max_roll_deg: float = 2.0
    hfov_range_deg: tuple[float, float] = (50.0, 90.0)

    # Population per frame.
    pedestrians_range: tuple[int, int] = (1, 8)
    p_no_pedestrians: float = 0.08
    p_child: float = 0.2
    p_crossing: float = 0.3  # share of pedestrians walking across the road (off the zebra)
    p_zebra: float = 0.45  # frames with a zebra crossing
    cyclists_range: tuple[int, int] = (0, 2)
    moving_vehicles_range: tuple[int, int] = (0, 5)
    parked_vehicles_range: tuple[int, int] = (0, 6)
    # Kinds of vehicle in (car, van, truck, bus) order.
    vehicle_kind_weights: tuple[float, float, float, float] = (0.6, 0.18, 0.12, 0.1)
    distractors_range: tuple[int, int] = (2, 9)  # poles, signs, bollards, hydrants, trees (not annotated)
    p_poster: float = 0.4  # frames with a poster of a person (annotated ignore=True)
    p_mannequin: float = 0.3  # frames with a shop-window mannequin (annotated ignore=True)
    pedestrian_distance_range_m: tuple[float, float] = (4.0, 55.0)  # log-uniform: most end up 15-150 px tall

    # Annotation thresholds (objects below them are drawn but not annotated).
    max_range_m: float = 150.0
    min_height_px: float = 6.0
    min_visibility: float = 0.05

    # Sensor.
    noise_sigma_day_range: tuple[float, float] = (0.5, 3.0)  # grey levels
    noise_sigma_night_range: tuple[float, float] = (3.0, 8.0)
    p_motion_blur: float = 0.25
    motion_blur_range_px: tuple[int, int] = (2, 7)

    def __post_init__(self) -> None:
        for name in ("lighting_weights", "weather_weights", "vehicle_kind_weights"):
            w = getattr(self, name)
            if any(x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(f"SceneConfig.{name} must be non-negative with a positive sum, got {w}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if "_range" in f.name and isinstance(f.default, tuple):
                if not (isinstance(v, tuple) and len(v) == 2 and v[0] <= v[1]):
                    raise ValueError(
                        f"SceneConfig.{f.name} must be a (low, high) pair with low <= high, got {v}"
                    )
        if self.width < 16 or self.height < 16:
            raise ValueError(f"SceneConfig image size must be at least 16x16, got {self.width}x{self.height}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SceneConfig:
        """Build from a parsed config file; unknown keys fail with the list of valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown SceneConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
