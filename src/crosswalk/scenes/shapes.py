"""Vehicles, street furniture and human look-alikes as shapes, and the per-kind dispatch.

Vehicles are stacks of 8-corner solids (body, cabin, cargo box) whose faces are back-face culled, with
windows, lights and wheels as decals just outside a face. Dimensions are typical of European/US fleets:
car 4.0-4.8 m long, van ~5 m, box truck 6-9 m, city bus 10-12 m.
"""

from __future__ import annotations

import dataclasses

from .body import cyclist_shape, person_shape, place
from .draw import BOX_FACES, Shape, box_corners, circle_points, unit_hashes
from .world import WorldObject

_SHADE = {"top": 1.12, "front": 0.95, "back": 0.95, "right": 0.8, "left": 0.8}
GLASS = (48, 58, 70)
TYRE = (22, 22, 24)


def object_shapes(obj: WorldObject, detail_px: float) -> tuple[Shape | None, Shape]:
    """(backdrop, body) in world metres. The backdrop (a poster's frame, a shop window) is drawn but is
    not part of the object's mask. ``detail_px``, the expected height on screen, drops small details."""
    kind = obj.kind
    if kind in ("adult", "child"):
        return None, person_shape(obj, detail_px)
    if kind == "cyclist":
        return None, cyclist_shape(obj, detail_px)
    if kind in ("car", "van", "truck", "bus"):
        return None, vehicle_shape(obj, detail_px)
    if kind == "poster":
        return poster_shapes(obj, detail_px)
    if kind == "mannequin":
        return mannequin_shapes(obj, detail_px)
    return None, prop_shape(obj)


def _scale(rgb, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * k)) for c in rgb)


_NORMAL = {
    "front": (0.0, 1.0, 0.0),
    "back": (0.0, -1.0, 0.0),
    "right": (1.0, 0.0, 0.0),
    "left": (-1.0, 0.0, 0.0),
}


class _Solid:
    """An 8-corner solid in a vehicle's body frame: culled faces, and decals placed on them."""

    def __init__(self, sh: Shape, corners: list, colour, bias_m: float = 0.0, anchor: int = -1):
        self.sh, self.c, self.bias = sh, corners, bias_m
        # The whole solid sorts by its centre, or by another solid's (a cabin always after its body).
        centre = tuple(sum(p[k] for p in corners) / 8 for k in range(3))
        self.anchor = anchor if anchor >= 0 else sh.add_point(centre)
        for name, idx in BOX_FACES.items():
            if name != "bottom":
                sh.poly(
                    [corners[i] for i in idx],
                    _scale(colour, _SHADE[name]),
                    cull=True,
                    anchor=self.anchor,
                    bias_m=bias_m,
                )

    def decals(
        self, face: str, us, v: tuple[float, float], colour, emissive: bool = False, order: float = 0.01
    ):
        """Quads on ``face`` spanning each (u0, u1) in ``us`` across and ``v`` up (0..1, bilinear so that
        trapezoid faces work), 1 cm proud of it, drawn after the face."""
        (ax, ay, az), (bx, by, bz), (cx, cy, cz), (dx, dy, dz) = (self.c[i] for i in BOX_FACES[face])
        nx, ny, nz = _NORMAL[face]
        ax, ay, az = ax + 0.01 * nx, ay + 0.01 * ny, az + 0.01 * nz
        bx, by, bz = bx + 0.01 * nx, by + 0.01 * ny, bz + 0.01 * nz
        cx, cy, cz = cx + 0.01 * nx, cy + 0.01 * ny, cz + 0.01 * nz
        dx, dy, dz = dx + 0.01 * nx, dy + 0.01 * ny, dz + 0.01 * nz

        def at(u: float, w: float):  # bilinear on the face, u across (a -> b), w up (a -> d)
            p, q, r, s = (1 - w) * (1 - u), (1 - w) * u, w * u, w * (1 - u)
            return (
                p * ax + q * bx + r * cx + s * dx,
                p * ay + q * by + r * cy + s * dy,
                p * az + q * bz + r * cz + s * dz,
            )

        for u0, u1 in us:
            quad = [at(u0, v[0]), at(u1, v[0]), at(u1, v[1]), at(u0, v[1])]
            self.sh.poly(
                quad, colour, cull=True, emissive=emissive, anchor=self.anchor, bias_m=self.bias + order
            )


