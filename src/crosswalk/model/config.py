"""The detector's one config: architecture, input size, label assignment and loss weights.

Saved with every checkpoint (``to_dict``) and used to rebuild the model (``from_dict``); read-only after
construction. ``DetectorConfig.preset("nano" | "small", **overrides)`` is the usual way in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from crosswalk.data.schema import DEFAULT_CATEGORIES

SUPPORTED_STRIDES = (4, 8, 16, 32)  # the backbone's stage outputs; the neck may use any consecutive run
ACTIVATIONS = ("relu", "silu")


@dataclass(frozen=True)
class DetectorConfig:
    num_classes: int = 3
    class_names: tuple[str, ...] = DEFAULT_CATEGORIES  # index = label id, in the dataset's category order
    preset: str = "nano"  # the preset these values started from (informational once overridden)

    # Architecture. Channel and block counts are YOLOX's (width 1.0 = 64-channel stem, stages 128..1024;
    # depth 1.0 = 3/9/9/3 blocks), scaled by width_mult / depth_mult (YOLOX, arXiv:2107.08430).
    width_mult: float = 0.1875
    depth_mult: float = 0.33
    # Dense 3x3 convs, not depthwise-separable ones (MobileNets, arXiv:1704.04861): depthwise convs have
    # fewer FLOPs but low arithmetic intensity. Measured here, a dense nano with 1.65x the FLOPs trains 3.3x
    # faster in PyTorch on the CPU (15.2 vs 4.6 img/s, same run) and, with the same recipe, reaches pedestrian
    # AP50 0.36 instead of 0.18. The price is serving: onnxruntime, which runs depthwise convs well, answers
    # in 14 ms instead of 9 ms at batch 1 on this CPU. RepVGG (arXiv:2101.03697) makes the training-side case
    # for GPUs too: FLOPs are not latency.
    depthwise: bool = False
    activation: str = "relu"  # relu fuses with conv in oneDNN/ORT on CPU; silu is YOLOX's choice
    # Every PAN level has this width times width_mult, as in PP-PicoDet (arXiv:2111.00902). 128, not YOLOX's
    # 256: 24 channels for nano, whose stride-8 maps are half of its CPU training time (profiled).
    neck_channels: int = 128
    head_convs: int = 2  # 3x3 convs in each of the class and box towers (decoupled head, YOLOX)
    strides: tuple[int, ...] = (8, 16, 32)
    input_size: tuple[int, int] = (512, 288)  # (W, H) the model is trained and exported at

    # Label assignment (FCOS-style, arXiv:1904.01355 / 2006.09214). A box goes to one level by its longer
    # side: level i takes sizes in (scale_range_mult * stride_{i-1}, scale_range_mult * stride_i], the last
    # level everything larger. Positives: locations inside the box and within center_radius strides of its
    # centre, plus the cell that holds the centre, so a 5-10 px wide far pedestrian still gets one.
    scale_range_mult: float = 8.0
    center_radius: float = 1.5

    # Loss. Focal-loss defaults from Lin et al. (arXiv:1708.02002: alpha 0.25, gamma 2 in sec. 5.1; prior
    # 0.01 for the class-logit bias in sec. 4.1); GIoU weight 2 as in the GFL/ATSS configs (arXiv:2006.04388).
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior_prob: float = 0.01
    box_loss_weight: float = 2.0
    quality_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.num_classes < 1 or len(self.class_names) != self.num_classes:
            raise ValueError(
                f"DetectorConfig needs len(class_names) == num_classes >= 1, got num_classes="
                f"{self.num_classes} and class_names={list(self.class_names)}; pass both together"
            )
        s = tuple(self.strides)
        if (
            len(s) < 2
            or any(x not in SUPPORTED_STRIDES for x in s)
            or any(b != 2 * a for a, b in zip(s, s[1:], strict=False))
        ):
            raise ValueError(
                f"DetectorConfig.strides must be at least two consecutive doublings from {SUPPORTED_STRIDES}, "
                f"e.g. (8, 16, 32); got {self.strides}"
            )
        w, h = self.input_size
        if w < 32 or h < 32:
            raise ValueError(
                f"DetectorConfig.input_size is (W, H) and must be at least 32x32, got {self.input_size}"
            )
        if self.width_mult <= 0 or self.depth_mult <= 0:
            raise ValueError(
                f"width_mult and depth_mult must be positive, got {self.width_mult}, {self.depth_mult}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"DetectorConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if not 0.0 < self.prior_prob < 1.0:
            raise ValueError(f"DetectorConfig.prior_prob must be in (0, 1), got {self.prior_prob}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetectorConfig:
        """Rebuild from ``to_dict`` output (e.g. a checkpoint); unknown keys fail with the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown DetectorConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Preset name -> the fields it sets; everything else keeps the class defaults (which are "nano").
PRESETS: dict[str, dict[str, Any]] = {
    "nano": {},
    "small": {"width_mult": 0.5, "depth_mult": 0.33, "neck_channels": 192},
}


def _preset(cls: type[DetectorConfig], name: str, **overrides: Any) -> DetectorConfig:
    """``DetectorConfig.preset("nano" | "small", **overrides)``: a named starting point plus any changes."""
    if name not in PRESETS:
        raise ValueError(f"unknown detector preset {name!r}; valid presets: {sorted(PRESETS)}")
    return cls.from_dict({**PRESETS[name], "preset": name, **overrides})


# Attached after the class is built: inside the class body the method would replace the `preset` field's
# default. Instances keep the field (instance attributes win over a classmethod), so `cfg.preset` is the name.
DetectorConfig.preset = classmethod(_preset)  # type: ignore[assignment,method-assign]
