"""People as shapes: a small skeleton posed standing, walking or riding, dressed, then placed in the world.

Proportions are fractions of stature from Drillis & Contini's segment table (shoulder 0.818 H, hip 0.530 H,
knee 0.285 H, chin 0.870 H); children get a larger head and shorter legs. The body frame is x right,
y forward (the way the person faces), z up; ``place`` maps it into the world. Joints are plain tuples.
"""

from __future__ import annotations

import math

import numpy as np

from .draw import Shape, box_corners, circle_points
from .world import WorldObject

Vec = tuple[float, float, float]


def place(local, obj: WorldObject, flatten: float = 1.0, lift_m: float = 0.0) -> np.ndarray:
    """Body-frame points (N, 3) -> world. ``flatten`` < 1 squashes depth and ``lift_m`` then moves the
    points forward (a person printed on a poster, just proud of the panel)."""
    h = math.radians(obj.heading_deg)
    c, s = math.cos(h), math.sin(h)
    # Rows: body x (right), y (forward), z (up) expressed in world coordinates.
    basis = np.array([[c, -s, 0.0], [s * flatten, c * flatten, 0.0], [0.0, 0.0, 1.0]])
    origin = np.array([obj.x_m + s * lift_m, obj.y_m + c * lift_m, obj.base_z_m])
    return np.asarray(local, float).reshape(-1, 3) @ basis + origin


def _add(a: Vec, b: Vec, k: float = 1.0) -> Vec:
    return (a[0] + k * b[0], a[1] + k * b[1], a[2] + k * b[2])


def _proportions(H: float, child: bool) -> dict[str, float]:
    if child:
        f = dict(
            head_r=0.08,
            head_z=0.92,
            shoulder_z=0.78,
            hip_z=0.50,
            ankle_z=0.045,
            torso_w=0.11,
            waist_w=0.095,
            torso_d=0.065,
            shoulder_x=0.12,
            hip_x=0.06,
            upper_arm=0.16,
            forearm=0.13,
            foot=0.14,
        )
    else:
        f = dict(
            head_r=0.064,
            head_z=0.936,
            shoulder_z=0.815,
            hip_z=0.53,
            ankle_z=0.04,
            torso_w=0.105,
            waist_w=0.085,
            torso_d=0.06,
            shoulder_x=0.115,
            hip_x=0.055,
            upper_arm=0.17,
            forearm=0.145,
            foot=0.13,
        )
    return {k: v * H for k, v in f.items()}


def _leg(p: dict, side: float, hip_deg: float, knee_deg: float) -> tuple[Vec, Vec, Vec]:
    """Hip, knee and ankle; hip flexion swings the leg forward, knee flexion folds the shin back."""
    seg = (p["hip_z"] - p["ankle_z"]) / 2
    a, k = math.radians(hip_deg), math.radians(knee_deg)
    hip = (side * p["hip_x"], 0.0, p["hip_z"])
    knee = _add(hip, (0.0, math.sin(a), -math.cos(a)), seg)
    return hip, knee, _add(knee, (0.0, math.sin(a - k), -math.cos(a - k)), seg)


def _arm(p: dict, side: float, shoulder_z: float, fwd_deg: float, elbow_deg: float, out_deg: float):
    s, e, o = math.radians(fwd_deg), math.radians(elbow_deg), math.radians(out_deg)
    shoulder = (side * p["shoulder_x"], 0.0, shoulder_z)
    elbow = _add(shoulder, (side * math.sin(o), math.sin(s), -math.cos(s)), p["upper_arm"])
    return (
        shoulder,
        elbow,
        _add(elbow, (side * math.sin(o) * 0.5, math.sin(s + e), -math.cos(s + e)), p["forearm"]),
    )