def _wheels(sh: Shape, axles_y: list[float], radius: float, anchor: int, half_w: float, fine: bool) -> None:
    """Each wheel twice: a disc drawn before the body (seen under it) and a decal over a visible side."""
    for y in axles_y:
        for side in (-1.0, 1.0):
            u, v = ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)) if side > 0 else ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0))
            ring = circle_points((side * (half_w + 0.02), y, radius), radius, u, v, 10 if fine else 6)
            sh.poly(ring, TYRE, anchor=anchor, bias_m=-0.4)
            if fine:  # the tyre again over the body side when that side faces the camera, and its hub
                sh.poly(ring, TYRE, cull=True, anchor=anchor, bias_m=0.02)
                hub = circle_points((side * (half_w + 0.03), y, radius), radius * 0.45, u, v, 8)
                sh.poly(hub, (120, 120, 125), cull=True, anchor=anchor, bias_m=0.03)


def vehicle_shape(obj: WorldObject, detail_px: float = 100.0) -> Shape:
    L, W, H, kind = obj.length_m, obj.width_m, obj.height_m, obj.kind
    hw, hl = W / 2, L / 2
    paint = obj.colours.get("body", (150, 150, 155))
    lit = bool(obj.style.get("lights_on", False))
    fine = detail_px >= 12.0
    head_c = (255, 250, 225) if lit else (205, 205, 195)
    tail_c = (255, 45, 35) if lit else (150, 25, 25)
    sh = Shape()
    pair = ((0.05, 0.2), (0.8, 0.95))  # left and right lamp positions across a face
    if kind == "car":
        belt = 0.56 * H + 0.03
        floor = (0.1, 0.22)
        body = _Solid(sh, box_corners(-hw, hw, -hl, hl, 0.22, belt), paint)
        cabin_c = box_corners(-hw * 0.95, hw * 0.95, -hl + 0.1 * L, hl - 0.25 * L, belt, H)
        roof_y = (-hl + 0.2 * L, -hl + 0.2 * L, hl - 0.48 * L, hl - 0.48 * L)  # raked screens
        # Tumblehome: the roof is narrower than the waist.
        cabin_c = cabin_c[:4] + [(x * 0.84, y, z) for (x, _, z), y in zip(cabin_c[4:], roof_y, strict=True)]
        cabin = _Solid(sh, cabin_c, paint, bias_m=0.05, anchor=body.anchor)
        if fine:
            for f in ("front", "back"):
                cabin.decals(f, [(0.07, 0.93)], (0.1, 0.92), GLASS)
            for f in ("left", "right"):
                cabin.decals(f, [(0.05, 0.47), (0.53, 0.93)], (0.12, 0.88), GLASS)
            body.decals("front", [(0.3, 0.7)], (0.3, 0.55), (35, 35, 38))
            body.decals("back", [(0.38, 0.62)], (0.25, 0.45), (220, 220, 210))
        lamp_v, axles, radius = (0.55, 0.85), [-0.32 * L, 0.32 * L], 0.31
    elif kind == "van":
        c = box_corners(-hw, hw, -hl, hl, 0.3, H)
        c[6:8] = [(x, y - 0.9, z) for x, y, z in c[6:8]]  # sloped windscreen
        floor = (0.1, 0.3)
        body = _Solid(sh, c, paint)
        if fine:
            body.decals("front", [(0.06, 0.94)], (0.52, 0.95), GLASS)
            body.decals("right", [(0.72, 0.92)], (0.55, 0.9), GLASS)
            body.decals("left", [(0.08, 0.28)], (0.55, 0.9), GLASS)
            body.decals("back", [(0.07, 0.47), (0.53, 0.93)], (0.55, 0.9), GLASS)
        lamp_v, axles, radius = (0.08, 0.16), [-0.33 * L, 0.33 * L], 0.34
    elif kind == "truck":
        cab_h = min(H - 0.3, 2.9)
        floor = (0.3, 0.95)
        cab = _Solid(sh, box_corners(-hw * 0.97, hw * 0.97, hl - 2.1, hl, 0.5, cab_h), paint)
        cargo_c = obj.colours.get("cargo", (225, 225, 220))
        body = _Solid(sh, box_corners(-hw, hw, -hl, hl - 2.25, 0.95, H), cargo_c)
        if fine:
            cab.decals("front", [(0.06, 0.94)], (0.55, 0.92), GLASS)
            cab.decals("right", [(0.5, 0.9)], (0.55, 0.9), GLASS)
            cab.decals("left", [(0.1, 0.5)], (0.55, 0.9), GLASS)
            body.decals("back", [(0.49, 0.51)], (0.03, 0.97), _scale(cargo_c, 0.6))
        if fine or lit:
            cab.decals("front", [(0.04, 0.18), (0.82, 0.96)], (0.12, 0.22), head_c, lit, 0.02)
            body.decals("back", [(0.03, 0.15), (0.85, 0.97)], (0.02, 0.08), tail_c, lit, 0.02)
        lamp_v, axles, radius = None, [hl - 1.1, -hl + 1.3, -hl + 2.5], 0.5
    else:  # bus
        floor = (0.15, 0.32)
        body = _Solid(sh, box_corners(-hw, hw, -hl, hl, 0.32, H), paint)
        if fine:
            body.decals("front", [(0.04, 0.96)], (0.32, 0.83), GLASS)
            body.decals("back", [(0.1, 0.9)], (0.6, 0.9), GLASS)
            n = max(3, int(L / 1.5))
            panes = [(0.04 + i * 0.94 / n, 0.02 + (i + 1) * 0.94 / n) for i in range(n)]
            for f in ("left", "right"):
                body.decals(f, panes, (0.45, 0.86), GLASS)
        if fine or lit:
            sign_c = (255, 170, 40) if lit else (40, 40, 40)
            body.decals("front", [(0.15, 0.85)], (0.86, 0.95), sign_c, lit, 0.02)
        lamp_v, axles, radius = (0.08, 0.16), [-0.3 * L, 0.3 * L], 0.5
    if lamp_v is not None and (fine or lit):
        body.decals("front", pair, lamp_v, head_c, lit, 0.02)
        body.decals("back", (pair[0], (0.82, 0.97)), lamp_v, tail_c, lit, 0.02)
    floor_c = box_corners(-hw * 0.9, hw * 0.9, -hl * 0.92, hl * 0.92, floor[0], floor[1])
    sh.hull(floor_c, (28, 28, 30), anchor=body.anchor, bias_m=-0.5)
    _wheels(sh, axles, radius, body.anchor, hw, detail_px >= 25.0)
    sh.points = place(sh.finish(), obj)
    return sh


