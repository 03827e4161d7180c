"""Scene -> image + annotation, and the seeded one-call entry point ``render_frame``.

Objects are painted far to near, each into its own small RGBA canvas whose alpha is the object's mask.
Every painted pixel also records which object owns it, so after the last object each annotated object's
visibility is (pixels it still owns) / (pixels of its own mask, including any part outside the image):
occlusion by nearer objects of any kind, and truncation, both lower it. The full box is the analytic
extent of the projected geometry (sub-pixel, may leave the image); the visible box bounds the owned pixels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from .background import draw_background, draw_contact_shadows, surface_depth
from .camera import NEAR_M, Camera
from .config import SceneConfig
from .draw import draw, draw_direct, project
from .effects import background_light, finish, light_at
from .shapes import object_shapes
from .world import Scene, WorldObject, sample_scene

GENERATOR = "crosswalk.scenes/1"
DEFAULT_CONFIG = SceneConfig()
_NOBODY = -1  # owner id of pixels no annotated object holds


def render_frame(seed: int, index: int, config: SceneConfig = DEFAULT_CONFIG) -> tuple[bytes, dict]:
    """Sample and render frame ``index`` of dataset ``seed``: JPEG bytes and its annotation.

    The same (seed, index) gives byte-identical output in any process: all randomness comes from
    ``np.random.default_rng([seed, index])``."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, config)
    image, ann = render_scene(scene)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, scene.jpeg_quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for seed={seed} index={index}")
    ann["key"] = f"{index:09d}"
    ann["extra"].update(seed=int(seed), index=int(index), jpeg_quality=int(scene.jpeg_quality))
    return jpeg.tobytes(), ann


def render_scene(scene: Scene, camera: Camera | None = None, ego_y_m: float = 0.0) -> tuple[np.ndarray, dict]:
    """Render ``scene`` seen from ``camera`` (default: the scene's) moved ``ego_y_m`` metres along the road.

    Returns an RGB uint8 (H, W, 3) image and its annotation (crosswalk.data.schema). Objects behind the
    camera or beyond ``scene.max_range_m`` are neither drawn nor annotated."""
    cam = camera or scene.camera
    W, H = cam.width, cam.height
    frame, layers = draw_background(scene, cam, ego_y_m)
    if scene.lighting != "night":
        draw_contact_shadows(frame, scene, cam, ego_y_m, strength=0.5 if scene.lighting == "day" else 0.3)
    light = background_light(scene, cam, ego_y_m, layers) if scene.lighting != "day" else None

    depth = None
    if scene.fog_visibility_m:  # background distances on a 2x grid (blocky only where fog hides detail)
        depth = cv2.resize(
            surface_depth(layers.surface, cam, scene, 2), (W, H), interpolation=cv2.INTER_NEAREST
        )

    # Every painted pixel remembers its object: slot k for an object's body, n + k for its backdrop.
    visible = _visible_objects(scene, cam, ego_y_m)
    n = len(visible)
    sink = _Sink(frame, np.full((H, W), _NOBODY, np.int16), layers.emissive, light, depth)
    if n:  # one light level and one distance per object, taken at its middle
        centres = np.array([(o.x_m, o.y_m, o.base_z_m + 0.45 * o.height_m) for _, o, _ in visible])
        dists = np.linalg.norm(centres - (0.0, ego_y_m, cam.height_m), axis=1).tolist()
        lights = [None] * n
        if light is not None:
            x, y, z = (np.ascontiguousarray(centres[:, k], np.float32) for k in range(3))
            lights = light_at(scene, x, y, z, np.zeros(n, bool), ego_y_m).tolist()
    painted = []  # (slot, scene index, object, box, own mask pixels)
    for slot, (i, obj, detail_px) in enumerate(visible):
        backdrop, body = object_shapes(obj, detail_px)
        looks = (dists[slot], lights[slot])
        if backdrop is not None:
            _paint(project(backdrop.points, backdrop.items, cam, ego_y_m), sink, n + slot, looks, False)
        annotate = obj.category is not None
        proj = project(body.points, body.items, cam, ego_y_m)
        if not annotate and backdrop is None:  # street furniture: no mask to measure, draw it directly
            _paint_direct(proj, sink, slot, looks)
            continue
        result = _paint(proj, sink, slot, looks, annotate)
        if annotate and result is not None:
            painted.append((slot, i, obj, *result))
    owner = sink.owner
    owned = np.bincount(owner.ravel().astype(np.int64) + 1, minlength=2 * n + 1)
    objects = []
    for slot, i, obj, box, own_px in painted:
        record = _annotate(obj, i, box, own_px, int(owned[slot + 1]), owner, slot, cam, ego_y_m, scene)
        if record is not None:
            objects.append(record)
    if scene.weather == "rain":  # the wet-road sheen needs to know which ground pixels objects cover
        layers.objects = cv2.compare(owner, _NOBODY, cv2.CMP_NE)

    rng = np.random.default_rng([scene.render_seed, int(round(ego_y_m * 1000)) % 2**32])
    image = finish(frame, layers, light, depth, scene, rng)
    ann = {
        "key": "000000000",
        "width": W,
        "height": H,
        "lighting": scene.lighting,
        "weather": scene.weather,
        "camera": cam.as_dict(),
        "objects": objects,
        "extra": {
            "generator": GENERATOR,
            "ego_y_m": float(ego_y_m),
            "zebra": scene.road.zebra_y_m is not None,
            "fog_visibility_m": scene.fog_visibility_m,
            "noise_sigma": round(scene.noise_sigma, 3),
            "blur_px": int(scene.blur_px),
            "light_level": round(scene.light_level, 4),
        },
    }
    return image, ann