def _box(
    x0, x1, y0, y1, z0, z1, top_x: float = 1.0, top_dy: float = 0.0, bottom_xy: float = 1.0
) -> list[Vec]:
    """Box corners with the top's width scaled by ``top_x`` and shifted ``top_dy`` forward, and the bottom's
    footprint scaled by ``bottom_xy`` (a tapered torso, a flared coat)."""
    c = box_corners(x0, x1, y0, y1, z0, z1)
    return [(x * bottom_xy, y * bottom_xy, z) for x, y, z in c[:4]] + [
        (x * top_x, y + top_dy, z) for x, y, z in c[4:]
    ]


def person_shape(
    obj: WorldObject, detail_px: float = 100.0, flatten: float = 1.0, lift_m: float = 0.0
) -> Shape:
    """A standing or walking adult or child (also used, flattened or stiff, for posters and mannequins).

    ``detail_px`` is the expected height on screen: below ~16 px hands, shoes and bags are left out."""
    child = obj.kind == "child" or obj.style.get("child", False)
    H = obj.height_m
    p = _proportions(H, child)
    pose, c, style = obj.pose, obj.colours, obj.style
    phase, stride = pose.get("phase", 0.0), pose.get("stride_deg", 0.0)
    swing = pose.get("arm_swing_deg", stride * 0.8)
    # Legs in opposite phase; a knee bends while its leg swings forward (hip angle increasing).
    legs = [
        _leg(p, side, stride * math.sin(ph), 4.0 + 1.4 * stride * max(0.0, math.cos(ph)))
        for side, ph in ((-1.0, phase), (1.0, phase + math.pi))
    ]
    drop = min(leg[2][2] for leg in legs) - p["ankle_z"]  # the lower foot stands on the ground
    lean_y = (p["shoulder_z"] - p["hip_z"]) * math.sin(
        math.radians(pose.get("lean_deg", 3.0 if stride else 0.0))
    )
    arms = []
    for side, ph in ((-1.0, phase), (1.0, phase + math.pi)):
        fwd = -swing * math.sin(ph) + pose.get("arm_fwd_deg", 0.0)
        elbow = pose.get("elbow_deg", 12.0) + 0.5 * swing * max(0.0, -math.sin(ph))
        if side > 0 and pose.get("phone", 0.0) > 0.5:  # right hand up in front of the chest
            fwd, elbow = 15.0, 105.0
        arms.append(_arm(p, side, p["shoulder_z"] - 0.02 * H, fwd, elbow, pose.get("arm_out_deg", 6.0)))

    skin = c.get("skin", (220, 180, 140))
    hair = None if style.get("bald") else c.get("hair", (40, 30, 25))
    shirt, pants, shoes = (
        c.get("shirt", (60, 80, 150)),
        c.get("pants", (50, 60, 90)),
        c.get("shoes", (30, 30, 30)),
    )
    outer = style.get("outer")  # None, "coat" or "skirt"
    fine = detail_px >= 16.0
    sh = Shape()
    lean = (0.0, lean_y, 0.0)

    # Torso: shoulders wider than the waist, leaning forward when walking; a coat or skirt continues below.
    ww, td = p["waist_w"], p["torso_d"]
    sh.hull(
        _box(-ww, ww, -td, td, p["hip_z"] - 0.03 * H, p["shoulder_z"] + 0.01 * H, p["torso_w"] / ww, lean_y),
        shirt,
    )
    if outer == "coat":
        coat = _box(-1.1 * ww, 1.1 * ww, -1.1 * td, 1.1 * td, 0.3 * H, p["hip_z"] + 0.05 * H, bottom_xy=1.25)
        sh.hull(coat, c.get("coat", shirt))
    elif outer == "skirt":
        sh.hull(_box(-ww, ww, -td, td, 0.36 * H, p["hip_z"] + 0.04 * H, bottom_xy=1.3), c.get("skirt", pants))
    shin_c = skin if style.get("shorts") else pants
    for hip, knee, ankle in legs:
        if outer is None:
            sh.limb(hip, knee, 0.045 * H, pants)
        sh.limb(knee, ankle, 0.032 * H, shin_c)
        if fine:
            heel = _add(ankle, (0.0, -0.25 * p["foot"], -p["ankle_z"] + 0.02 * H))
            sh.limb(heel, _add(heel, (0.0, p["foot"], 0.0)), 0.022 * H, shoes)
    forearm_c = skin if style.get("short_sleeves") else shirt
    for shoulder, elbow, hand in arms:
        sh.limb(_add(shoulder, lean), elbow, 0.028 * H, shirt)
        sh.limb(elbow, _add(hand, lean), 0.022 * H, forearm_c)
        if fine:
            sh.ball(_add(hand, lean), 0.026 * H, skin)
    head, r = (0.0, lean_y * 1.15, p["head_z"]), p["head_r"]
    sh.limb((0.0, lean_y, p["shoulder_z"]), head, 0.028 * H, skin, bias_m=-0.05)
    if hair is not None:
        back = _add(head, (0.0, -0.25 * r, 0.22 * r))  # hair sits back and up: a rim from the front
        sh.ball(back, 1.03 * r, hair)
        if style.get("long_hair") and fine:
            sh.limb(back, _add(back, (0.0, -0.15 * r, -2.0 * r)), 0.8 * r, hair)
    sh.ball(head, r, skin, bias_m=0.1 * r)
    if style.get("hat"):
        sh.ball(_add(head, (0.0, -0.05 * r, 0.45 * r)), 0.85 * r, c.get("hat", (30, 30, 35)), bias_m=0.15 * r)
    bag = style.get("bag") if fine else None
    if bag == "backpack":
        sh.hull(
            _box(-0.075 * H, 0.075 * H, -td - 0.1 * H, -td, 0.56 * H, 0.79 * H), c.get("bag", (40, 40, 45))
        )
    elif bag == "handbag":
        hx, hy, hz = _add(arms[1][2], lean)
        box = box_corners(
            hx - 0.025 * H, hx + 0.025 * H, hy - 0.06 * H, hy + 0.06 * H, hz - 0.13 * H, hz - 0.01 * H
        )
        sh.hull(box, c.get("bag", (90, 50, 30)))
    sh.points = place(sh.finish() - (0.0, 0.0, drop), obj, flatten, lift_m)
    return sh


