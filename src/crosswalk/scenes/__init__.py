"""Procedural driving scenes: a pinhole camera on a car, a street in metres, rendered with OpenCV.

``sample_scene`` draws a world (road, buildings, people, vehicles, street furniture, conditions) from a seeded
generator; ``render_scene`` projects it from any point along the road into an RGB image and an annotation
that follows ``crosswalk.data.schema``; ``render_frame(seed, index)`` does both and encodes a JPEG.
"""

from .camera import Camera
from .config import SceneConfig
from .population import sample_cyclist, sample_pedestrian, sample_prop, sample_vehicle
from .render import GENERATOR, render_frame, render_scene
from .world import Building, Road, Scene, WorldObject, sample_scene

__all__ = [
    "GENERATOR",
    "Building",
    "Camera",
    "Road",
    "Scene",
    "SceneConfig",
    "WorldObject",
    "render_frame",
    "render_scene",
    "sample_cyclist",
    "sample_pedestrian",
    "sample_prop",
    "sample_scene",
    "sample_vehicle",
]
