"""What the car knows: boxes -> ground positions (monocular ground plane) -> tracks with velocity.

Distance comes from the box's bottom edge (the feet) through the camera's height, pitch and focal length: the
ray through that pixel meets the ground z = 0 at forward distance d = h * r_y / (-r_z) (r: the ray in world
axes), and lateral offset x = h * r_x / (-r_z). Rows at or above the horizon meet no ground and are dropped.

The tracker is a constant-velocity Kalman filter per object in world coordinates (the car knows its own
travel, so parked cars and people standing still keep a constant position), with measurement noise that
grows as d^2 / (h f) -- one pixel of box-bottom error is 2.6 m at 40 m but 0.15 m at 10 m -- so far, noisy
fixes move a track less than near ones. Association is greedy nearest-neighbour under a Mahalanobis gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crosswalk.scenes import Camera

CHI2_GATE_2DOF = 9.21  # 99% of a 2-D Gaussian: a fix farther than this (in sigmas) starts a new track


def ground_point(camera: Camera, u_px, v_px) -> tuple[np.ndarray, np.ndarray]:
    """(lateral x, forward d) in metres, relative to the camera's foot, of the ground seen at pixel (u, v).

    Pixels at or above the horizon give inf."""
    u = np.asarray(u_px, dtype=np.float64)
    v = np.asarray(v_px, dtype=np.float64)
    f = camera.focal_px
    rays_cam = np.stack(np.broadcast_arrays((u - camera.cx) / f, (v - camera.cy) / f, np.ones_like(v)), -1)
    rays = rays_cam @ camera.rotation()  # camera -> world directions (the rotation is orthonormal)
    down = -rays[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(down > 1e-9, camera.height_m / down, np.inf)
        return rays[..., 0] * t, rays[..., 1] * t


def box_ground_point(camera: Camera, box) -> tuple[float, float]:
    """(x, d) of a box's bottom-centre: where a standing person's feet touch the road."""
    x1, _, x2, y2 = (float(c) for c in box)
    x, d = ground_point(camera, (x1 + x2) / 2, y2)
    return float(x), float(d)


def plausible_person(camera: Camera, box, distance_m: float, cfg: TrackerConfig) -> bool:
    """Is this box shaped and sized like a person standing on the road ``distance_m`` ahead?"""
    x1, y1, x2, y2 = (float(c) for c in box)
    w, h = x2 - x1, y2 - y1
    if h <= 0 or w / h > cfg.max_aspect:
        return False
    cam_range = np.hypot(distance_m, camera.height_m)
    stature = h * cam_range / camera.focal_px
    return cfg.stature_range_m[0] <= stature <= cfg.stature_range_m[1]


def _feet_inside(box, vehicle_boxes) -> bool:
    """Does the box's bottom-centre fall inside a detected vehicle? Then it is a false positive on the car, or
    a person whose feet the car hides, whose ground-plane distance would be wrong either way."""
    u, v = (box[0] + box[2]) / 2, box[3]
    return any(b[0] <= u <= b[2] and b[1] <= v <= b[3] for b in vehicle_boxes)


def fix_noise_m(camera: Camera, x_m: float, d_m: float, row_sigma_px: float, col_sigma_px: float):
    """1-sigma (lateral, forward) error of a ground fix from box-edge errors in pixels.

    From d = h f / dv (small angles): dd = d^2 / (h f) * dv; and x = d (u - cx) / f: dx = d / f * du + x / d * dd.
    """
    f = camera.focal_px
    sigma_d = d_m * d_m / (camera.height_m * f) * row_sigma_px
    sigma_x = np.hypot(d_m / f * col_sigma_px, abs(x_m) / max(d_m, 1e-6) * sigma_d)
    return float(sigma_x), float(sigma_d)


@dataclass(frozen=True)
class TrackerConfig:
    accel_noise_ms2: float = 1.5  # pedestrians start, stop and turn: white-acceleration spectral density
    row_sigma_px: float = 1.5  # box-bottom error of the detector
    col_sigma_px: float = 2.0  # box-centre error
    size_sigma: float = 0.15  # ... or this share of the box's width (centre) and half-height (bottom)
    min_sigma_m: float = 0.15  # floor: a person's feet are not a point
    confirm_hits: int = 3  # M-of-N confirmation: M fixes among the last N frames the detector processed
    confirm_window: int = 5
    max_age_s: float = 1.0  # a track not updated this long is dropped ...
    max_misses: int = 3  # ... or one missed in this many processed frames in a row
    min_score: float = 0.3  # detections below this are ignored
    vehicle_score: float = 0.4  # vehicles this sure, and this tall (near: ~25 m), mask pedestrian boxes
    vehicle_mask_min_px: float = 30.0  # standing inside them (far boxes overlap by perspective alone)
    max_range_m: float = 80.0  # fixes beyond this are too noisy to use (row error ~ 11 m per pixel at 80 m)
    # Size priors of a person, the usual plausibility check of monocular perception: a standing or walking
    # person's box is taller than wide, and box height x distance / focal length is their stature.
    max_aspect: float = 1.2  # box width / height (the detector's boxes of far people are loose)
    stature_range_m: tuple[float, float] = (0.8, 2.2)


@dataclass
class Track:
    id: int
    state: np.ndarray  # x, y (world, m), vx, vy (m/s)
    cov: np.ndarray
    t_s: float  # time of the last fix (frame capture)
    hits: int = 1
    history: list = field(default_factory=list)  # (t, x, y) fixes
    recent: list = field(default_factory=lambda: [True])  # hit or miss in each processed frame, newest last
    detection: dict | None = None  # the detection of the last fix

    def predict(self, t_s: float) -> np.ndarray:
        dt = t_s - self.t_s
        return self.state[:2] + dt * self.state[2:]


class Tracker:
    """Constant-velocity Kalman tracks in world coordinates (x right of the ego lane's centre, y along it)."""

    def __init__(self, camera: Camera, config: TrackerConfig = TrackerConfig()) -> None:
        self.camera = camera
        self.cfg = config
        self.tracks: list[Track] = []
        self._next_id = 0

    def fixes(self, detections: list[dict], ego_y_m: float) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        """World positions (and their covariances) of the usable pedestrian detections of one frame."""
        out = []
        vehicles = [
            d["box"] for d in detections if d["class"] == "vehicle" and d["score"] >= self.cfg.vehicle_score
        ]
        for det in detections:
            if det["class"] != "pedestrian" or det["score"] < self.cfg.min_score:
                continue
            if _feet_inside(det["box"], vehicles):
                continue
            x, d = box_ground_point(self.camera, det["box"])
            if not np.isfinite(d) or d <= 0 or d > self.cfg.max_range_m:
                continue
            if not plausible_person(self.camera, det["box"], d, self.cfg):
                continue
            x1, y1, x2, y2 = det["box"]
            # A detector's box error grows with the box: a fixed floor plus a share of its size.
            row_px = max(self.cfg.row_sigma_px, self.cfg.size_sigma * (y2 - y1) / 2)
            col_px = max(self.cfg.col_sigma_px, self.cfg.size_sigma * (x2 - x1))
            sx, sd = fix_noise_m(self.camera, x, d, row_px, col_px)
            sx, sd = max(sx, self.cfg.min_sigma_m), max(sd, self.cfg.min_sigma_m)
            out.append((np.array([x, ego_y_m + d]), np.diag([sx * sx, sd * sd]), det))
        return out

    def update(self, detections: list[dict], t_s: float, ego_y_m: float) -> None:
        """Fold in one frame's detections, captured at ``t_s`` with the camera at ``ego_y_m``."""
        self.tracks = [
            tr
            for tr in self.tracks
            if t_s - tr.t_s <= self.cfg.max_age_s and any(tr.recent[-self.cfg.max_misses :])
        ]
        fixes = self.fixes(detections, ego_y_m)
        predicted = [self._predicted(tr, t_s) for tr in self.tracks]
        pairs = []
        if predicted and fixes:
            # Squared Mahalanobis distance of every (track, fix) pair at once, 2x2 inverses in closed form.
            xy = np.array([state[:2] for state, _ in predicted])[:, None, :]
            s_mat = np.array([cov[:2, :2] for _, cov in predicted])[:, None] + np.array(
                [r for _, r, _ in fixes]
            )
            dx, dy = (np.array([z for z, _, _ in fixes])[None] - xy).transpose(2, 0, 1)
            a, b, d = s_mat[..., 0, 0], s_mat[..., 0, 1], s_mat[..., 1, 1]
            m2 = (d * dx * dx - 2 * b * dx * dy + a * dy * dy) / (a * d - b * b)
            pairs = sorted(
                (float(m2[i, j]), i, j) for i, j in zip(*np.nonzero(m2 <= CHI2_GATE_2DOF), strict=True)
            )
        used_t, used_f = set(), set()
        for _, i, j in pairs:
            if i in used_t or j in used_f:
                continue
            used_t.add(i)
            used_f.add(j)
            self._correct(self.tracks[i], predicted[i], fixes[j][0], fixes[j][1], t_s)
            self.tracks[i].detection = fixes[j][2]
        for i, tr in enumerate(self.tracks):
            tr.recent = (tr.recent + [i in used_t])[-self.cfg.confirm_window :]
        for j, (z, r, det) in enumerate(fixes):
            if j not in used_f:
                cov = np.zeros((4, 4))
                cov[:2, :2] = r
                cov[2:, 2:] = np.eye(2) * 1.5**2  # unknown velocity: people walk at ~1.4 m/s
                tr = Track(self._next_id, np.array([z[0], z[1], 0.0, 0.0]), cov, t_s, detection=det)
                tr.history.append((t_s, float(z[0]), float(z[1])))
                self.tracks.append(tr)
                self._next_id += 1

    def confirmed(self) -> list[Track]:
        return [tr for tr in self.tracks if sum(tr.recent) >= self.cfg.confirm_hits]

    def _predicted(self, tr: Track, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        dt = t_s - tr.t_s
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt
        q = self.cfg.accel_noise_ms2**2
        # Discrete white-noise acceleration (Bar-Shalom, Estimation with Applications to Tracking, 6.2.2).
        g = np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]) * q
        qm = np.zeros((4, 4))
        qm[0::2, 0::2] = g  # (x, vx) block
        qm[1::2, 1::2] = g  # (y, vy) block
        return f @ tr.state, f @ tr.cov @ f.T + qm

    def _correct(self, tr: Track, predicted, z: np.ndarray, r: np.ndarray, t_s: float) -> None:
        x, p = predicted
        h = np.zeros((2, 4))
        h[0, 0] = h[1, 1] = 1.0
        s = h @ p @ h.T + r
        k = p @ h.T @ np.linalg.inv(s)
        tr.state = x + k @ (z - h @ x)
        tr.cov = (np.eye(4) - k @ h) @ p
        tr.t_s = t_s
        tr.hits += 1
        tr.history.append((t_s, float(z[0]), float(z[1])))