def prop_shape(obj: WorldObject) -> Shape:
    """Unannotated street furniture that looks a little like a person to a detector."""
    c, h, kind = obj.colours, obj.height_m, obj.kind
    sh = Shape()
    limb = sh.limb
    if kind == "lamp":
        arm = obj.style.get("arm_m", 1.5)
        limb((0, 0, 0), (0, 0, h), 0.075, c.get("pole", (70, 72, 75)))
        limb((0, 0, h - 0.1), (0, arm, h), 0.045, c.get("pole", (70, 72, 75)))
        lit = bool(obj.style.get("on", False))
        head = box_corners(-0.15, 0.15, arm - 0.3, arm + 0.25, h - 0.18, h - 0.02)
        sh.hull(head, c.get("head", (255, 225, 170)) if lit else (180, 180, 175), emissive=lit)
    elif kind == "sign":
        limb((0, 0, 0), (0, 0, h), 0.035, (150, 150, 155))
        z, shape = h - 0.35, obj.style.get("shape", "round")
        if shape == "round":
            outline = circle_points((0, 0, 0), 0.3, (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0), 16)
        elif shape == "triangle":
            outline = [(0.33, 0.0, -0.22), (0.0, 0.0, 0.33), (-0.33, 0.0, -0.22)]
        else:
            outline = [(0.3, 0.0, -0.3), (-0.3, 0.0, -0.3), (-0.3, 0.0, 0.3), (0.3, 0.0, 0.3)]
        sh.poly([(x, 0.04, z + pz) for x, _, pz in outline], (235, 235, 235), cull=True)
        sh.poly(
            [(0.8 * x, 0.05, z + 0.8 * pz) for x, _, pz in outline],
            c.get("plate", (200, 30, 30)),
            cull=True,
            bias_m=0.01,
        )
        sh.poly([(x, 0.02, z + pz) for x, _, pz in outline[::-1]], (120, 120, 125), cull=True)
    elif kind == "tree":
        crown_r = obj.width_m / 2
        limb((0, 0, 0), (0, 0, h * 0.45 + crown_r * 0.4), 0.08 + 0.03 * h / 4, c.get("trunk", (80, 60, 45)))
        leaves = c.get("leaves", (60, 100, 50))
        h16 = unit_hashes(int(obj.style.get("seed", 0)), 16)  # the crown's own numbers: same from any view
        jitter = [[v - 0.5 for v in h16[k : k + 4]] for k in range(0, 16, 4)]
        for i, (jx, jy, jz, jr) in enumerate(jitter):
            centre = (jx * crown_r, jy * crown_r, h - crown_r + 0.6 * jz * crown_r)
            sh.ball(centre, (0.7 + 0.2 * jr) * crown_r, _scale(leaves, 0.8 + 0.12 * i), bias_m=0.2 * i)
    elif kind == "bollard":
        limb((0, 0, 0), (0, 0, h - 0.08), 0.09, c.get("body", (60, 60, 65)))
        limb((0, 0, h - 0.3), (0, 0, h - 0.22), 0.095, (230, 230, 230), bias_m=0.01)
    elif kind == "hydrant":
        body = c.get("body", (190, 30, 25))
        limb((0, 0, 0), (0, 0, 0.08), 0.14, body)
        limb((0, 0, 0.05), (0, 0, h - 0.1), 0.11, body)
        limb((-0.19, 0, h * 0.6), (0.19, 0, h * 0.6), 0.05, body, bias_m=0.01)
        sh.ball((0.0, 0.0, h - 0.1), 0.12, _scale(body, 0.85))
    sh.points = place(sh.finish(), obj)
    return sh


