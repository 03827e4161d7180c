"""Who and what stands in the street: samplers for each object kind and the placement of a whole frame's cast.

The ``sample_*`` helpers are public so a later stage can put a pedestrian exactly where it wants and let the
generator pick only the looks.
"""

from __future__ import annotations

import math

import numpy as np

from .config import SceneConfig
from .world import Building, Rand, Scene, WorldObject

SKIN = (
    (255, 222, 196),
    (236, 196, 160),
    (222, 170, 128),
    (196, 136, 92),
    (158, 104, 70),
    (118, 80, 56),
    (88, 60, 42),
)
HAIR = ((28, 24, 22), (58, 40, 30), (98, 68, 44), (196, 166, 108), (150, 148, 146), (132, 66, 38))
BRIGHT = (
    (180, 40, 40),
    (40, 70, 160),
    (232, 232, 228),
    (220, 190, 60),
    (60, 120, 60),
    (222, 120, 40),
    (220, 130, 170),
    (110, 60, 130),
    (120, 120, 125),
    (60, 150, 160),
    (200, 180, 150),
)
DARK = ((22, 22, 25), (30, 35, 60), (52, 52, 58), (70, 50, 38), (40, 50, 40), (60, 30, 35))
PANTS = (
    (50, 68, 110),
    (34, 44, 70),
    (25, 25, 27),
    (90, 90, 95),
    (168, 150, 110),
    (80, 60, 45),
    (200, 200, 195),
)
SHOES = ((25, 25, 25), (230, 230, 230), (90, 60, 40), (110, 110, 115))
PAINT = (
    (200, 200, 202),
    (30, 30, 32),
    (150, 152, 158),
    (165, 30, 30),
    (40, 60, 120),
    (235, 235, 235),
    (90, 95, 100),
    (60, 90, 60),
    (200, 160, 50),
    (110, 20, 20),
    (170, 170, 150),
)
VEHICLE_SIZE_M = {  # (length, width, height) ranges
    "car": ((4.0, 4.8), (1.7, 1.9), (1.4, 1.6)),
    "van": ((4.8, 5.6), (1.9, 2.05), (1.9, 2.4)),
    "truck": ((6.0, 9.0), (2.3, 2.5), (3.0, 3.8)),
    "bus": ((10.0, 12.0), (2.5, 2.55), (3.0, 3.2)),
}
VEHICLE_KINDS = ("car", "van", "truck", "bus")


def _pick(rng: np.random.Generator, palette):
    return tuple(int(c) for c in palette[int(rng.integers(len(palette)))])


def sample_pedestrian(
    rng: np.random.Generator,
    x_m: float,
    y_m: float,
    heading_deg: float,
    *,
    child: bool = False,
    walking: bool = True,
) -> WorldObject:
    """A person with random stature, clothes, bag and pose at a chosen spot and heading."""
    rng = Rand(rng)
    height = float(rng.uniform(1.0, 1.45) if child else rng.normal(1.72, 0.09))
    height = min(max(height, 1.0), 1.95)
    dark = rng.random() < 0.4  # dark clothing is what makes night detection hard
    shirt = _pick(rng, DARK if dark else BRIGHT)
    colours = {
        "skin": _pick(rng, SKIN),
        "hair": _pick(rng, HAIR),
        "shirt": shirt,
        "pants": _pick(rng, DARK if dark else PANTS),
        "shoes": _pick(rng, SHOES),
        "bag": _pick(rng, DARK + BRIGHT[:4]),
        "coat": _pick(rng, DARK + PANTS[3:5]),
        "skirt": _pick(rng, DARK + BRIGHT),
        "hat": _pick(rng, DARK + BRIGHT[:3]),
    }
    r = rng.random()
    style = {
        "outer": "coat" if r < 0.15 else ("skirt" if r < 0.27 else None),
        "short_sleeves": bool(rng.random() < 0.3),
        "shorts": bool(rng.random() < 0.1),
        "long_hair": bool(rng.random() < 0.3),
        "hat": bool(rng.random() < 0.12),
        "bag": rng.choice(("none", "backpack", "handbag"), p=(0.6, 0.25, 0.15)),
    }
    pose = {
        "phase": float(rng.uniform(0, 2 * math.pi)),
        "stride_deg": float(rng.uniform(18, 30) if walking else rng.uniform(0, 3)),
        "elbow_deg": float(rng.uniform(8, 30)),
        "phone": float(not walking and rng.random() < 0.3),
    }
    return WorldObject(
        kind="child" if child else "adult",
        x_m=x_m,
        y_m=y_m,
        heading_deg=heading_deg,
        height_m=height,
        width_m=0.5 * height / 1.7,
        length_m=0.35 * height / 1.7,
        category="pedestrian",
        colours=colours,
        style=style,
        pose=pose,
    )


