"""Augmentations that move boxes with pixels: drawn per sample, applied per batch.

The geometry of one sample is one map ``u_out = scale * u_in + t`` (after ``u_in -> w - u_in`` when flipped):
flip, scale jitter, and a crop (scaled image larger than the canvas) or letterbox (smaller) in one. The
photometric part is one curve per channel: ``((x^gamma - 0.5) * contrast + 0.5 + brightness) * gain``.

Where the work happens, and why:

- The loader worker draws every sample's parameters and moves the **boxes**, vectorised over the whole
  batch (``draw_params``, ``transform_boxes``): per-sample NumPy calls on 3-element arrays cost more than
  the JPEG decode, measured here.
- The training device moves the **pixels** of the whole batch with one ``grid_sample`` (``augment_on_device``).
  A ``cv2.resize`` plus a LUT per image in the worker costs as much as the decode itself on this CPU; on a
  GPU the batched op is free, which removes the CPU-preprocessing bottleneck detection trainers are known
  for (../shared/reference/training.md §6, complaint 5). ``warp_image`` is the CPU reference of the same map,
  used for evaluation letterboxing and in tests.

Randomness is a counter-based hash of (seed, epoch, sample index, draw number) (``sample_uniforms``): the
same sample in the same epoch gets the same augmentation whatever the batch, rank, worker or resume point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crosswalk.data.letterbox import LETTERBOX_FILL, letterbox_params, warp_image

IDENTITY_PHOTOMETRIC = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0], np.float32)  # gamma, contrast, bright, gains
IDENTITY_THETA = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
TARGET_FIELDS = ("boxes", "visible_boxes", "labels", "ignore", "visibility", "height_px", "distance_m")

CPU_AUGMENT_GROUP = 4  # images per grid_sample on the CPU (see augment_on_device)


@dataclass(frozen=True)
class AugmentConfig:
    flip_p: float = 0.5
    scale_p: float = 0.5  # how often scale jitter applies; otherwise the image stays as it is
    scale_min: float = 0.75  # < 1 shrinks (letterbox with a random offset): far pedestrians get smaller
    scale_max: float = 1.5  # > 1 zooms (random crop): near pedestrians, truncated objects
    photometric_p: float = 0.8
    brightness: float = 0.25  # additive, as a fraction of full scale
    contrast: float = 0.3  # multiplicative, around mid-grey
    gamma: float = 0.3  # log-uniform in [1/(1+g), 1+g]
    channel_gain: float = 0.08  # per-channel colour cast
    min_box_px: float = 2.0  # clipped boxes narrower or shorter than this are dropped
    min_kept_fraction: float = 0.3  # below this fraction of the visible box inside the crop: ignore region


@dataclass
class Geometry:
    """Per-sample maps for a batch: arrays of shape (B,)."""

    scale: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    flip: np.ndarray  # bool
    in_width: np.ndarray  # the width flipped around

    @staticmethod
    def identity(n: int, width: float) -> Geometry:
        return Geometry(np.ones(n), np.zeros(n), np.zeros(n), np.zeros(n, bool), np.full(n, float(width)))


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea, Flood 2014): a fast, well-mixed 64-bit hash, vectorised."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_uniforms(seed: int, epoch: int, indices: np.ndarray, n: int) -> np.ndarray:
    """(len(indices), n) uniforms in [0, 1), a pure function of (seed, epoch, index, column)."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed & 0xFFFFFFFF) << np.uint64(32) | np.uint64(epoch & 0xFFFFFFFF))
        x = _splitmix64(key ^ _splitmix64(np.asarray(indices, np.int64).astype(np.uint64)))
        x = x[:, None] + np.arange(n, dtype=np.uint64)[None, :] * np.uint64(0xD1B54A32D192ED03)
        z = _splitmix64(x & _MASK64)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


N_UNIFORMS = 13


def draw_params(u: np.ndarray, size: tuple[int, int], cfg: AugmentConfig) -> tuple[Geometry, np.ndarray]:
    """Geometry and photometric parameters for images already of ``size`` (W, H), from (B, 13) uniforms."""
    w, h = size
    n = len(u)
    flip = u[:, 0] < cfg.flip_p
    log_lo, log_hi = np.log(cfg.scale_min), np.log(cfg.scale_max)
    jitter = np.exp(log_lo + u[:, 1] * (log_hi - log_lo))
    scale = np.where(u[:, 2] < cfg.scale_p, jitter, 1.0)
    # Integer offsets: a crop window when the scaled image is larger, a letterbox offset when smaller.
    tx = np.round(u[:, 3] * (w - scale * w))
    ty = np.round(u[:, 4] * (h - scale * h))
    photometric = np.tile(IDENTITY_PHOTOMETRIC, (n, 1))
    on = u[:, 5] < cfg.photometric_p
    g = np.log1p(cfg.gamma)
    photometric[on, 0] = np.exp(-g + u[on, 6] * 2 * g)
    photometric[on, 1] = 1.0 + (u[on, 7] * 2 - 1) * cfg.contrast
    photometric[on, 2] = (u[on, 8] * 2 - 1) * cfg.brightness
    photometric[on, 3:6] = 1.0 + (u[on, 9:12] * 2 - 1) * cfg.channel_gain
    return Geometry(scale, tx, ty, flip, np.full(n, float(w))), photometric.astype(np.float32)


