"""Light, weather and sensor: what turns a flat albedo drawing into a day, dusk or night photograph.

Order follows the physics: illumination (ambient + ego low beams + street lamps) -> wet-road sheen ->
fog (Koschmieder: blend toward the fog colour by 1 - exp(-d / visibility)) -> bloom around lights ->
rain streaks on the lens -> white balance -> motion blur -> sensor noise.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from .background import GROUND, SKY, Layers, surface_depth
from .body import place
from .camera import Camera
from .world import Scene

HEADLIGHT_RGB = np.array([1.0, 0.97, 0.9], np.float32)  # halogen/LED low beam, slightly warm
LIGHT_STEP = 4  # the background light map is smooth: compute it on a 4x coarser grid


def light_at(
    scene: Scene, x: np.ndarray, y: np.ndarray, z: np.ndarray, ground: np.ndarray, ego_y_m: float
) -> np.ndarray:
    """RGB illumination (N, 3) at world points (x, y, z) (float32, (N,) each); ``ground`` (N,) marks
    horizontal surfaces, which catch a low beam at a grazing angle and a street lamp from straight above."""
    f32 = np.float32
    level = np.zeros((len(x), 3), np.float32)
    level[:] = f32(scene.light_level) * np.asarray(scene.light_tint, np.float32)
    night = scene.lighting == "night"
    if scene.headlights:  # lamps ~2 m ahead of the lens, 0.65 m up
        vx, vy, vz = x, y - f32(ego_y_m + 2.0), z - f32(0.65)
        r = np.sqrt(vx * vx + vy * vy + vz * vz) + f32(1e-3)
        # Low beam: ~+-20 deg wide (tan 0.38), sharp cut-off just above the horizontal (ECE R112, roughly).
        lateral = vx / (f32(0.38) * np.maximum(vy, f32(1e-3)))
        cutoff = np.clip((f32(0.02) - vz / r) * f32(20.0), 0.0, 1.0)
        beam = np.exp(-lateral * lateral) * (f32(0.1) + f32(0.9) * cutoff)
        falloff = np.minimum(f32(1.3), f32(144.0) / (r * r))  # inverse square, 1 at 12 m
        incidence = np.where(ground, np.clip(f32(-5.0) * vz / r, f32(0.35), f32(1.0)), f32(1.0))
        beam *= falloff * incidence * (vy > 0) * f32(1.0 if night else 0.4)
        level += beam[:, None] * HEADLIGHT_RGB
    lamps = _lamps(scene, ego_y_m)
    if lamps:  # all lamps at once: (N points, L lamps)
        pos = np.array([q for q, _ in lamps], np.float32)
        rgb = np.array([c for _, c in lamps], np.float32)
        dx, dy, dz = x[:, None] - pos[:, 0], y[:, None] - pos[:, 1], z[:, None] - pos[:, 2]
        ratio = (pos[:, 2] * pos[:, 2]) / (
            dx * dx + dy * dy + dz * dz + f32(0.5)
        )  # (mast height / distance)^2
        # Inverse square times the cosine of incidence: a pool of light of radius ~ the mast height.
        k = np.minimum(f32(1.0), ratio) * np.where(ground[:, None], np.sqrt(ratio), f32(0.3))
        level += f32(0.8 if night else 0.3) * (k @ rgb)
    return np.minimum(level, f32(1.6))


def background_light(scene: Scene, cam: Camera, ego_y_m: float, layers: Layers) -> np.ndarray:
    """Full-size (H, W, 3) float32 light map of the background; sky and lit windows get 1."""
    rays = cam.pixel_rays(LIGHT_STEP)
    t = surface_depth(layers.surface, cam, scene, LIGHT_STEP)
    sid = layers.surface[LIGHT_STEP // 2 :: LIGHT_STEP, LIGHT_STEP // 2 :: LIGHT_STEP][
        : t.shape[0], : t.shape[1]
    ]
    t = np.minimum(t, np.float32(400.0)).ravel()
    x = rays[..., 0].ravel() * t
    y = rays[..., 1].ravel() * t + np.float32(ego_y_m)
    z = rays[..., 2].ravel() * t + np.float32(cam.height_m)
    small = light_at(scene, x, y, z, (sid == GROUND).ravel(), ego_y_m).reshape(*sid.shape, 3)
    light = cv2.resize(small, (cam.width, cam.height), interpolation=cv2.INTER_LINEAR)
    # The sky already has its final colour, and lit windows shine by themselves: light 1 there.
    full = cv2.bitwise_or(cv2.compare(layers.surface, SKY, cv2.CMP_EQ), layers.emissive)
    light[full > 0] = 1.0
    return light


def _lamps(scene: Scene, ego_y_m: float) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for o in scene.objects:  # lamps further than ~100 m light nothing the camera resolves
        if o.kind == "lamp" and o.style.get("on") and -20.0 < o.y_m - ego_y_m < 100.0:
            pos = place(np.array([0.0, o.style.get("arm_m", 1.5), o.height_m - 0.2]), o)[0].astype(np.float32)
            rgb = np.asarray(o.colours.get("head", (255, 220, 160)), np.float32) / 255.0
            out.append((pos, rgb))
    return out


def finish(
    frame: np.ndarray,
    layers: Layers,
    light: np.ndarray | None,
    depth_m: np.ndarray | None,
    scene: Scene,
    rng: np.random.Generator,
) -> np.ndarray:
    """The final uint8 RGB image from the albedo ``frame``, its light map (None: uniform daylight) and,
    in fog, the per-pixel ray distance. Full-frame arithmetic goes through OpenCV, ~3x numpy's speed here."""
    g = scene.colour_gain
    if light is None:
        k = scene.light_level
        img = cv2.multiply(frame, (g[0] * k, g[1] * k, g[2] * k, 0.0), dtype=cv2.CV_32F)
    else:
        img = cv2.multiply(cv2.multiply(frame, light, dtype=cv2.CV_32F), (g[0], g[1], g[2], 0.0))
    if scene.weather == "rain":
        _wet_road(img, layers, scene)
    if depth_m is not None and scene.fog_visibility_m:
        t = cv2.exp(depth_m * np.float32(-1.0 / scene.fog_visibility_m))
        fog = (*(float(c) for c in scene.fog_rgb), 0.0)
        img = cv2.add(cv2.multiply(cv2.subtract(img, fog), cv2.merge((t, t, t))), fog)
    if scene.lighting != "day":
        img = _bloom(img, layers, strength=1.5 if scene.fog_visibility_m else 0.8)
    if scene.rain_streaks:
        _rain(img, scene, rng)
    if scene.blur_px > 1:
        img = cv2.filter2D(img, -1, _line_kernel(scene.blur_px, scene.blur_angle_deg))
    H, W = img.shape[:2]
    # Sensor noise: a random window of a fixed noise texture (cheap, reproducible); saturate to uint8.
    oy, ox = int(rng.integers(0, H)), int(rng.integers(0, W))
    noise = _noise_bank(H, W)[oy : oy + H, ox : ox + W]
    return cv2.addWeighted(img, 1.0, noise, float(scene.noise_sigma), 0.0, dtype=cv2.CV_8U)