def sample_cyclist(rng: np.random.Generator, x_m: float, y_m: float, heading_deg: float) -> WorldObject:
    rng = Rand(rng)
    colours = {
        "skin": _pick(rng, SKIN),
        "hair": _pick(rng, HAIR),
        "shirt": _pick(rng, BRIGHT + DARK),
        "pants": _pick(rng, PANTS[:4] + DARK),
        "shoes": _pick(rng, SHOES),
        "frame": _pick(rng, PAINT),
    }
    if rng.random() < 0.5:
        colours["helmet"] = _pick(rng, BRIGHT + DARK)
    return WorldObject(
        kind="cyclist",
        x_m=x_m,
        y_m=y_m,
        heading_deg=heading_deg,
        height_m=float(rng.uniform(1.6, 1.9)),
        width_m=0.6,
        length_m=1.8,
        category="cyclist",
        colours=colours,
        pose={"phase": float(rng.uniform(0, 2 * math.pi)), "lean_deg": float(rng.uniform(20, 40))},
    )


def sample_vehicle(
    rng: np.random.Generator, kind: str, x_m: float, y_m: float, heading_deg: float, lights_on: bool = False
) -> WorldObject:
    rng = Rand(rng)
    (l0, l1), (w0, w1), (h0, h1) = VEHICLE_SIZE_M[kind]
    colours = {"body": _pick(rng, PAINT), "cargo": _pick(rng, PAINT[:3] + PAINT[5:6])}
    return WorldObject(
        kind=kind,
        x_m=x_m,
        y_m=y_m,
        heading_deg=heading_deg,
        height_m=float(rng.uniform(h0, h1)),
        width_m=float(rng.uniform(w0, w1)),
        length_m=float(rng.uniform(l0, l1)),
        category="vehicle",
        colours=colours,
        style={"lights_on": lights_on},
    )


_PROP_HEIGHT_M = {
    "lamp": (6.0, 9.0),
    "sign": (2.4, 3.0),
    "tree": (4.0, 9.0),
    "bollard": (0.8, 1.0),
    "hydrant": (0.6, 0.8),
}


def sample_prop(
    rng: np.random.Generator, kind: str, x_m: float, y_m: float, heading_deg: float, lit: bool = False
) -> WorldObject:
    """Street furniture (drawn, never annotated): lamp, sign, tree, bollard or hydrant."""
    rng = Rand(rng)
    obj = WorldObject(
        kind=kind,
        x_m=x_m,
        y_m=y_m,
        heading_deg=heading_deg,
        width_m=0.3,
        length_m=0.3,
        height_m=float(rng.uniform(*_PROP_HEIGHT_M[kind])),
    )
    if kind == "lamp":
        obj.style.update(arm_m=float(rng.uniform(0.8, 2.0)), on=lit)
        obj.colours["head"] = _pick(rng, ((255, 210, 140), (240, 245, 255)))  # sodium or LED
    elif kind == "sign":
        obj.style["shape"] = ("round", "triangle", "square")[int(rng.integers(3))]
        obj.colours["plate"] = _pick(rng, ((200, 30, 30), (30, 70, 170), (230, 190, 40)))
    elif kind == "tree":
        obj.width_m = float(rng.uniform(2.5, 5.0))  # crown diameter
        obj.style["seed"] = int(rng.integers(0, 2**31 - 1))
        obj.colours["leaves"] = _pick(rng, ((60, 100, 50), (80, 120, 55), (45, 80, 45), (100, 120, 60)))
    else:
        obj.colours["body"] = _pick(rng, ((190, 30, 25), (220, 180, 40), (60, 60, 65), (200, 110, 30)))
    return obj


