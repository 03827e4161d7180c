"""The static street behind the objects: sky, ground, road and markings, sidewalks, facades with windows.

Besides the colour image it returns, per pixel, which surface was hit (sky, ground, facade, far skyline)
and which pixels emit light (lit windows); ``surface_depth`` turns the surface map back into distances
along each pixel's ray analytically, at whatever resolution fog or night lighting need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .camera import NEAR_M, Camera
from .draw import SHIFT, clip_polygon
from .world import CURB_M, Building, Scene

SKY, GROUND, FACADE, SKYLINE = 0, 1, 2, 3  # surface ids (objects paint 255)
SKY_M = 1.0e4  # depth given to sky pixels
SKYLINE_Y_M = 600.0  # distant city silhouettes stand this far ahead of the camera
VIEW_M = 900.0  # how far ahead road and sidewalks are drawn
BUILDINGS_M = 300.0  # buildings further ahead than this are left to the skyline
WINDOWS_M = 110.0  # windows further ahead are a few pixels: the facade colour is enough
_ONE = 1 << SHIFT


@dataclass
class Layers:
    surface: np.ndarray  # (H, W) uint8 id of the background surface (objects do not change it)
    emissive: np.ndarray  # (H, W) uint8, 255 where a light source shows
    objects: np.ndarray | None = None  # (H, W) uint8, 255 where an object covers the background


def draw_background(scene: Scene, cam: Camera, ego_y_m: float) -> tuple[np.ndarray, Layers]:
    W, H = cam.width, cam.height
    frame, surface = _sky_and_ground(scene, cam)
    emissive = np.zeros((H, W), np.uint8)
    painter = _Painter(frame, surface, emissive, cam, ego_y_m)
    road, y0, y1 = scene.road, ego_y_m - 5.0, ego_y_m + VIEW_M

    quads, colours = [], []

    def ground(x0, x1, ya, yb, colour):
        quads.append([[x0, ya, 0.0], [x1, ya, 0.0], [x1, yb, 0.0], [x0, yb, 0.0]])
        colours.append(colour)

    _skyline(painter, scene, ego_y_m)
    for side in (-1, 1):
        inner, outer = road.sidewalk_x_range(side)
        ground(inner, outer, y0, y1, road.sidewalk_rgb)
        edge = road.x_right_m if side > 0 else road.x_left_m
        ground(edge, edge + side * CURB_M, y0, y1, road.curb_rgb)
    ground(road.x_left_m, road.x_right_m, y0, y1, road.asphalt_rgb)
    painter.quads(np.array(quads, float), colours, None)  # ground: the surface map says so already
    painter.many(_markings(scene, ego_y_m), road.marking_rgb)
    near_first = sorted(
        (
            b
            for b in scene.buildings
            if b.kind == "building" and b.y1_m > ego_y_m and b.y0_m < ego_y_m + BUILDINGS_M
        ),
        key=lambda b: -b.y0_m,
    )
    ends = {(b.side, round(b.y1_m, 3)): b for b in scene.buildings}  # who stands just before each building
    quads, colours = [], []
    for b in near_first:
        before = ends.get((b.side, round(b.y0_m, 3)))
        hidden_end = before is not None and before.kind == "building" and before.height_m >= b.height_m
        _facade(b, scene, ego_y_m, quads, colours, end_wall=not hidden_end)
    painter.quads(np.array(quads, float).reshape(-1, 4, 3), colours, FACADE)
    _windows(painter, [b for b in near_first if b.y0_m < ego_y_m + WINDOWS_M], scene)
    return frame, Layers(surface, emissive)


def _skyline(painter: _Painter, scene: Scene, ego_y_m: float) -> None:
    """Distant city blocks as one stepped silhouette, tinted toward the horizon (aerial perspective)."""
    if not scene.skyline:
        return
    y = ego_y_m + SKYLINE_Y_M
    outline = [(scene.skyline[0][0], y, 0.0)]
    for x0, x1, h in scene.skyline:
        outline += [(x0, y, h), (x1, y, h)]
    outline.append((scene.skyline[-1][1], y, 0.0))
    pc = painter.cam.to_camera(np.array(outline), ego_y_m)
    if pc[:, 2].min() < NEAR_M:
        return
    px = painter._fixed(painter.cam.to_pixels(pc))
    cv2.fillPoly(painter.frame, [px], _mix(scene.sky_horizon_rgb, (95, 100, 110), 0.35), cv2.LINE_AA, SHIFT)
    cv2.fillPoly(painter.surface, [px], SKYLINE, cv2.LINE_8, SHIFT)


def _sky_and_ground(scene: Scene, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Sky gradient by elevation angle (so it tilts with roll) above the horizon, verge colour below it,
    and the matching SKY/GROUND surface map; computed on a 4x coarser grid and upsampled (the sky is
    smooth, and the horizon's few-pixel softness reads as haze)."""
    step, f, rot = 4, cam.focal_px, cam.rotation()
    a = ((np.arange(step / 2, cam.width, step, dtype=np.float32) - cam.cx) / f)[None, :]
    b = ((np.arange(step / 2, cam.height, step, dtype=np.float32) - cam.cy) / f)[:, None]
    dz = (a * rot[0, 2] + b * rot[1, 2] + rot[2, 2]) / np.sqrt(a * a + b * b + 1.0)  # sine of elevation
    t = np.clip(dz * 2.5, 0.0, 1.0)
    t = t * (2.0 - t)  # brightens toward the horizon quickly, then flattens
    small = np.empty((*dz.shape, 3), np.float32)
    for c, (top, hor) in enumerate(zip(scene.sky_top_rgb, scene.sky_horizon_rgb, strict=True)):
        small[..., c] = hor + (top - hor) * t
    ground = dz <= 0
    small[ground] = scene.road.verge_rgb
    size = (cam.width, cam.height)
    frame = cv2.resize(small.astype(np.uint8), size, interpolation=cv2.INTER_LINEAR)
    surface = cv2.resize(ground.view(np.uint8) * np.uint8(GROUND), size, interpolation=cv2.INTER_NEAREST)
    return frame, surface