def _visible_objects(scene: Scene, cam: Camera, ego_y_m: float) -> list[tuple[int, WorldObject, float]]:
    """(scene index, object, approximate height on screen) for objects in view, far to near.

    A cheap test on each object's bounding cylinder, all objects at once: in front of the camera, within
    range, overlapping the image, and (unless annotated) at least 2 px tall."""
    objs = scene.objects
    if not objs:
        return []
    base = np.array([[o.x_m, o.y_m, o.base_z_m] for o in objs])
    tops = base + np.array([[0.0, 0.0, o.height_m] for o in objs])
    radius = np.array([max(o.length_m, o.width_m) / 2 + 0.3 for o in objs])
    pc = cam.to_camera(np.concatenate([base, tops]), ego_y_m)
    z = np.maximum(np.minimum(pc[: len(objs), 2], pc[len(objs) :, 2]), NEAR_M)
    f = cam.focal_px
    u = pc[:, 0] / np.maximum(pc[:, 2], NEAR_M) * f + cam.cx
    v = pc[:, 1] / np.maximum(pc[:, 2], NEAR_M) * f + cam.cy
    half_w = f * radius / z
    u0 = np.minimum(u[: len(objs)], u[len(objs) :]) - half_w
    u1 = np.maximum(u[: len(objs)], u[len(objs) :]) + half_w
    v0 = np.minimum(v[: len(objs)], v[len(objs) :]) - half_w
    v1 = np.maximum(v[: len(objs)], v[len(objs) :]) + half_w
    height_px = np.abs(v[: len(objs)] - v[len(objs) :])
    centre_z = (pc[: len(objs), 2] + pc[len(objs) :, 2]) / 2
    out = []
    for i, o in enumerate(objs):
        if centre_z[i] < NEAR_M + 0.5 or u1[i] < 0 or u0[i] > cam.width or v1[i] < 0 or v0[i] > cam.height:
            continue
        if o.category is None and height_px[i] < 2.0:
            continue
        d = o.footprint_distance_m(ego_y_m)
        if d < scene.max_range_m:
            out.append((d, i, o, float(height_px[i])))
    out.sort(key=lambda t: (-t[0], t[1]))
    return [(i, o, h) for _, i, o, h in out]


class _Sink(NamedTuple):
    """Full-frame buffers that painting writes: colour, owner ids, lights, and light/depth when used."""

    frame: np.ndarray
    owner: np.ndarray
    emissive: np.ndarray
    light: np.ndarray | None
    depth: np.ndarray | None