def populate(rng: np.random.Generator, config: SceneConfig, scene: Scene) -> list[WorldObject]:
    rng = Rand(rng)
    road, lit = scene.road, scene.lighting != "day"
    objects: list[WorldObject] = []
    objects += _street_furniture(rng, config, scene)
    vehicles = _vehicles(rng, config, scene)
    objects += vehicles
    n_ped = (
        0
        if rng.random() < config.p_no_pedestrians
        else int(rng.integers(*config.pedestrians_range, endpoint=True))
    )
    log_lo, log_hi = (math.log(d) for d in config.pedestrian_distance_range_m)
    for _ in range(n_ped):
        y = math.exp(rng.uniform(log_lo, log_hi))
        child = bool(rng.random() < config.p_child)
        r = rng.random()
        if road.zebra_y_m is not None and r < 0.3:  # on or waiting at the zebra
            y = road.zebra_y_m + rng.uniform(0.3, road.zebra_length_m - 0.3)
            x = rng.uniform(road.x_left_m - 1.0, road.x_right_m + 1.0)
            ped = sample_pedestrian(
                rng,
                x,
                y,
                rng.choice([90.0, -90.0]) + rng.normal(0, 8),
                child=child,
                walking=rng.random() < 0.8,
            )
        elif r < 0.3 + config.p_crossing:  # jaywalking across the road
            x = rng.uniform(road.x_left_m + 0.5, road.x_right_m - 0.3)
            ped = sample_pedestrian(rng, x, y, rng.choice([90.0, -90.0]) + rng.normal(0, 15), child=child)
        else:  # on a sidewalk, walking along it or standing
            side = 1 if rng.random() < 0.55 else -1
            inner, outer = road.sidewalk_x_range(side)
            x = rng.uniform(min(inner, outer) + 0.3, max(inner, outer) - 0.3)
            walking = rng.random() < 0.7
            heading = rng.choice([0.0, 180.0]) + rng.normal(0, 8) if walking else rng.uniform(-180, 180)
            ped = sample_pedestrian(rng, x, y, heading, child=child, walking=walking)
        if _clear_of(ped, vehicles):  # nobody stands inside a car
            objects.append(ped)
    for _ in range(int(rng.integers(*config.cyclists_range, endpoint=True))):
        y = float(rng.uniform(6.0, 60.0))
        if road.zebra_y_m is not None and rng.random() < 0.25:
            x = rng.uniform(road.x_left_m, road.x_right_m)
            cyc = sample_cyclist(rng, x, road.zebra_y_m + road.zebra_length_m / 2, rng.choice([90.0, -90.0]))
        else:
            x = road.x_right_m - road.parking_right_m - rng.uniform(0.5, 1.2)
            cyc = sample_cyclist(rng, x, y, rng.choice([0.0, 0.0, 180.0]) + rng.normal(0, 4))
        if _clear_of(cyc, vehicles):
            objects.append(cyc)
    objects += _lookalikes(rng, config, scene, lit)
    return objects


def _clear_of(obj: WorldObject, vehicles: list[WorldObject], margin_m: float = 0.3) -> bool:
    """True when ``obj``'s centre is outside every vehicle's footprint grown by its own size and a margin."""
    reach = max(obj.length_m, obj.width_m) / 2 + margin_m
    for v in vehicles:
        h = math.radians(v.heading_deg)
        dx, dy = obj.x_m - v.x_m, obj.y_m - v.y_m
        along, across = dx * math.sin(h) + dy * math.cos(h), dx * math.cos(h) - dy * math.sin(h)
        if abs(along) < v.length_m / 2 + reach and abs(across) < v.width_m / 2 + reach:
            return False
    return True


def _street_furniture(rng: np.random.Generator, config: SceneConfig, scene: Scene) -> list[WorldObject]:
    road, lit = scene.road, scene.lighting != "day"
    out = []
    spacing = float(rng.uniform(25.0, 45.0))  # street-lamp pitch
    for side in (-1, 1):
        if rng.random() < 0.25:
            continue
        inner, _ = road.sidewalk_x_range(side)
        y = float(rng.uniform(0.0, spacing))
        while y < min(config.max_range_m, 120.0):  # facing the road; further out they are hairlines
            out.append(sample_prop(rng, "lamp", inner + side * 0.4, y, -90.0 * side, lit=lit))
            y += spacing
    kinds = ["sign", "tree", "bollard", "hydrant"]
    for _ in range(int(rng.integers(*config.distractors_range, endpoint=True))):
        kind = rng.choice(kinds, p=(0.25, 0.3, 0.3, 0.15))
        side = 1 if rng.random() < 0.55 else -1
        inner, outer = road.sidewalk_x_range(side)
        off = rng.uniform(0.3, 0.7) if kind != "tree" else rng.uniform(0.8, abs(outer - inner) - 0.5)
        y = math.exp(rng.uniform(math.log(5.0), math.log(90.0)))
        heading = 180.0 if side > 0 or rng.random() < 0.5 else 0.0  # signs face traffic on their side
        out.append(sample_prop(rng, kind, inner + side * off, y, heading + rng.normal(0, 10)))
    for b in scene.buildings:  # trees in the green gaps
        if b.kind == "green" and b.y1_m > 0 and b.y0_m < 90.0 and rng.random() < 0.7:
            x_f = road.facade_right_x_m if b.side > 0 else road.facade_left_x_m
            for y in np.arange(b.y0_m + rng.uniform(1, 5), b.y1_m, rng.uniform(8.0, 14.0)):
                x = x_f + b.side * rng.uniform(0.5, 4.0)
                out.append(sample_prop(rng, "tree", x, float(y), 0.0))
    return out


