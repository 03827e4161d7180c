"""The detector, its loss and its decode: tensors in, tensors out, no I/O.

``images -> normalize -> Detector -> (B, A, 4 + 1 + C) -> detection_loss (training) | decode (inference)``.
"""

from crosswalk.model.config import PRESETS, DetectorConfig
from crosswalk.model.decode import decode, scores_from_outputs
from crosswalk.model.detector import (
    BOX,
    CLASSES,
    MEAN_RGB,
    QUALITY,
    STD_RGB,
    Detector,
    anchor_points,
    build_detector,
    feature_sizes,
    model_info,
    normalization_constants,
    normalize,
)
from crosswalk.model.loss import assign, detection_loss, pad_targets

__all__ = [
    "BOX",
    "CLASSES",
    "MEAN_RGB",
    "PRESETS",
    "QUALITY",
    "STD_RGB",
    "Detector",
    "DetectorConfig",
    "anchor_points",
    "assign",
    "build_detector",
    "decode",
    "detection_loss",
    "feature_sizes",
    "model_info",
    "normalization_constants",
    "normalize",
    "pad_targets",
    "scores_from_outputs",
]