def _mix(a, b, k: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - k) + y * k)) for x, y in zip(a, b, strict=True))


class _Painter:
    """Projects world quads and fills them into the frame and the surface/emissive layers."""

    def __init__(self, frame, surface, emissive, cam: Camera, ego_y_m: float):
        self.frame, self.surface, self.emissive, self.cam, self.ego = frame, surface, emissive, cam, ego_y_m

    def quads(self, quads: np.ndarray, colours: list, surface_id: int | None) -> None:
        """Large quads (N, 4, 3), one colour each, in order; any crossing the near plane is clipped."""
        if len(quads) == 0:
            return
        pc = self.cam.to_camera(quads.reshape(-1, 3), self.ego).reshape(-1, 4, 3)
        zmin, zmax = pc[..., 2].min(axis=1), pc[..., 2].max(axis=1)
        px = self._pixels(pc)
        for i, colour in enumerate(colours):
            if zmax[i] < NEAR_M:
                continue
            if zmin[i] < NEAR_M:
                clipped = clip_polygon(pc[i])
                if len(clipped) < 3:
                    continue
                pts = self._fixed(self.cam.to_pixels(clipped))
            else:
                pts = px[i]
            cv2.fillConvexPoly(self.frame, pts, colour, cv2.LINE_AA, SHIFT)
            if surface_id is not None:
                cv2.fillConvexPoly(self.surface, pts, surface_id, cv2.LINE_8, SHIFT)

    def many(self, quads: np.ndarray, colour, surface_id: int | None = None, emissive: bool = False) -> None:
        """Small quads (N, 4, 3) of one colour in one call; any reaching behind the near plane is dropped."""
        if len(quads) == 0:
            return
        pc = self.cam.to_camera(quads.reshape(-1, 3), self.ego).reshape(-1, 4, 3)
        pc = pc[pc[:, :, 2].min(axis=1) > NEAR_M]
        if len(pc) == 0:
            return
        px = pc[..., :2] / pc[..., 2:3] * self.cam.focal_px + (self.cam.cx, self.cam.cy)
        on = (px[..., 0].max(1) > 0) & (px[..., 0].min(1) < self.cam.width)
        on &= (px[..., 1].max(1) > 0) & (px[..., 1].min(1) < self.cam.height)
        if not on.any():
            return
        polys = list(self._fixed(px[on]))
        cv2.fillPoly(self.frame, polys, colour, cv2.LINE_AA, SHIFT)
        if surface_id is not None and self.surface is not None:
            cv2.fillPoly(self.surface, polys, surface_id, cv2.LINE_8, SHIFT)
        if emissive and self.emissive is not None:
            cv2.fillPoly(self.emissive, polys, 255, cv2.LINE_8, SHIFT)

    def grouped(self, quads: np.ndarray, groups: list) -> None:
        """Small quads (N, 4, 3) on an already painted surface, projected at once and filled per run
        (first, end, colour, emissive)."""
        pc = self.cam.to_camera(quads.reshape(-1, 3), self.ego).reshape(-1, 4, 3)
        ok = pc[:, :, 2].min(axis=1) > NEAR_M
        px = self._pixels(pc)
        u, v = px[..., 0], px[..., 1]
        ok &= (
            (u.max(1) > 0)
            & (u.min(1) < self.cam.width * _ONE)
            & (v.max(1) > 0)
            & (v.min(1) < self.cam.height * _ONE)
        )
        for first, end, colour, emissive in groups:
            polys = [px[i] for i in range(first, end) if ok[i]]
            if not polys:
                continue
            cv2.fillPoly(self.frame, polys, colour, cv2.LINE_AA, SHIFT)
            if emissive:
                cv2.fillPoly(self.emissive, polys, 255, cv2.LINE_8, SHIFT)

    def _pixels(self, pc: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            px = pc[..., :2] / np.maximum(pc[..., 2:3], NEAR_M) * self.cam.focal_px + (
                self.cam.cx,
                self.cam.cy,
            )
        return self._fixed(px)

    @staticmethod
    def _fixed(px: np.ndarray) -> np.ndarray:
        return np.clip(np.round((px - 0.5) * _ONE), -(2**26), 2**26).astype(np.int32)


def _strips(
    xs: list[tuple[float, float]], y0: float, y1: float, dash_m: float, period_m: float
) -> np.ndarray:
    """Ground quads (N, 4, 3) for lines across x intervals ``xs``: dashed when dash_m < period_m."""
    if dash_m >= period_m:
        starts, length = np.array([y0]), y1 - y0
    else:
        starts, length = np.arange(math.floor(y0 / period_m) * period_m, y1, period_m), dash_m
    a = np.array([x[0] for x in xs], float)[:, None]
    b = np.array([x[1] for x in xs], float)[:, None]
    s = np.broadcast_to(starts[None, :], (len(xs), len(starts)))
    a, b = np.broadcast_to(a, s.shape), np.broadcast_to(b, s.shape)
    z = np.zeros_like(s)
    quad = [
        np.stack([a, s, z], -1),
        np.stack([b, s, z], -1),
        np.stack([b, s + length, z], -1),
        np.stack([a, s + length, z], -1),
    ]
    return np.stack(quad, -2).reshape(-1, 4, 3)


def _markings(scene: Scene, ego_y_m: float) -> np.ndarray:
    road, w, lw = scene.road, scene.road.lane_width_m, 0.15
    near, far = ego_y_m - 3.0, ego_y_m + 250.0
    solid, dashed = [], []
    right_edge = w / 2 if road.parking_right_m > 0 else road.x_right_m - 0.3
    left_edge = road.x_left_m + (road.parking_left_m if road.parking_left_m > 0 else 0.3)
    solid += [(right_edge - lw, right_edge), (left_edge, left_edge + lw)]
    for i in range(road.lanes_same - 1):
        x = -(i + 0.5) * w
        dashed.append((x - lw / 2, x + lw / 2))
    if road.lanes_opposite:
        x = -(road.lanes_same - 0.5) * w
        if road.centre_line == "double":
            solid += [(x - 0.25, x - 0.1), (x + 0.1, x + 0.25)]
        else:
            dashed.append((x - lw / 2, x + lw / 2))
        for i in range(road.lanes_opposite - 1):
            x = -(road.lanes_same + i + 0.5) * w
            dashed.append((x - lw / 2, x + lw / 2))
    quads = [_strips(solid, near, far, 1.0, 1.0)]
    if dashed:
        quads.append(_strips(dashed, near, far, 3.0, 9.0))  # urban dashes: 3 m line, 6 m gap
    if road.zebra_y_m is not None:
        z0, z1 = road.zebra_y_m, road.zebra_y_m + road.zebra_length_m
        xs = np.arange(road.x_left_m + 0.4, road.x_right_m - 0.4, 1.0)
        quads.append(_strips([(x, x + 0.5) for x in xs], z0, z1, 1.0, 1.0))
        quads.append(_strips([(-(road.lanes_same - 0.5) * w, w / 2)], z0 - 2.0, z0 - 1.6, 1.0, 1.0))
    out = np.concatenate(quads)
    # Lines that start behind the camera are cut where the ground is surely in front of the near plane.
    out[:, :, 1] = np.maximum(out[:, :, 1], ego_y_m + 1.0)
    return out


def _facade_x(scene: Scene, b: Building) -> float:
    return scene.road.facade_right_x_m if b.side > 0 else scene.road.facade_left_x_m


def _facade(b: Building, scene: Scene, ego_y_m: float, quads: list, colours: list, end_wall: bool) -> None:
    """End wall (when a gap or a lower neighbour shows it), front wall and cornice, in painting order."""
    s, x, h = b.side, _facade_x(scene, b), b.height_m
    y0, y1 = max(b.y0_m, ego_y_m - 5.0), b.y1_m
    if end_wall and b.y0_m > ego_y_m + 1.0:
        quads.append([[x, b.y0_m, 0.0], [x + s * 15, b.y0_m, 0.0], [x + s * 15, b.y0_m, h], [x, b.y0_m, h]])
        colours.append(_mix(b.rgb, (0, 0, 0), 0.3))
    quads.append([[x, y0, 0.0], [x, y1, 0.0], [x, y1, h], [x, y0, h]])
    colours.append(b.rgb)
    xc = x - s * 0.05
    quads.append([[xc, y0, h - 0.5], [xc, y1, h - 0.5], [xc, y1, h], [xc, y0, h]])
    colours.append(_mix(b.rgb, (0, 0, 0), 0.25))


def _windows(painter: _Painter, buildings: list[Building], scene: Scene) -> None:
    """Shop fronts and window grids of ``buildings`` (far first), built and projected in one vectorised
    pass and filled per building. Which windows are lit is a hash of the building's seed and the window
    number, so it stays put when the camera moves."""
    if not buildings:
        return
    night = scene.lighting != "day"
    # Per building: facade x, first window corner, grid pitch and size, grid shape.
    xs = [_facade_x(scene, b) - b.side * 0.02 for b in buildings]
    z0 = [b.floor_m + 0.8 if b.shop_front else 0.9 for b in buildings]
    cols = [
        max(0, math.ceil((b.y1_m - b.window_size_m[0] - 0.5 - (b.y0_m + 0.8)) / b.window_spacing_m))
        for b in buildings
    ]
    rows = [
        max(0, math.ceil((b.height_m - b.window_size_m[1] - 0.6 - z) / b.floor_m))
        for b, z in zip(buildings, z0, strict=True)
    ]
    counts = np.array([c * r for c, r in zip(cols, rows, strict=True)])
    total = int(counts.sum())
    quads = [np.zeros((0, 4, 3))]
    lit = np.zeros(0, bool)
    if total:
        per = np.repeat(np.arange(len(buildings)), counts)
        k = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)  # window number in its building
        param = np.array(
            [
                [
                    x,
                    b.y0_m + 0.8,
                    z,
                    b.window_spacing_m,
                    b.floor_m,
                    *b.window_size_m,
                    c,
                    b.seed,
                    b.lit_fraction,
                ]
                for x, b, z, c in zip(xs, buildings, z0, cols, strict=True)
            ]
        )[per]
        x, y, z = (
            param[:, 0],
            param[:, 1] + (k % param[:, 7]) * param[:, 3],
            param[:, 2] + (k // param[:, 7]) * param[:, 4],
        )
        ww, wh = param[:, 5], param[:, 6]
        quads.append(
            np.stack(
                [
                    np.stack([x, y, z], -1),
                    np.stack([x, y + ww, z], -1),
                    np.stack([x, y + ww, z + wh], -1),
                    np.stack([x, y, z + wh], -1),
                ],
                1,
            )
        )
        lit = night & (_hash_unit(param[:, 8].astype(np.uint64), k.astype(np.uint64)) < param[:, 9])
    # Shop fronts follow the windows, one per building that has one.
    shops = [b for b in buildings if b.shop_front]
    quads.append(
        np.array(
            [
                [
                    [x, b.y0_m + 0.6, 0.3],
                    [x, b.y1_m - 0.6, 0.3],
                    [x, b.y1_m - 0.6, 2.7],
                    [x, b.y0_m + 0.6, 2.7],
                ]
                for x, b in zip(xs, buildings, strict=True)
                if b.shop_front
            ]
        ).reshape(-1, 4, 3)
    )
    shop_lit = night & (_hash_unit(np.array([b.seed for b in shops], np.uint64), np.uint64(7)) < 0.6)
    # What each quad is: 0 window, 1 lit window, 2 shop front, 3 lit shop front.
    what = np.concatenate([lit.astype(int), 2 + shop_lit.astype(int)])
    owner = np.concatenate(
        [np.repeat(np.arange(len(buildings)), counts), [i for i, b in enumerate(buildings) if b.shop_front]]
    ).astype(int)
    order = np.lexsort((what, owner))  # far building first, and one run per kind of quad within it
    quads = np.concatenate(quads)[order]
    keys = list(zip(owner[order].tolist(), what[order].tolist(), strict=True))
    groups, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            b, kind = buildings[keys[start][0]], keys[start][1]
            warm = (255, 214, 150) if b.seed % 10 < 7 else (220, 230, 255)
            colour = (b.window_rgb, warm, _mix(b.window_rgb, (0, 0, 0), 0.3), (205, 190, 150))[kind]
            groups.append((start, i, colour, kind % 2 == 1))
            start = i
    if len(quads):
        painter.grouped(quads, groups)


def _hash_unit(seed: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers from (seed, k) with a splitmix64-style integer mix: exact on every platform."""
    with np.errstate(over="ignore"):
        z = (
            seed * np.uint64(0x9E3779B97F4A7C15)
            + k * np.uint64(0xBF58476D1CE4E5B9)
            + np.uint64(0x94D049BB133111EB)
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def surface_depth(surface: np.ndarray, cam: Camera, scene: Scene, step: int = 1) -> np.ndarray:
    """Distance along each pixel's ray to the ground, the facade planes or the skyline (sky: SKY_M), from the
    surface map sampled every ``step`` pixels; exact for flat surfaces, which is all the background has."""
    rays = cam.pixel_rays(step)
    sid = surface[step // 2 :: step, step // 2 :: step][: rays.shape[0], : rays.shape[1]]
    dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
    t_ground = cam.height_m / np.maximum(-dz, 1e-4)
    x_face = np.where(dx > 0, scene.road.facade_right_x_m, scene.road.facade_left_x_m).astype(np.float32)
    t_face = x_face / np.where(np.abs(dx) < 1e-4, np.float32(1e-4), dx)
    t_far = SKYLINE_Y_M / np.maximum(dy, 1e-3)
    depth = np.select([sid == GROUND, sid == FACADE, sid == SKYLINE], [t_ground, t_face, t_far], SKY_M)
    return np.minimum(depth, SKY_M).astype(np.float32)


def draw_contact_shadows(
    frame: np.ndarray, scene: Scene, cam: Camera, ego_y_m: float, strength: float
) -> None:
    """Soft dark footprints under vehicles and people (ambient occlusion: what grounds them visually)."""
    quads = []
    for o in scene.objects:
        if o.category is None or o.kind in ("poster", "mannequin") or not (0.5 < o.y_m - ego_y_m < 120.0):
            continue
        hl, hw = o.length_m / 2 + 0.15, o.width_m / 2 + 0.1
        h = math.radians(o.heading_deg)
        f, r = np.array([math.sin(h), math.cos(h)]), np.array([math.cos(h), -math.sin(h)])
        c = np.array([o.x_m, o.y_m])
        corners = [c - f * hl - r * hw, c - f * hl + r * hw, c + f * hl + r * hw, c + f * hl - r * hw]
        quads.append([[p[0], p[1], 0.0] for p in corners])
    if not quads or strength <= 0:
        return
    mask = np.zeros(frame.shape[:2], np.uint8)
    _Painter(mask, None, None, cam, ego_y_m).many(np.array(quads, float), 255)
    k = max(3, (frame.shape[1] // 128) | 1)
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    shade = cv2.multiply(frame, cv2.cvtColor(mask, cv2.COLOR_GRAY2RGB), scale=strength / 255.0)
    cv2.subtract(frame, shade, dst=frame)
