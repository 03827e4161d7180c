"""The pinhole camera on the vehicle: world metres <-> pixels, and the ground-plane distance of an image row.

World frame: x right, y forward along the road, z up; the ground is z = 0. The camera sits at
(0, 0, height_m) looking down +y, pitched down by ``pitch_deg`` and rolled by ``roll_deg``. Camera frame
(OpenCV): X right, Y down, Z forward. Pixel coordinates use the *edge* convention: pixel column i covers
[i, i + 1), so the principal point of a W x H image is (W / 2, H / 2) and a box [x1, y1, x2, y2] spans
whole pixels as [i_min, j_min, i_max + 1, j_max + 1].
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

NEAR_M = 0.3  # camera-frame depth below which geometry is clipped (a windscreen's distance from the lens)


@dataclass
class Camera:
    height_m: float = 1.5  # lens above the ground
    pitch_deg: float = 2.0  # positive looks down
    roll_deg: float = 0.0  # positive turns the camera's right axis downward
    hfov_deg: float = 70.0  # horizontal field of view
    width: int = 512
    height: int = 288

    @property
    def focal_px(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def cx(self) -> float:
        return self.width / 2

    @property
    def cy(self) -> float:
        return self.height / 2

    def rotation(self) -> np.ndarray:
        """3x3 matrix whose rows are the camera's right, down and forward axes in world coordinates."""
        return _rotation(self.pitch_deg, self.roll_deg)

    def to_camera(self, points_xyz: np.ndarray, ego_y_m: float = 0.0) -> np.ndarray:
        """World points (N, 3) in metres -> camera frame (N, 3); the lens is at (0, ego_y_m, height_m)."""
        p = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3) - (0.0, ego_y_m, self.height_m)
        return p @ self.rotation().T

    def to_pixels(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points (N, 3) with Z > 0 -> pixels (N, 2)."""
        z = points_cam[:, 2:3]
        return points_cam[:, :2] / z * self.focal_px + (self.cx, self.cy)

    def project(self, points_xyz: np.ndarray, ego_y_m: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> (pixels (N, 2), depth (N,)) where depth is the camera-frame Z in metres.

        Points at or behind the lens get NaN pixels; callers clip geometry at NEAR_M before drawing."""
        pc = self.to_camera(points_xyz, ego_y_m)
        depth = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = self.to_pixels(pc)
        uv[depth <= 1e-9] = np.nan
        return uv, depth

    def ground_distance_from_row(self, v_px, u_px=None):
        """Forward distance (metres along the road, y) of the ground point seen at row v_px.

        This is the monocular ground-plane estimate a vehicle makes from a box's bottom edge:
        d = h / tan(pitch + atan((v - cy) / f)) when roll is zero. ``u_px`` (default: the image centre
        column) removes the roll's tilt of the horizon. Rows at or above the horizon return inf."""
        v = np.asarray(v_px, dtype=np.float64)
        u = np.full_like(v, self.cx) if u_px is None else np.asarray(u_px, dtype=np.float64)
        f = self.focal_px
        rays_cam = np.stack(np.broadcast_arrays((u - self.cx) / f, (v - self.cy) / f, np.ones_like(v)), -1)
        rays = rays_cam @ self.rotation()  # camera -> world directions (R is orthonormal)
        down = -rays[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(down > 1e-9, self.height_m * rays[..., 1] / down, np.inf)
        return float(d) if d.ndim == 0 else d

    def pixel_rays(self, step: int = 1) -> np.ndarray:
        """Unit world directions (H/step, W/step, 3) float32 through the centres of every step-th pixel
        (step > 1: a coarse grid for smooth quantities such as the sky gradient and night lighting)."""
        return _pixel_rays(self.pitch_deg, self.roll_deg, self.hfov_deg, self.width, self.height, step)

    def as_dict(self) -> dict:
        """The annotation's ``camera`` record (schema.CAMERA_KEYS)."""
        return {
            "height_m": round(float(self.height_m), 4),
            "pitch_deg": round(float(self.pitch_deg), 4),
            "roll_deg": round(float(self.roll_deg), 4),
            "hfov_deg": round(float(self.hfov_deg), 4),
            "focal_px": round(float(self.focal_px), 4),
            "cx": float(self.cx),
            "cy": float(self.cy),
        }


@functools.lru_cache(maxsize=64)
def _rotation(pitch_deg: float, roll_deg: float) -> np.ndarray:
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    right = np.array([1.0, 0.0, 0.0])
    down = np.array([0.0, -math.sin(p), -math.cos(p)])
    forward = np.array([0.0, math.cos(p), -math.sin(p)])
    # Roll spins right/down about the optical axis; forward is unchanged.
    right, down = math.cos(r) * right + math.sin(r) * down, -math.sin(r) * right + math.cos(r) * down
    rot = np.stack([right, down, forward])
    rot.setflags(write=False)
    return rot


@functools.lru_cache(maxsize=8)
def _pixel_rays(
    pitch_deg: float, roll_deg: float, hfov_deg: float, width: int, height: int, step: int
) -> np.ndarray:
    cam = Camera(pitch_deg=pitch_deg, roll_deg=roll_deg, hfov_deg=hfov_deg, width=width, height=height)
    f = cam.focal_px
    u = (np.arange(step / 2, width, step, dtype=np.float32) - cam.cx) / f
    v = (np.arange(step / 2, height, step, dtype=np.float32) - cam.cy) / f
    rays_cam = np.empty((len(v), len(u), 3), np.float32)
    rays_cam[..., 0] = u[None, :]
    rays_cam[..., 1] = v[:, None]
    rays_cam[..., 2] = 1.0
    rays = rays_cam @ cam.rotation().astype(np.float32)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    rays.setflags(write=False)
    return rays