def _vehicles(rng: np.random.Generator, config: SceneConfig, scene: Scene) -> list[WorldObject]:
    road, lights = scene.road, scene.lighting != "day"
    out = []
    lanes = [(x, 0.0) for x in road.lane_centres_same()] + [(x, 180.0) for x in road.lane_centres_opposite()]
    y_next = {x: (12.0 if x == 0 else 4.0) for x, _ in lanes}  # keep the ego lane clear right ahead
    for _ in range(int(rng.integers(*config.moving_vehicles_range, endpoint=True))):
        x, heading = lanes[int(rng.integers(len(lanes)))]
        kind = rng.choice(VEHICLE_KINDS, p=config.vehicle_kind_weights)
        v = sample_vehicle(rng, kind, x + rng.normal(0, 0.15), 0.0, heading + rng.normal(0, 1.0), lights)
        v.y_m = y_next[x] + v.length_m / 2 + rng.uniform(0.0, 30.0)
        y_next[x] = v.y_m + v.length_m / 2 + 4.0
        if v.y_m < config.max_range_m:
            out.append(v)
    parked_w = (0.75, 0.2, 0.05, 0.0) if rng.random() < 0.9 else config.vehicle_kind_weights
    n_parked = int(rng.integers(*config.parked_vehicles_range, endpoint=True))
    for side, width in ((1, road.parking_right_m), (-1, road.parking_left_m)):
        if width <= 0:
            continue
        x = (road.x_right_m - width / 2 + 0.15) if side > 0 else (road.x_left_m + width / 2 - 0.15)
        y = float(rng.uniform(-6.0, 12.0))
        for _ in range(n_parked):
            kind = rng.choice(VEHICLE_KINDS, p=parked_w)
            v = sample_vehicle(rng, kind, x, 0.0, (0.0 if side > 0 else 180.0) + rng.normal(0, 1.5))
            v.y_m = y + v.length_m / 2
            y = v.y_m + v.length_m / 2 + rng.uniform(0.8, 12.0)
            if road.zebra_y_m is not None and abs(v.y_m - road.zebra_y_m) < v.length_m / 2 + 5:
                continue  # no parking on the approach to a zebra
            out.append(v)
    return out


def _lookalikes(rng: np.random.Generator, config: SceneConfig, scene: Scene, lit: bool) -> list[WorldObject]:
    """Posters and mannequins: human-shaped, annotated as ignore regions (CityPersons' label 0)."""
    road, out = scene.road, []
    fronts = [b for b in scene.buildings if b.kind == "building" and b.y1_m > 14.0 and b.y0_m < 60.0]
    if rng.random() < config.p_poster:
        person = sample_pedestrian(rng, 0.0, 0.0, 0.0, walking=rng.random() < 0.5)
        person.kind, person.ignore, person.height_m = "poster", True, float(rng.uniform(1.1, 1.9))
        person.style["backlit"] = lit
        person.colours["ground"] = _pick(rng, BRIGHT)
        if fronts and rng.random() < 0.6:  # on a facade, facing the road
            b = fronts[int(rng.integers(len(fronts)))]
            x_f = road.facade_right_x_m if b.side > 0 else road.facade_left_x_m
            person.x_m, person.y_m = x_f - b.side * 0.02, float(rng.uniform(max(b.y0_m, 8.0) + 1, b.y1_m - 1))
            person.heading_deg, person.base_z_m = -90.0 * b.side, float(rng.uniform(0.4, 1.2))
        else:  # a free-standing panel on the sidewalk, facing oncoming traffic
            side = 1 if rng.random() < 0.6 else -1
            inner, outer = road.sidewalk_x_range(side)
            person.x_m, person.y_m = (inner + outer) / 2, float(rng.uniform(8.0, 40.0))
            person.heading_deg, person.base_z_m = (
                180.0 + side * rng.uniform(10, 30),
                float(rng.uniform(0.4, 0.8)),
            )
            person.style["stand"] = True
        out.append(person)
    if fronts and rng.random() < config.p_mannequin:
        b: Building = fronts[int(rng.integers(len(fronts)))]
        x_f = road.facade_right_x_m if b.side > 0 else road.facade_left_x_m
        m = sample_pedestrian(
            rng,
            x_f - b.side * 0.6,
            float(rng.uniform(max(b.y0_m, 8.0) + 1.5, b.y1_m - 1.5)),
            -90.0 * b.side,
            walking=False,
        )
        shell = _pick(rng, ((232, 230, 225), (215, 195, 165), (35, 35, 38), (170, 170, 172)))
        m.kind, m.ignore, m.base_z_m = "mannequin", True, 0.35
        m.colours["skin"] = shell
        if rng.random() < 0.4:  # undressed
            m.colours.update(shirt=shell, pants=shell, shoes=shell)
            m.style["outer"] = None
        m.style.update(bald=True, hat=False, bag="none", window_lit=lit, back_m=0.6)
        m.pose.update(
            stride_deg=0.0, arm_out_deg=float(rng.uniform(8, 25)), turn_deg=float(rng.uniform(-30, 30))
        )
        out.append(m)
    return out
