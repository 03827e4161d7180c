"""The inference runtime: the exported model package and ``Predictor`` (no HTTP here; see crosswalk.serve)."""

from crosswalk.infer.image import ImageError, Prepared
from crosswalk.infer.postprocess import Detection
from crosswalk.infer.predictor import REFERENCE_MODEL, Predictor

__all__ = ["REFERENCE_MODEL", "Detection", "ImageError", "Predictor", "Prepared"]