def poster_shapes(obj: WorldObject, detail_px: float) -> tuple[Shape, Shape]:
    """An advertising panel (facade or free-standing) with a flat, life-size person printed on it."""
    fig_h, z0 = obj.height_m, -obj.base_z_m
    half_w = max(0.5, 0.32 * fig_h + 0.1)
    top, bottom = 1.18 * fig_h, -0.08 * fig_h
    lit = bool(obj.style.get("backlit", False))

    def quad(x0, x1, za, zb, y):  # facing +y in the body frame (towards the viewer)
        return [(x1, y, za), (x0, y, za), (x0, y, zb), (x1, y, zb)]

    back = Shape()
    if obj.style.get("stand", False):  # free-standing: two legs to the ground
        for x in (-half_w * 0.7, half_w * 0.7):
            back.limb((x, -0.02, z0), (x, -0.02, bottom), 0.04, (70, 70, 75))
    frame = quad(-half_w - 0.06, half_w + 0.06, bottom - 0.06, top + 0.06, 0.0)
    back.poly(frame, obj.colours.get("frame", (60, 60, 64)), cull=True)
    back.poly(
        quad(-half_w, half_w, bottom, top, 0.01),
        obj.colours.get("ground", (210, 200, 170)),
        emissive=lit,
        cull=True,
        bias_m=0.01,
    )
    back.poly([(x, y - 0.02, z) for x, y, z in frame[::-1]], (90, 90, 95), cull=True)
    back.points = place(back.finish(), obj)
    figure = dataclasses.replace(obj, kind="adult")
    body = person_shape(figure, detail_px, flatten=0.02, lift_m=0.03)
    if lit:
        body.items = [it._replace(emissive=True) for it in body.items]
    return back, body


def mannequin_shapes(obj: WorldObject, detail_px: float) -> tuple[Shape, Shape]:
    """A shop-window dummy on a plinth before a glazed shop front, the facade style['back_m'] behind."""
    back_m = obj.style.get("back_m", 0.6)
    frame_obj = dataclasses.replace(obj, base_z_m=0.0)
    lit = bool(obj.style.get("window_lit", False))
    glass = (225, 205, 160) if lit else (38, 46, 56)
    window = [(1.4, -back_m, 0.25), (-1.4, -back_m, 0.25), (-1.4, -back_m, 2.9), (1.4, -back_m, 2.9)]
    frame = [
        (1.5, -back_m - 0.01, 0.15),
        (-1.5, -back_m - 0.01, 0.15),
        (-1.5, -back_m - 0.01, 3.0),
        (1.5, -back_m - 0.01, 3.0),
    ]
    back = Shape()
    back.poly(frame, (70, 68, 66), bias_m=-1.0)
    back.poly(window, glass, emissive=lit, bias_m=-0.5)
    back.hull(box_corners(-0.4, 0.4, -0.4, 0.4, 0.0, obj.base_z_m), (200, 200, 205))
    back.points = place(back.finish(), frame_obj)
    turned = dataclasses.replace(obj, heading_deg=obj.heading_deg + obj.pose.get("turn_deg", 0.0))
    body = person_shape(turned, detail_px)
    if lit:
        body.items = [it._replace(emissive=True) for it in body.items]
    return back, body
