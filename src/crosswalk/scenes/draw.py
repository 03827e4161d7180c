"""3-D primitives in metres, projected and drawn with OpenCV into small per-object canvases.

An object is a ``Shape``: one point array plus a list of primitives that index into it (convex polygons,
convex solids given by their corners, limbs, balls, rings). Keeping every point in one array lets a
whole object move to the world and the camera in two matrix products, which is what makes ~40 frames/s
possible in Python. ``project`` clips at the near plane, culls back faces and orders primitives far to
near; ``draw`` paints them into a premultiplied RGBA canvas (OpenCV's anti-aliased drawing blends all
four channels, which is exactly premultiplied "over"), so the canvas alpha is the object's own mask.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import cv2
import numpy as np

from .camera import NEAR_M, Camera

SHIFT = 4  # OpenCV fixed-point bits: 1/16 px positions keep small, distant people from jittering
_ONE = 1 << SHIFT
POLY, HULL, LIMB, BALL, RING = range(5)


class Item(NamedTuple):
    kind: int
    start: int  # first point in Shape.points
    count: int
    colour: tuple[int, int, int]
    radius_m: float = 0.0  # limb/ball radius, ring half-thickness
    cull: bool = False  # POLY: skip when the outward normal (right-hand vertex order) faces away
    emissive: bool = False  # a light: keeps its brightness at night
    anchor: int = -1  # index of the point whose depth orders this item (-1: the mean of its own points)
    bias_m: float = 0.0  # subtracted from the ordering depth: a decal on a face gets a small positive bias


class Shape:
    """Primitives of one object sharing one point list; build in the body frame, then ``place`` it.

    Points are plain 3-tuples until ``finish`` makes one array: building a person costs tens of
    microseconds in Python floats, where a small numpy array per joint would cost ten times more."""

    def __init__(self) -> None:
        self.pts: list = []
        self.items: list[Item] = []
        self.points: np.ndarray | None = None  # (N, 3) world metres, set once placed

    def add_point(self, p) -> int:
        self.pts.append(p)
        return len(self.pts) - 1

    def _item(self, kind: int, pts, colour, *args) -> None:
        start = len(self.pts)
        self.pts.extend(pts)
        self.items.append(Item(kind, start, len(self.pts) - start, colour, *args))

    def poly(self, pts, colour, *, cull=False, emissive=False, anchor=-1, bias_m=0.0) -> None:
        self._item(POLY, pts, colour, 0.0, cull, emissive, anchor, bias_m)

    def hull(self, corners, colour, *, emissive=False, anchor=-1, bias_m=0.0) -> None:
        """A convex solid drawn as the convex hull of its projected corners (right from any side)."""
        self._item(HULL, corners, colour, 0.0, False, emissive, anchor, bias_m)

    def limb(self, a, b, radius_m: float, colour, *, bias_m=0.0) -> None:
        self._item(LIMB, (a, b), colour, radius_m, False, False, -1, bias_m)

    def ball(self, centre, radius_m: float, colour, *, bias_m=0.0, emissive=False) -> None:
        self._item(BALL, (centre,), colour, radius_m, False, emissive, -1, bias_m)

    def ring(self, pts, radius_m: float, colour) -> None:
        self._item(RING, pts, colour, radius_m)

    def finish(self) -> np.ndarray:
        # fromiter over a flat stream is ~6x faster than np.array on a list of tuples.
        flat = np.fromiter(itertools.chain.from_iterable(self.pts), np.float64, 3 * len(self.pts))
        return flat.reshape(-1, 3)


class Drawn(NamedTuple):
    kind: int  # POLY (also hulls, after the hull is taken), LIMB, BALL or RING
    pts: np.ndarray  # (K, 2) float pixels, edge convention
    radius_px: float
    colour: tuple[int, int, int]
    emissive: bool


class Projection(NamedTuple):
    drawn: list[Drawn]  # far to near
    pts: np.ndarray  # every drawn point, concatenated in drawing order
    box: tuple[float, float, float, float] | None  # float extent, limb/ball/ring radii included


def project(points_world: np.ndarray, items: list[Item], cam: Camera, ego_y_m: float) -> Projection:
    """Clip, cull, order (far first) and project; items wholly behind the near plane vanish."""
    if not items:
        return Projection([], np.zeros((0, 2)), None)
    pc = cam.to_camera(points_world, ego_y_m)
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = pc[:, :2] / np.maximum(z, NEAR_M)[:, None] * cam.focal_px + (cam.cx, cam.cy)
    zl = z.tolist()
    pcl = pc.tolist() if any(it.cull for it in items) else None
    f = cam.focal_px
    keyed = []
    for i, it in enumerate(items):
        s, n = it.start, it.count
        zs = zl[s : s + n]
        zmin, zmax = min(zs), max(zs)
        if zmax < NEAR_M:
            continue
        zmean = sum(zs) / n
        order = (zl[it.anchor] if it.anchor >= 0 else zmean) - it.bias_m
        kind = it.kind
        if kind == POLY:
            if it.cull and _faces_away(pcl[s], pcl[s + 1], pcl[s + 2]):
                continue
            pts = uv[s : s + n]
            if zmin < NEAR_M:
                clipped = clip_polygon(pc[s : s + n])
                if len(clipped) < 3:
                    continue
                pts = cam.to_pixels(clipped)
            d = Drawn(POLY, pts, 0.0, it.colour, it.emissive)
        elif kind == HULL:
            if zmin < NEAR_M:
                continue
            hull = cv2.convexHull(uv[s : s + n].astype(np.float32))[:, 0, :]
            d = Drawn(POLY, hull.astype(np.float64), 0.0, it.colour, it.emissive)
        elif kind == LIMB:
            pts = uv[s : s + 2]
            if zmin < NEAR_M:
                pts = cam.to_pixels(_clip_segment(pc[s : s + 2]))
            d = Drawn(LIMB, pts, f * it.radius_m / max(zmean, NEAR_M), it.colour, it.emissive)
        elif kind == BALL:
            if zmin < NEAR_M:
                continue
            d = Drawn(BALL, uv[s : s + 1], f * it.radius_m / zmin, it.colour, it.emissive)
        else:
            if zmin < NEAR_M:
                continue
            d = Drawn(RING, uv[s : s + n], f * it.radius_m / zmean, it.colour, it.emissive)
        keyed.append((-order, i, d))
    if not keyed:
        return Projection([], np.zeros((0, 2)), None)
    keyed.sort(key=_first_two)
    drawn = [d for _, _, d in keyed]
    pts = np.concatenate([d.pts for d in drawn])
    r = np.repeat([d.radius_px for d in drawn], [len(d.pts) for d in drawn])[:, None]
    lo, hi = (pts - r).min(axis=0).tolist(), (pts + r).max(axis=0).tolist()
    return Projection(drawn, pts, (lo[0], lo[1], hi[0], hi[1]))


def _first_two(t):
    return t[0], t[1]


def draw(
    proj: Projection, canvas: np.ndarray, origin: tuple[int, int], emissive: np.ndarray | None = None
) -> None:
    """Paint ``proj`` into the RGBA ``canvas`` whose pixel (0, 0) is image pixel ``origin``; lights are
    also painted 255 into the single-channel ``emissive`` canvas when one is given."""
    for d, pts in zip(proj.drawn, _fixed_points(proj, origin), strict=True):
        _draw_one(canvas, d.kind, pts, d.radius_px, (*d.colour, 255))
        if emissive is not None and d.emissive:
            _draw_one(emissive, d.kind, pts, d.radius_px, 255, cv2.LINE_8)


def draw_direct(
    proj: Projection, frame: np.ndarray, layers: list[tuple[np.ndarray, object]], lights=None
) -> None:
    """Paint ``proj`` straight into the full ``frame`` (anti-aliased) and each (layer, value) of ``layers``
    (hard-edged: ids, distances, light levels); ``lights`` = (emissive layer, value) for lamp heads.

    For small unannotated objects this skips the canvas and compositing, which cost more than the drawing."""
    for d, pts in zip(proj.drawn, _fixed_points(proj, (0, 0)), strict=True):
        _draw_one(frame, d.kind, pts, d.radius_px, d.colour)
        for layer, value in layers:
            _draw_one(layer, d.kind, pts, d.radius_px, value, cv2.LINE_8)
        if lights is not None and d.emissive:
            for layer, value in lights:
                _draw_one(layer, d.kind, pts, d.radius_px, value, cv2.LINE_8)


def _fixed_points(proj: Projection, origin: tuple[int, int]) -> list[np.ndarray]:
    """Each drawn item's points relative to ``origin``, in OpenCV's 1/16 px fixed point and centre
    convention (edge-convention pixels minus half a pixel)."""
    fixed = np.rint((proj.pts - (origin[0] + 0.5, origin[1] + 0.5)) * _ONE).astype(np.int32)
    out, start = [], 0
    for d in proj.drawn:
        n = len(d.pts)
        out.append(fixed[start : start + n])
        start += n
    return out


def _draw_one(
    img: np.ndarray, kind: int, pts: np.ndarray, radius_px: float, colour, line=cv2.LINE_AA
) -> None:
    if kind == POLY:
        cv2.fillConvexPoly(img, pts, colour, line, SHIFT)
    elif kind == LIMB:
        a, b = pts.tolist()
        cv2.line(img, a, b, colour, max(1, int(round(2 * radius_px))), line, SHIFT)
    elif kind == BALL:
        cv2.circle(img, pts[0].tolist(), max(1, int(round(radius_px * _ONE))), colour, -1, line, SHIFT)
    else:
        cv2.polylines(img, [pts], True, colour, max(1, int(round(2 * radius_px))), line, SHIFT)


def _faces_away(p0, p1, p2) -> bool:
    # Outward normal from the right-hand vertex order; the camera is the origin of the camera frame.
    ax, ay, az = p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]
    bx, by, bz = p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]
    return (ay * bz - az * by) * p0[0] + (az * bx - ax * bz) * p0[1] + (ax * by - ay * bx) * p0[2] >= 0.0


def clip_polygon(pc: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman against the plane Z = NEAR_M (keeps the part in front of the camera)."""
    out = []
    n = len(pc)
    for i in range(n):
        a, b = pc[i], pc[(i + 1) % n]
        a_in, b_in = a[2] >= NEAR_M, b[2] >= NEAR_M
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (NEAR_M - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _clip_segment(pc: np.ndarray) -> np.ndarray:
    a, b = pc[0], pc[-1]
    if a[2] < NEAR_M:
        a = b + (NEAR_M - b[2]) / (a[2] - b[2]) * (a - b)
    if b[2] < NEAR_M:
        b = a + (NEAR_M - a[2]) / (b[2] - a[2]) * (b - a)
    return np.stack([a, b])


def circle_points(centre, radius_m: float, axis_u, axis_v, n: int = 12) -> list[tuple[float, float, float]]:
    """n points of a circle in the plane spanned by unit vectors axis_u, axis_v (right-hand order)."""
    cx, cy, cz = centre
    (ux, uy, uz), (vx, vy, vz) = axis_u, axis_v
    out = []
    for cos_a, sin_a in _unit_circle(n):
        cu, sv = radius_m * cos_a, radius_m * sin_a
        out.append((cx + cu * ux + sv * vx, cy + cu * uy + sv * vy, cz + cu * uz + sv * vz))
    return out


@functools.lru_cache(maxsize=16)
def _unit_circle(n: int) -> tuple[tuple[float, float], ...]:
    return tuple((math.cos(2 * math.pi * k / n), math.sin(2 * math.pi * k / n)) for k in range(n))


def unit_hashes(seed: int, n: int) -> list[float]:
    """n reproducible numbers in [0, 1) from ``seed`` (splitmix64): per-object detail such as a tree's
    crown, without the ~30 us cost of creating a numpy Generator for each."""
    out, state = [], seed & 0xFFFFFFFFFFFFFFFF
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        out.append(((z ^ (z >> 31)) >> 11) / float(1 << 53))
    return out


# Faces of a hexahedron with corners 0-3 at the bottom (-x-y, +x-y, +x+y, -x+y) and 4-7 above them, each
# listed counter-clockwise seen from outside, so the right-hand normal points out (used for culling).
BOX_FACES = {
    "bottom": (0, 3, 2, 1),
    "top": (4, 5, 6, 7),
    "front": (2, 3, 7, 6),
    "back": (0, 1, 5, 4),
    "right": (1, 2, 6, 5),
    "left": (3, 0, 4, 7),
}


def box_corners(
    x0: float, x1: float, y0: float, y1: float, z0: float, z1: float
) -> list[tuple[float, float, float]]:
    """The 8 corners of an axis-aligned box in an object's body frame, in BOX_FACES order."""
    return [
        (x0, y0, z0),
        (x1, y0, z0),
        (x1, y1, z0),
        (x0, y1, z0),
        (x0, y0, z1),
        (x1, y0, z1),
        (x1, y1, z1),
        (x0, y1, z1),
    ]