@functools.lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(20240611)
    luma = rng.standard_normal((2 * height, 2 * width, 1), dtype=np.float32)
    chroma = rng.standard_normal((2 * height, 2 * width, 3), dtype=np.float32)
    bank = luma + 0.4 * chroma
    bank.setflags(write=False)
    return bank


def _wet_road(img: np.ndarray, layers: Layers, scene: Scene) -> None:
    """Wet asphalt: darker, with a grazing-angle sky sheen and streaky reflections of lights below them."""
    ground = cv2.bitwise_and(cv2.compare(layers.surface, GROUND, cv2.CMP_EQ), cv2.bitwise_not(layers.objects))
    H, W = img.shape[:2]
    far = (1.0 - np.linspace(0.0, 1.0, H, dtype=np.float32)) ** 2  # top rows are far: more sky reflected
    fresnel = (0.35 * far)[:, None, None]
    sky = np.asarray(scene.sky_horizon_rgb, np.float32) * np.float32(
        scene.light_level if scene.lighting == "day" else 0.5
    )
    wet = img * (0.75 - 0.3 * fresnel) + sky * fresnel
    if scene.lighting != "day":  # lights smear into vertical streaks on the wet surface
        quarter = (W // 4, H // 4)
        lights = cv2.resize(layers.emissive, quarter, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        src = cv2.multiply(
            cv2.resize(img, quarter, interpolation=cv2.INTER_AREA), cv2.merge((lights, lights, lights))
        )
        streak = np.roll(cv2.blur(src, (1, max(3, H // 24))), max(1, H // 48), axis=0)
        wet += 0.8 * cv2.resize(streak, (W, H), interpolation=cv2.INTER_LINEAR)
    cv2.copyTo(wet, ground, img)


def _bloom(img: np.ndarray, layers: Layers, strength: float) -> np.ndarray:
    """Glow around lights (lens scatter; strong in fog), built at quarter size."""
    H, W = img.shape[:2]
    quarter = (W // 4, H // 4)
    lights = cv2.resize(layers.emissive, quarter, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    src = cv2.multiply(
        cv2.resize(img, quarter, interpolation=cv2.INTER_AREA), cv2.merge((lights, lights, lights))
    )
    glow = cv2.GaussianBlur(src, (0, 0), sigmaX=max(1.0, W / 256))
    return cv2.addWeighted(img, 1.0, cv2.resize(glow, (W, H), interpolation=cv2.INTER_LINEAR), strength, 0.0)


def _rain(img: np.ndarray, scene: Scene, rng: np.random.Generator) -> None:
    H, W = img.shape[:2]
    n = int(scene.rain_streaks * W * H / (512 * 288))
    x, y = rng.uniform(0, W, n), rng.uniform(-20, H, n)
    length = rng.uniform(0.03, 0.09, n) * H
    slant = math.radians(rng.uniform(-15, 15))
    lines = np.stack(
        [np.stack([x, y], -1), np.stack([x + length * math.sin(slant), y + length * math.cos(slant)], -1)], 1
    )
    layer = np.zeros((H, W), np.uint8)
    cv2.polylines(layer, list(np.round(lines * 16).astype(np.int32)), False, 255, 1, cv2.LINE_AA, 4)
    bright = 55.0 if scene.lighting == "day" else 30.0
    img += (layer.astype(np.float32) * np.float32(bright / 255.0))[..., None]


def _line_kernel(length_px: int, angle_deg: float) -> np.ndarray:
    k = np.zeros((length_px, length_px), np.float32)
    c = (length_px - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)) * c, math.sin(math.radians(angle_deg)) * c
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    return k / k.sum()
