"""Untrusted image bytes -> RGB pixels -> the model's letterboxed canvas, and boxes back to the original.

This is the serving path's front door, so it checks before it spends: the container is sniffed from its
magic bytes (JPEG or PNG only), the pixel count is read from the header and refused above ``max_pixels``
*before* decoding (a 100 KB PNG can inflate to gigabytes: the decompression bomb), and a decoder that
reports damage is an ``ImageError``, never a half-decoded frame. NumPy, simplejpeg and OpenCV only: no torch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from crosswalk.data.letterbox import letterbox_params, warp_image

MAX_PIXELS = (
    40_000_000  # 40 MP: above any automotive camera (8 MP) and phone photo; PIL's bomb limit is 89 MP
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """The input is not an image we can use; the message says why (a client error: HTTP 400)."""


@dataclass(frozen=True)
class Prepared:
    """One image ready for the network: the letterboxed canvas and the map back to original pixels."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB, the model's input size
    scale: float
    tx: float
    ty: float
    width: int  # original image size
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4) x1y1x2y2 canvas pixels -> original image pixels (inverse of the letterbox map)."""
        offset = np.array([self.tx, self.ty, self.tx, self.ty], np.float32)
        return (boxes - offset) / np.float32(self.scale)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG or PNG header, without decoding the pixels."""
    if data[:2] == b"\xff\xd8":
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as e:
            raise ImageError(f"corrupt JPEG: {e}") from None
        return w, h
    if data[:8] == PNG_MAGIC:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("corrupt PNG: no IHDR chunk")
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    raise ImageError("not a JPEG or PNG image")


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8 (H, W, 3). Raises ImageError for anything else, damage, or too many pixels."""
    w, h = image_size(data)
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
    if data[:2] == b"\xff\xd8":
        try:  # strict: libjpeg-turbo's "premature end of data" and friends are errors, not grey bands
            return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError as e:
            raise ImageError(f"corrupt JPEG: {e}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ImageError("corrupt PNG: it does not decode")
    return image


def as_rgb(image: bytes | bytearray | memoryview | np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded bytes or an RGB uint8 array -> RGB uint8 (H, W, 3)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(bytes(image), max_pixels)
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected encoded bytes or a uint8 array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"pixel arrays must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if h < 1 or w < 1 or h * w > max_pixels:
        raise ImageError(f"pixel array is {w}x{h}; it must have 1..{max_pixels} pixels")
    return image


def prepare(image: np.ndarray, input_size: tuple[int, int]) -> Prepared:
    """Letterbox an RGB image into the model's (W, H) canvas: the same map evaluation uses."""
    h, w = image.shape[:2]
    scale, tx, ty = letterbox_params((w, h), input_size)
    pixels = warp_image(np.ascontiguousarray(image), input_size, scale, tx, ty)
    return Prepared(pixels, scale, tx, ty, w, h)