def cyclist_shape(obj: WorldObject, detail_px: float = 100.0) -> Shape:
    """A rider on a bicycle: rings for wheels, limbs for tubes, the pedalling legs solved by two-link IK."""
    H, c, phase = obj.height_m, obj.colours, obj.pose.get("phase", 0.0)
    p = _proportions(H, False)
    s = H / 1.75
    wheel_r, frame_c = 0.34, c.get("frame", (160, 30, 30))
    rear, front = (0.0, -0.52 * s, wheel_r), (0.0, 0.52 * s, wheel_r)
    bb = (0.0, -0.05 * s, 0.3)
    leg = p["hip_z"] - p["ankle_z"]
    seat = _add(bb, (0.0, -0.2 * s, 0.8 * leg))
    head_tube = (0.0, 0.42 * s, seat[2] - 0.08)
    bar = (0.0, 0.36 * s, seat[2] + 0.08)
    sh = Shape()
    limb = sh.limb
    for hub in (rear, front):
        sh.ring(
            circle_points(hub, wheel_r, (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), 16 if detail_px > 20 else 8),
            0.025,
            (25, 25, 25),
        )
    limb(bb, seat, 0.018, frame_c)
    limb(seat, head_tube, 0.018, frame_c)
    limb(bb, _add(head_tube, (0.0, 0.02, -0.15)), 0.02, frame_c)
    limb(bb, rear, 0.014, frame_c)
    limb(seat, rear, 0.012, frame_c)
    limb(head_tube, front, 0.016, (120, 120, 125))
    limb(head_tube, bar, 0.015, (60, 60, 60))
    limb(_add(bar, (-0.25, 0.0, 0.0)), _add(bar, (0.25, 0.0, 0.0)), 0.015, (40, 40, 40))
    limb(_add(seat, (0.0, -0.08, 0.02)), _add(seat, (0.0, 0.08, 0.02)), 0.03, (20, 20, 20))

    shirt, pants = c.get("shirt", (200, 60, 40)), c.get("pants", (40, 40, 50))
    skin, shoes = c.get("skin", (220, 180, 140)), c.get("shoes", (30, 30, 30))
    hips = _add(seat, (0.0, 0.0, 0.05))
    for side, ph in ((-1.0, phase), (1.0, phase + math.pi)):
        hip = _add(hips, (side * p["hip_x"], 0.0, 0.0))
        pedal = _add(bb, (side * 0.1, 0.17 * math.cos(ph), 0.17 * math.sin(ph)))
        knee = _knee(hip, pedal, leg / 2, leg / 2)
        limb(hip, knee, 0.045 * H, pants)
        limb(knee, pedal, 0.032 * H, pants)
        limb(_add(pedal, (0.0, -0.05, 0.02)), _add(pedal, (0.0, 0.12, 0.02)), 0.022 * H, shoes)
    lean = math.radians(obj.pose.get("lean_deg", 32.0))
    torso_len = p["shoulder_z"] - p["hip_z"]
    axis = (0.0, math.sin(lean), math.cos(lean))
    normal = (0.0, math.cos(lean), -math.sin(lean))
    corners = []
    for t, half_w in ((0.0, p["waist_w"]), (1.0, p["torso_w"])):
        centre = _add(hips, axis, t * torso_len)
        for sx, sn in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            corners.append(_add(_add(centre, (sx * half_w, 0.0, 0.0)), normal, sn * p["torso_d"]))
    sh.hull(corners, shirt)
    shoulders = _add(hips, axis, torso_len)
    for side in (-1.0, 1.0):
        shoulder = _add(shoulders, (side * p["shoulder_x"], 0.0, 0.0))
        grip = _add(bar, (side * 0.22, 0.0, 0.0))
        elbow = (
            (shoulder[0] + grip[0]) / 2 + side * 0.04,
            (shoulder[1] + grip[1]) / 2,
            (shoulder[2] + grip[2]) / 2 - 0.05,
        )
        limb(shoulder, elbow, 0.028 * H, shirt)
        limb(elbow, grip, 0.022 * H, c.get("sleeve", shirt))
        sh.ball(grip, 0.026 * H, skin)
    head, r = _add(shoulders, (0.0, 0.05 * H, 0.12 * H)), p["head_r"]
    limb(shoulders, head, 0.028 * H, skin, bias_m=-0.05)
    sh.ball(_add(head, (0.0, -0.25 * r, 0.15 * r)), r, c.get("hair", (40, 30, 25)))
    sh.ball(head, r, skin, bias_m=0.1 * r)
    if "helmet" in c:
        sh.ball(_add(head, (0.0, -0.1 * r, 0.35 * r)), 1.05 * r, c["helmet"], bias_m=0.2 * r)
    sh.points = place(sh.finish(), obj)
    return sh


def _knee(hip: Vec, foot: Vec, a: float, b: float) -> Vec:
    """Two-link IK in the body's y-z plane: the knee joining thigh ``a`` and shin ``b``, bent forward."""
    dy, dz = foot[1] - hip[1], foot[2] - hip[2]
    d = min(math.hypot(dy, dz), a + b - 1e-3)
    alpha = math.acos(min(1.0, max(-1.0, (a * a + d * d - b * b) / (2 * a * d))))
    dy, dz = dy / d, dz / d
    ky, kz = dy * math.cos(alpha) - dz * math.sin(alpha), dy * math.sin(alpha) + dz * math.cos(alpha)
    return ((hip[0] + foot[0]) / 2, hip[1] + a * ky, hip[2] + a * kz)
