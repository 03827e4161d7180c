"""A sampled world: road layout, buildings, objects in metres, and the conditions it is seen under.

A ``Scene`` holds no pixels. ``sample_scene`` draws one from a seeded generator; ``render.render_scene`` turns
it into an image from any camera position along the road, so a later stage can move the ego car and a
pedestrian through a fixed street.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crosswalk.data.schema import LIGHTING, WEATHER

from .camera import Camera
from .config import SceneConfig

RGB = tuple[int, int, int]
CURB_M = 0.25  # curb stone width between road edge and sidewalk


@dataclass
class Road:
    lane_width_m: float = 3.4
    lanes_same: int = 1  # lanes in the camera's direction; the camera drives in the rightmost, centred at x=0
    lanes_opposite: int = 1
    parking_right_m: float = 2.2  # 0: no parking lane on that side
    parking_left_m: float = 0.0
    sidewalk_right_m: float = 3.0
    sidewalk_left_m: float = 3.0
    zebra_y_m: float | None = None  # near edge of the zebra crossing, metres ahead of the scene origin
    zebra_length_m: float = 4.0
    centre_line: str = "double"  # "double" (solid pair) or "dashed"
    asphalt_rgb: RGB = (80, 80, 84)
    marking_rgb: RGB = (225, 225, 215)
    sidewalk_rgb: RGB = (150, 146, 140)
    curb_rgb: RGB = (175, 172, 168)
    verge_rgb: RGB = (90, 110, 70)  # ground beyond the facades / in green gaps

    @property
    def x_right_m(self) -> float:
        return self.lane_width_m / 2 + self.parking_right_m

    @property
    def x_left_m(self) -> float:
        return -(self.lanes_same - 0.5 + self.lanes_opposite) * self.lane_width_m - self.parking_left_m

    @property
    def facade_right_x_m(self) -> float:
        return self.x_right_m + CURB_M + self.sidewalk_right_m

    @property
    def facade_left_x_m(self) -> float:
        return self.x_left_m - CURB_M - self.sidewalk_left_m

    def lane_centres_same(self) -> list[float]:
        return [-i * self.lane_width_m for i in range(self.lanes_same)]

    def lane_centres_opposite(self) -> list[float]:
        return [-(self.lanes_same + i) * self.lane_width_m for i in range(self.lanes_opposite)]

    def sidewalk_x_range(self, side: int) -> tuple[float, float]:
        """(inner, outer) x of the sidewalk on ``side`` (+1 right, -1 left)."""
        if side > 0:
            return self.x_right_m + CURB_M, self.facade_right_x_m
        return self.x_left_m - CURB_M, self.facade_left_x_m


@dataclass
class Building:
    side: int  # +1 right of the road, -1 left
    y0_m: float
    y1_m: float
    height_m: float
    rgb: RGB
    kind: str = "building"  # or "green": a gap with grass (trees are separate objects)
    floor_m: float = 3.2
    window_spacing_m: float = 2.6
    window_size_m: tuple[float, float] = (1.2, 1.5)  # width, height
    window_rgb: RGB = (60, 75, 95)
    lit_fraction: float = 0.0  # share of windows lit (dusk/night)
    shop_front: bool = False  # dark glazed ground floor
    seed: int = 0  # picks the lit windows, reproducibly


@dataclass
class WorldObject:
    """One thing standing on the ground. ``category`` None means drawn but never annotated."""

    kind: str  # adult child poster mannequin cyclist car van truck bus | lamp sign tree bollard hydrant
    x_m: float
    y_m: float
    heading_deg: float = 0.0  # direction it faces: 0 = +y (away from the camera), 90 = +x, 180 = towards it
    height_m: float = 1.7
    width_m: float = 0.5
    length_m: float = 0.3
    category: str | None = None
    ignore: bool = False
    colours: dict[str, RGB] = field(default_factory=dict)
    pose: dict[str, float] = field(default_factory=dict)  # animatable: walking phase, stride, arm swing...
    style: dict[str, Any] = field(default_factory=dict)  # coat, skirt, bag, lights_on, ...
    base_z_m: float = 0.0  # feet above the ground (a mannequin's plinth, a poster's lower edge)

    def footprint_distance_m(self, ego_y_m: float = 0.0) -> float:
        """Ground distance from the camera to the nearest point of the footprint (the painter's sort key)."""
        h = math.radians(self.heading_deg)
        dx, dy = -self.x_m, ego_y_m - self.y_m
        along = dx * math.sin(h) + dy * math.cos(h)
        across = dx * math.cos(h) - dy * math.sin(h)
        along = min(max(along, -self.length_m / 2), self.length_m / 2)
        across = min(max(across, -self.width_m / 2), self.width_m / 2)
        ex = self.x_m + along * math.sin(h) + across * math.cos(h)
        ey = self.y_m + along * math.cos(h) - across * math.sin(h)
        return math.hypot(ex, ey - ego_y_m)


@dataclass
class Scene:
    camera: Camera
    road: Road = field(default_factory=Road)
    buildings: list[Building] = field(default_factory=list)
    objects: list[WorldObject] = field(default_factory=list)
    skyline: list[tuple[float, float, float]] = field(default_factory=list)  # far silhouettes: x0, x1, height
    lighting: str = "day"
    weather: str = "clear"
    sky_top_rgb: RGB = (70, 125, 200)
    sky_horizon_rgb: RGB = (185, 205, 228)
    light_level: float = 1.0  # ambient light, 1 = bright day
    light_tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    headlights: bool = False  # ego low beams (dusk, night)
    fog_visibility_m: float | None = None
    fog_rgb: RGB = (200, 202, 206)
    rain_streaks: int = 0
    noise_sigma: float = 1.0  # grey levels
    blur_px: int = 0  # motion blur kernel length, 0 = none
    blur_angle_deg: float = 0.0
    colour_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white-balance error
    jpeg_quality: int = 90
    render_seed: int = 0  # noise and rain streaks; mixed with the ego position when rendering
    # Annotation rules (copied from SceneConfig): smaller, fainter or farther objects are drawn, not labelled.
    max_range_m: float = 150.0
    min_height_px: float = 6.0
    min_visibility: float = 0.05


class Rand:
    """numpy's Generator with fast scalar draws.

    A scalar ``Generator.uniform`` or ``choice`` costs 4-25 us; a frame makes a few hundred of them, so
    scalars are derived from ``random()`` (1 us) and array draws go straight to the Generator. Everything
    still comes from the one seeded stream, in a fixed order."""

    def __init__(self, rng: np.random.Generator):
        self.g = rng.g if isinstance(rng, Rand) else rng

    def random(self, size=None):
        return self.g.random() if size is None else self.g.random(size)

    def uniform(self, low=0.0, high=1.0, size=None):
        if size is not None:
            return self.g.uniform(low, high, size)
        if high < low:
            raise ValueError(f"uniform({low}, {high}): high < low")
        return low + (high - low) * self.g.random()

    def normal(self, loc=0.0, scale=1.0, size=None):
        return loc + scale * self.g.standard_normal() if size is None else self.g.normal(loc, scale, size)

    def integers(self, low, high=None, size=None, endpoint=False):
        if size is not None:
            return self.g.integers(low, high, size, endpoint=endpoint)
        if high is None:
            low, high = 0, low
        n = int(high) - int(low) + (1 if endpoint else 0)
        return int(low) + min(int(self.g.random() * n), n - 1)

    def choice(self, options, p=None):
        if p is None:
            return options[min(int(self.g.random() * len(options)), len(options) - 1)]
        r, acc = self.g.random() * float(sum(p)), 0.0
        for option, w in zip(options, p, strict=True):
            acc += w
            if r < acc:
                return option
        return options[-1]


def sample_scene(rng: np.random.Generator, config: SceneConfig) -> Scene:
    """Draw a whole world and its conditions from ``rng``: all randomness comes from it, in a fixed order."""
    from .population import populate  # local: population imports this module's dataclasses

    rng = Rand(rng)
    lighting = rng.choice(LIGHTING, p=config.lighting_weights)
    weather = rng.choice(WEATHER, p=config.weather_weights)
    camera = Camera(
        height_m=float(rng.uniform(*config.camera_height_range_m)),
        pitch_deg=float(rng.uniform(*config.pitch_range_deg)),
        roll_deg=float(rng.uniform(-config.max_roll_deg, config.max_roll_deg)),
        hfov_deg=float(rng.uniform(*config.hfov_range_deg)),
        width=config.width,
        height=config.height,
    )
    road = _sample_road(rng, config)
    urban = float(rng.choice([0.9, 0.6, 0.25], p=[0.5, 0.3, 0.2]))  # share of frontage that is buildings
    buildings = [b for side in (-1, 1) for b in _sample_buildings(rng, side, urban, lighting)]
    skyline = _sample_skyline(rng)
    scene = Scene(
        camera=camera,
        road=road,
        buildings=buildings,
        skyline=skyline,
        lighting=lighting,
        weather=weather,
        max_range_m=config.max_range_m,
        min_height_px=config.min_height_px,
        min_visibility=config.min_visibility,
    )
    _sample_conditions(rng, config, scene)
    scene.objects = populate(rng, config, scene)
    scene.render_seed = int(rng.integers(0, 2**31 - 1))
    return scene


def _jitter(rng: np.random.Generator, rgb, amount: float = 12.0) -> RGB:
    return tuple(min(255, max(0, int(c + rng.uniform(-amount, amount)))) for c in rgb)


def _sample_road(rng: np.random.Generator, config: SceneConfig) -> Road:
    lanes_same = int(rng.choice([1, 2], p=[0.6, 0.4]))
    lanes_opposite = int(rng.choice([0, 1, 2], p=[0.15, 0.6, 0.25]))
    grey = rng.uniform(60, 105)
    return Road(
        lane_width_m=float(rng.uniform(3.0, 3.7)),
        lanes_same=lanes_same,
        lanes_opposite=lanes_opposite,
        parking_right_m=float(rng.choice([0.0, 2.2], p=[0.3, 0.7])),
        parking_left_m=float(rng.choice([0.0, 2.2], p=[0.6, 0.4])),
        sidewalk_right_m=float(rng.uniform(2.0, 5.0)),
        sidewalk_left_m=float(rng.uniform(2.0, 5.0)),
        zebra_y_m=float(rng.uniform(8.0, 40.0)) if rng.random() < config.p_zebra else None,
        zebra_length_m=float(rng.uniform(3.0, 5.0)),
        centre_line="double" if lanes_opposite and rng.random() < 0.6 else "dashed",
        asphalt_rgb=_jitter(rng, (grey, grey, grey + 4), 4),
        marking_rgb=_jitter(rng, (228, 228, 218), 10),
        sidewalk_rgb=_jitter(rng, rng.choice(_PAVING), 6),
        curb_rgb=_jitter(rng, (178, 175, 170), 6),
        verge_rgb=_jitter(rng, (85, 108, 65), 15),
    )


# Concrete, warm stone, red brick paving, dark asphalt.
_PAVING: tuple[RGB, ...] = ((150, 148, 144), (168, 155, 138), (150, 100, 88), (104, 104, 106))
_FACADES: tuple[RGB, ...] = (
    (185, 170, 150),
    (160, 95, 75),
    (205, 195, 175),
    (120, 120, 125),
    (170, 160, 120),
    (140, 150, 160),
    (215, 210, 200),
    (110, 85, 70),
    (190, 140, 110),
    (95, 100, 110),
    (225, 215, 190),
    (150, 170, 160),
)


def _sample_buildings(rng: np.random.Generator, side: int, urban: float, lighting: str) -> list[Building]:
    """Frontage from behind the camera to 320 m ahead, all draws vectorised (a street has ~30 buildings)."""
    n = 48
    length = rng.uniform(8.0, 30.0, n)
    gap = np.where(rng.random(n) < 0.3, rng.uniform(0.0, 4.0, n), 0.0)
    is_building = rng.random(n) < urban
    height = rng.uniform(4.0, 12.0, n) * rng.uniform(1.0, 2.5)  # one factor: downtown vs. low-rise street
    palette = rng.integers(0, len(_FACADES), n)
    tint = rng.uniform(-15, 15, (n, 3))
    floor, spacing = rng.uniform(2.9, 3.6, n), rng.uniform(2.0, 3.2, n)
    win_w, win_h = rng.uniform(0.8, 1.4, n), rng.uniform(1.1, 1.7, n)
    win_tint = rng.uniform(-20, 20, (n, 3))
    lit_range = {"day": (0.0, 0.0), "dusk": (0.1, 0.4), "night": (0.15, 0.55)}[lighting]
    lit = rng.uniform(*lit_range, n)
    shop = rng.random(n) < 0.5
    seeds = rng.integers(0, 2**31 - 1, n)
    rgbs = np.clip(np.asarray(_FACADES)[palette] + tint, 0, 255).astype(int).tolist()
    windows = np.clip(np.array([60, 75, 95]) + win_tint, 0, 255).astype(int).tolist()
    length, gap, height, floor, spacing, win_w, win_h, lit, seeds = (
        a.tolist() for a in (length, gap, height, floor, spacing, win_w, win_h, lit, seeds)
    )
    out = []
    y = float(rng.uniform(-40.0, -10.0))
    for i in range(n):
        if y >= 320.0:
            break
        out.append(
            Building(
                side=side,
                y0_m=y,
                y1_m=y + length[i],
                height_m=height[i],
                rgb=tuple(rgbs[i]),
                kind="building" if is_building[i] else "green",
                floor_m=floor[i],
                window_spacing_m=spacing[i],
                window_size_m=(win_w[i], win_h[i]),
                window_rgb=tuple(windows[i]),
                lit_fraction=lit[i],
                shop_front=bool(shop[i]),
                seed=seeds[i],
            )
        )
        y += length[i] + gap[i]
    return out


def _sample_skyline(rng: np.random.Generator) -> list[tuple[float, float, float]]:
    out, x = [], -700.0
    while x < 700.0:
        w = float(rng.uniform(15.0, 70.0))
        out.append((x, x + w, float(rng.uniform(8.0, 60.0))))
        x += w
    return out


def _sample_conditions(rng: np.random.Generator, config: SceneConfig, s: Scene) -> None:
    if s.lighting == "day":
        s.light_level = float(rng.uniform(0.85, 1.15))
        overcast = rng.random() < 0.3 or s.weather != "clear"
        s.sky_top_rgb = _jitter(rng, (150, 155, 165) if overcast else (65, 120, 200), 15)
        s.sky_horizon_rgb = _jitter(rng, (200, 202, 208) if overcast else (185, 208, 232), 10)
        s.fog_rgb = _jitter(rng, (198, 200, 204), 8)
    elif s.lighting == "dusk":
        s.light_level = float(rng.uniform(0.3, 0.55))
        s.light_tint = (1.08, 0.95, 0.85)  # low sun: warm
        s.sky_top_rgb = _jitter(rng, (55, 60, 110), 15)
        s.sky_horizon_rgb = _jitter(rng, (235, 150, 95), 20)
        s.headlights = True
        s.fog_rgb = _jitter(rng, (140, 128, 125), 10)
    else:
        s.light_level = float(rng.uniform(0.03, 0.08))
        s.light_tint = (0.8, 0.9, 1.25)  # moonlight and sky glow read blue
        s.sky_top_rgb = _jitter(rng, (6, 8, 18), 4)
        s.sky_horizon_rgb = _jitter(rng, (28, 30, 45), 8)
        s.headlights = True
        s.fog_rgb = _jitter(rng, (30, 31, 36), 5)
    if s.weather == "fog":
        s.fog_visibility_m = float(rng.uniform(*config.fog_visibility_range_m))
    elif s.weather == "rain":
        s.rain_streaks = int(rng.integers(120, 450))
        s.light_level *= float(rng.uniform(0.7, 0.9))
    night = s.lighting == "night"
    s.noise_sigma = float(
        rng.uniform(*(config.noise_sigma_night_range if night else config.noise_sigma_day_range))
    )
    if rng.random() < config.p_motion_blur:
        s.blur_px = int(rng.integers(config.motion_blur_range_px[0], config.motion_blur_range_px[1] + 1))
        s.blur_angle_deg = float(rng.choice([0.0, 90.0, 45.0, 135.0]))
    s.colour_gain = (rng.uniform(0.93, 1.07), rng.uniform(0.93, 1.07), rng.uniform(0.93, 1.07))
    s.jpeg_quality = int(rng.integers(config.jpeg_quality_range[0], config.jpeg_quality_range[1] + 1))