def _paint(proj, sink: _Sink, owner_id: int, looks: tuple, full_mask: bool):
    """Draw into a canvas over the object's extent and composite it; returns (box, own mask pixels).

    ``looks`` is the object's (distance, light) for the fog and light maps. With ``full_mask`` the canvas
    also covers the part outside the image (up to one image size beyond, the schema's limit), so the own
    mask counts truncated pixels too."""
    box = proj.box
    if box is None:
        return None
    H, W = sink.owner.shape
    lo_x, lo_y, hi_x, hi_y = (-W, -H, 2 * W, 2 * H) if full_mask else (0, 0, W, H)
    x0, y0 = max(math.floor(box[0]) - 1, lo_x), max(math.floor(box[1]) - 1, lo_y)
    x1, y1 = min(math.ceil(box[2]) + 1, hi_x), min(math.ceil(box[3]) + 1, hi_y)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
    glow = np.zeros(canvas.shape[:2], np.uint8) if any(d.emissive for d in proj.drawn) else None
    draw(proj, canvas, (x0, y0), glow)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if ix1 > ix0 and iy1 > iy0:
        rows, cols, inside = (
            slice(iy0 - y0, iy1 - y0),
            slice(ix0 - x0, ix1 - x0),
            (slice(iy0, iy1), slice(ix0, ix1)),
        )
        sub = canvas[rows, cols]
        alpha = sub[..., 3]
        # Premultiplied "over": dst * (1 - alpha) + src.
        keep = cv2.cvtColor(cv2.bitwise_not(alpha), cv2.COLOR_GRAY2RGB)
        dst = sink.frame[inside]
        dst[:] = cv2.add(cv2.multiply(dst, keep, scale=1.0 / 255.0), cv2.cvtColor(sub, cv2.COLOR_RGBA2RGB))
        mask = alpha >= 128
        sink.owner[inside][mask] = owner_id
        em = glow[rows, cols] if glow is not None else None
        if em is not None:
            np.copyto(sink.emissive[inside], em, where=mask)
        if sink.depth is not None:
            sink.depth[inside][mask] = looks[0]
        if sink.light is not None:
            region = sink.light[inside]
            region[mask] = looks[1]
            if em is not None:
                region[em > 0] = 1.0
    own_px = int(np.count_nonzero(canvas[..., 3] >= 128)) if full_mask else 0
    return box, own_px


def _paint_direct(proj, sink: _Sink, owner_id: int, looks: tuple) -> None:
    """Draw straight into the frame and the id/distance/light maps (see draw.draw_direct)."""
    if proj.box is None:
        return
    layers: list = [(sink.owner, owner_id)]
    if sink.depth is not None:
        layers.append((sink.depth, looks[0]))
    if sink.light is not None:
        layers.append((sink.light, tuple(looks[1])))
    lights = [(sink.emissive, 255)] + ([(sink.light, (1.0, 1.0, 1.0))] if sink.light is not None else [])
    draw_direct(proj, sink.frame, layers, lights)


def _annotate(
    obj: WorldObject,
    index: int,
    box,
    own_px: int,
    visible_px: int,
    owner: np.ndarray,
    slot: int,
    cam: Camera,
    ego_y_m: float,
    scene: Scene,
) -> dict | None:
    W, H = cam.width, cam.height
    x1, y1, x2, y2 = box
    if x2 <= 0 or y2 <= 0 or x1 >= W or y1 >= H:  # wholly outside
        return None
    if x1 < -W or y1 < -H or x2 > 2 * W or y2 > 2 * H:  # beyond the schema's limit for a truncated box
        return None
    if y2 - y1 < scene.min_height_px or own_px == 0 or visible_px == 0:
        return None
    visibility = visible_px / own_px
    if visibility < scene.min_visibility:
        return None
    bx0, by0 = max(int(math.floor(x1)) - 1, 0), max(int(math.floor(y1)) - 1, 0)
    bx1, by1 = min(int(math.ceil(x2)) + 1, W), min(int(math.ceil(y2)) + 1, H)
    ys, xs = np.nonzero(owner[by0:by1, bx0:bx1] == slot)
    vx1, vy1 = max(float(xs.min() + bx0), max(x1, 0.0)), max(float(ys.min() + by0), max(y1, 0.0))
    vx2, vy2 = min(float(xs.max() + bx0 + 1), min(x2, W)), min(float(ys.max() + by0 + 1), min(y2, H))
    vx1, vy1, vx2, vy2 = (round(v, 3) for v in (vx1, vy1, vx2, vy2))
    if vx2 <= vx1 or vy2 <= vy1:  # after rounding: a sliver under 0.001 px would round to zero width
        return None
    area = (x2 - x1) * (y2 - y1)
    inside = max(min(x2, W) - max(x1, 0.0), 0.0) * max(min(y2, H) - max(y1, 0.0), 0.0)
    return {
        "category": obj.category,
        "kind": obj.kind,
        "box": [round(x1, 3), round(y1, 3), round(x2, 3), round(y2, 3)],
        "visible_box": [vx1, vy1, vx2, vy2],
        "visibility": round(min(1.0, visibility), 4),
        "truncation": round(min(max(1.0 - inside / area, 0.0), 1.0), 4),
        # Along the road from the camera to the foot point: what the ground-plane row formula recovers.
        "distance_m": round(max(obj.y_m - ego_y_m, 0.0), 3),
        "height_px": round(y2 - y1, 3),
        "ignore": bool(obj.ignore),
        "track_id": index,  # index into scene.objects: lets a caller follow one object across frames
    }