def transform_boxes(boxes: np.ndarray, owner: np.ndarray, g: Geometry) -> np.ndarray:
    """Map (M, 4) x1y1x2y2 boxes, box ``i`` belonging to sample ``owner[i]``, through that sample's map."""
    s, tx, ty = g.scale[owner, None], g.tx[owner], g.ty[owner]
    out = boxes.astype(np.float64, copy=True)
    flipped = g.flip[owner]
    fw = g.in_width[owner][flipped, None]
    out[flipped] = np.stack(
        [fw[:, 0] - boxes[flipped, 2], boxes[flipped, 1], fw[:, 0] - boxes[flipped, 0], boxes[flipped, 3]],
        axis=1,
    )
    out = out * s
    out[:, [0, 2]] += tx[:, None]
    out[:, [1, 3]] += ty[:, None]
    return out


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def transform_targets(
    objects: dict, owner: np.ndarray, g: Geometry, size: tuple[int, int], cfg: AugmentConfig
) -> tuple[dict, np.ndarray]:
    """Move every object of a batch; clip to the canvas; drop slivers; mostly-cut objects become ignore.

    ``objects`` holds the TARGET_FIELDS as arrays over all M objects of the batch. Returns the kept objects
    and their owners."""
    w, h = size
    limits = np.array([w, h, w, h], np.float64)
    boxes = transform_boxes(objects["boxes"], owner, g)
    visible = transform_boxes(objects["visible_boxes"], owner, g)
    clipped, vis_clipped = np.clip(boxes, 0, limits), np.clip(visible, 0, limits)
    vis_area = _area(visible)
    kept = np.where(vis_area > 0, _area(vis_clipped) / np.maximum(vis_area, 1e-9), 0.0)
    keep = (
        (clipped[:, 2] - clipped[:, 0] >= cfg.min_box_px)
        & (clipped[:, 3] - clipped[:, 1] >= cfg.min_box_px)
        & (kept > 0)
    )
    out = {
        "boxes": clipped[keep].astype(np.float32),
        "visible_boxes": vis_clipped[keep].astype(np.float32),
        "labels": objects["labels"][keep],
        "ignore": (objects["ignore"] | (kept < cfg.min_kept_fraction))[keep],
        "visibility": (objects["visibility"] * kept).astype(np.float32)[keep],
        "height_px": (objects["height_px"] * g.scale[owner]).astype(np.float32)[keep],
        "distance_m": objects["distance_m"][keep],
    }
    return out, owner[keep]


def photometric_lut(photometric: np.ndarray) -> np.ndarray:
    """The photometric curve as a (256, 1, 3) uint8 table for ``cv2.LUT`` (CPU reference)."""
    x = (np.arange(256, dtype=np.float32) / 255.0)[:, None]
    y = ((x ** photometric[0] - 0.5) * photometric[1] + 0.5 + photometric[2]) * photometric[3:]
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)


def device_theta(g: Geometry, size: tuple[int, int]) -> np.ndarray:
    """(B, 2, 3) ``affine_grid`` matrices (normalised coordinates, align_corners=False) for images that are
    already ``size``: for each output pixel, where to sample the input.

    Inverting u_out = scale * u_in + t per axis, with n = 2u/W - 1 on both sides (same W), gives
    n_in = a * n_out + b, a = 1/scale, b = a - 2t / (W * scale) - 1; a flip mirrors both a and b.
    """
    w, h = size
    a = 1.0 / g.scale
    bx = a - 2.0 * g.tx / (w * g.scale) - 1.0
    by = a - 2.0 * g.ty / (h * g.scale) - 1.0
    sign = np.where(g.flip, -1.0, 1.0)
    theta = np.zeros((len(a), 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 2] = sign * a, sign * bx
    theta[:, 1, 1], theta[:, 1, 2] = a, by
    return theta


def augment_on_device(images: torch.Tensor, theta: torch.Tensor, photometric: torch.Tensor) -> torch.Tensor:
    """Apply the workers' draws to a uint8 (B, H, W, 3) batch on its device, batched.

    Returns float (B, 3, H, W) in [0, 1], channels_last: one ``grid_sample`` does flip, scale, crop and
    letterbox for a group of images, then the photometric curve. On the CPU the groups are 4 images: the
    temporaries of a whole batch of 32 (56 MB each) exceed glibc's mmap threshold, so every call faulted in
    fresh pages and cost 11 ms/image instead of 6.3 (measured here); on a GPU the whole batch is one group."""
    b, h, w, _ = images.shape
    out = torch.empty((b, 3, h, w), device=images.device, memory_format=torch.channels_last)
    group = b if images.device.type == "cuda" else CPU_AUGMENT_GROUP
    theta, photometric = theta.to(images.device, torch.float32), photometric.to(images.device, torch.float32)
    fill = LETTERBOX_FILL / 255.0
    for i in range(0, b, group):
        x = images[i : i + group].permute(0, 3, 1, 2).float().div_(255.0)
        grid = torch.nn.functional.affine_grid(theta[i : i + group], list(x.shape), align_corners=False)
        # grid_sample pads with zeros: shift by the fill value so that padding comes out as the letterbox grey.
        x = torch.nn.functional.grid_sample(x - fill, grid, mode="bilinear", align_corners=False) + fill
        p = photometric[i : i + group, :, None, None]
        x = ((x.clamp(0, 1) ** p[:, 0:1] - 0.5) * p[:, 1:2] + 0.5 + p[:, 2:3]) * p[:, 3:6]
        out[i : i + group] = x.clamp_(0.0, 1.0)
    return out


def letterbox(image: np.ndarray, target: dict, out_size: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Evaluation and serving: no randomness, the whole image centred in the output canvas."""
    h, w = image.shape[:2]
    scale, tx, ty = letterbox_params((w, h), out_size)
    g = Geometry(np.array([scale]), np.array([tx]), np.array([ty]), np.zeros(1, bool), np.array([float(w)]))
    owner = np.zeros(len(target["boxes"]), np.int64)
    out, _ = transform_targets(target, owner, g, out_size, AugmentConfig())
    return warp_image(image, out_size, scale, tx, ty), out
