"""The network: a CSP-lite backbone, a PAN neck and a decoupled anchor-free head, plus input normalisation.

Why this design (single-stage, anchor-free, one output tensor):

* FCOS-style per-location box distances (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection",
  arXiv:1904.01355) need no anchor boxes to tune for pedestrians' tall aspect ratio, and the assignment is a
  fixed geometric rule that vectorises over the batch in a few tensor ops (see ``loss.py``). Label assigners
  that look at predictions (YOLOX's SimOTA, arXiv:2107.08430; TOOD's TAL, arXiv:2108.07755) cost a per-image
  cost matrix and top-k per box for a gain that matters most on crowded large-object benchmarks.
* The IoU-quality branch replaces FCOS's centerness: it is trained towards the IoU of the predicted box at
  positive locations only ("IoU-aware single-stage object detector", Wu et al., arXiv:1912.05992), so it stays
  meaningful for far pedestrians whose single positive cell may lie just outside a 6 px wide box, where a
  centerness target would be zero.
* Backbone and neck follow YOLOX-Nano (CSPNet blocks, arXiv:1911.11929; PAN, arXiv:1803.01534) with
  PP-PicoDet's equal-width PAN (arXiv:2111.00902). Strides 8/16/32: a far pedestrian of 15-30 px at 512x288
  spans 2-4 cells at stride 8.
* Boxes leave ``forward`` already decoded to x1y1x2y2 input pixels, so the loss, ``decode`` and an exported
  ONNX graph all read the same tensor; NMS stays outside (it breaks ``torch.onnx.export(dynamo=True)``,
  ../shared/reference/env.md sec. 4).

Output layout, ``(B, A, 4 + 1 + C)`` float32: ``[..., 0:4]`` box x1y1x2y2 pixels, ``[..., 4]`` IoU-quality
logit, ``[..., 5:]`` class logits. Locations ``A`` run level by level (stride 8 first), row-major within a
level; ``anchor_points`` gives their centres and strides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from crosswalk.model.config import SUPPORTED_STRIDES, DetectorConfig

BOX = slice(0, 4)
QUALITY = 4
CLASSES = slice(5, None)

# ImageNet RGB statistics on the 0-255 scale, torchvision's convention
# (https://pytorch.org/vision/stable/models.html). No pretrained weights are used, so any fixed values would
# do; these keep the door open to an ImageNet-pretrained backbone.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# Channels and blocks at width_mult = depth_mult = 1 (YOLOX's CSPDarknet: stem, then strides 4/8/16/32).
_STEM = 64
_STAGE_CHANNELS = (128, 256, 512, 1024)
_STAGE_BLOCKS = (3, 9, 9, 3)


def normalization_constants(device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """``MEAN_RGB`` and ``1 / STD_RGB`` as (1, 3, 1, 1) float32 tensors on ``device``."""
    mean = torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)
    return mean.to(device), (1.0 / torch.tensor(STD_RGB, dtype=torch.float32).view(1, 3, 1, 1)).to(device)


def normalize(images_uint8_nhwc: Tensor, mean: Tensor | None = None, inv_std: Tensor | None = None) -> Tensor:
    """uint8 RGB ``(B, H, W, 3)`` -> float32 NCHW in channels_last memory, ``(x - MEAN_RGB) / STD_RGB``.

    Run it on the training/inference device: the loader ships compact uint8 and the permute is a free view.
    ``mean`` and ``inv_std`` (``normalization_constants``) already on that device save two small host-to-device
    copies per call, which synchronise and which CUDA graph capture refuses.
    """
    x = images_uint8_nhwc
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"normalize expects uint8 (B, H, W, 3) RGB, got {x.dtype} {tuple(x.shape)}")
    if mean is None or inv_std is None:
        mean, inv_std = normalization_constants(x.device)
    x = x.permute(0, 3, 1, 2).float()  # NHWC storage seen as NCHW is exactly channels_last
    return ((x - mean) * inv_std).contiguous(memory_format=torch.channels_last)


def _channels(c: int, width_mult: float) -> int:
    return max(8, int(round(c * width_mult / 8)) * 8)  # multiples of 8 suit SIMD widths


def _blocks(n: int, depth_mult: float) -> int:
    return max(1, round(n * depth_mult))


class ConvBNAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, act: str, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True) if act == "relu" else nn.SiLU(inplace=True),
        )


def conv3x3(c_in: int, c_out: int, stride: int, cfg: DetectorConfig) -> nn.Module:
    """A 3x3 conv-BN-act, depthwise-separable (3x3 depthwise, then 1x1) when ``cfg.depthwise``."""
    if not cfg.depthwise:
        return ConvBNAct(c_in, c_out, 3, stride, cfg.activation)
    return nn.Sequential(
        ConvBNAct(c_in, c_in, 3, stride, cfg.activation, groups=c_in),
        ConvBNAct(c_in, c_out, 1, 1, cfg.activation),
    )


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool, cfg: DetectorConfig) -> None:
        super().__init__()
        # YOLOX's 1x1 before the 3x3; with depthwise-separable convs it would make two 1x1s back to back
        # around one depthwise conv, a layer of memory traffic (what bounds CPU training) for little gain.
        self.reduce = nn.Identity() if cfg.depthwise else ConvBNAct(c, c, 1, 1, cfg.activation)
        self.conv = conv3x3(c, c, 1, cfg)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(self.reduce(x))
        return x + y if self.shortcut else y


class CSPBlock(nn.Module):
    """Cross Stage Partial block (arXiv:1911.11929), YOLOX's CSPLayer: half the channels skip the bottlenecks."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool, cfg: DetectorConfig) -> None:
        super().__init__()
        hidden = c_out // 2
        self.main = ConvBNAct(c_in, hidden, 1, 1, cfg.activation)
        self.side = ConvBNAct(c_in, hidden, 1, 1, cfg.activation)
        self.blocks = nn.Sequential(*(Bottleneck(hidden, shortcut, cfg) for _ in range(n)))
        self.fuse = ConvBNAct(2 * hidden, c_out, 1, 1, cfg.activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.blocks(self.main(x)), self.side(x)], dim=1))


class Backbone(nn.Module):
    """Stem (stride 2) and four stages (strides 4, 8, 16, 32); returns the outputs at ``cfg.strides``."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        c_prev = _channels(_STEM, cfg.width_mult)
        # A plain 3x3 on the 3 input channels: a depthwise conv there would save nothing.
        self.stem = ConvBNAct(3, c_prev, 3, 2, cfg.activation)
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        for c, n in zip(_STAGE_CHANNELS, _STAGE_BLOCKS, strict=True):
            c = _channels(c, cfg.width_mult)
            self.stages.append(
                nn.Sequential(
                    conv3x3(c_prev, c, 2, cfg), CSPBlock(c, c, _blocks(n, cfg.depth_mult), True, cfg)
                )
            )
            self.out_channels.append(c)
            c_prev = c
        self.keep = [SUPPORTED_STRIDES.index(s) for s in cfg.strides]
        self.out_channels = [self.out_channels[i] for i in self.keep]
        self.stages = self.stages[: self.keep[-1] + 1]  # no stage beyond the coarsest stride used

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return [outs[i] for i in self.keep]


class PAN(nn.Module):
    """Path Aggregation Network (arXiv:1803.01534): a top-down then a bottom-up pass, all levels one width."""

    def __init__(self, in_channels: list[int], cfg: DetectorConfig) -> None:
        super().__init__()
        c = _channels(cfg.neck_channels, cfg.width_mult)
        n = _blocks(3, cfg.depth_mult)
        levels = len(in_channels)
        self.lateral = nn.ModuleList(ConvBNAct(ci, c, 1, 1, cfg.activation) for ci in in_channels)
        self.top_down = nn.ModuleList(CSPBlock(2 * c, c, n, False, cfg) for _ in range(levels - 1))
        self.down = nn.ModuleList(conv3x3(c, c, 2, cfg) for _ in range(levels - 1))
        self.bottom_up = nn.ModuleList(CSPBlock(2 * c, c, n, False, cfg) for _ in range(levels - 1))
        self.out_channels = c

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        x = [lat(f) for lat, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(x) - 2, -1, -1):  # coarse to fine
            # `size=` rather than scale 2: odd sizes (72 px input -> 9x... -> 5 -> 3) round up on the way down.
            up = F.interpolate(x[i + 1], size=x[i].shape[-2:], mode="nearest")
            x[i] = self.top_down[i](torch.cat([x[i], up], dim=1))
        for i in range(1, len(x)):  # fine to coarse
            x[i] = self.bottom_up[i - 1](torch.cat([self.down[i - 1](x[i - 1]), x[i]], dim=1))
        return x


class Head(nn.Module):
    """One level's decoupled head (YOLOX): a class tower, and a box tower that also predicts IoU quality."""

    def __init__(self, c: int, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cls_tower = nn.Sequential(*(conv3x3(c, c, 1, cfg) for _ in range(cfg.head_convs)))
        self.box_tower = nn.Sequential(*(conv3x3(c, c, 1, cfg) for _ in range(cfg.head_convs)))
        self.cls_pred = nn.Conv2d(c, cfg.num_classes, 1)
        self.box_pred = nn.Conv2d(c, 4 + 1, 1)  # ltrb distances and the quality logit
        for conv in (self.cls_pred, self.box_pred):  # FCOS/RetinaNet init of the prediction layers
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        # Focal loss, sec. 4.1 (arXiv:1708.02002): every location starts at foreground probability
        # prior_prob, so the ~10^4 easy negatives do not swamp the first steps from scratch.
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_pred(self.cls_tower(x)), self.box_pred(self.box_tower(x))


def _grid(h: int, w: int, stride: int, device: torch.device) -> Tensor:
    """(h*w, 2) cell centres (x, y) in input pixels, row-major."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def feature_sizes(cfg: DetectorConfig, image_size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """(h, w) of each output level for an input of ``image_size`` (W, H): every stride-2 conv rounds up."""
    w, h = image_size or cfg.input_size
    sizes = []
    for s in cfg.strides:
        fh, fw = h, w
        for _ in range(int(math.log2(s))):
            fh, fw = -(-fh // 2), -(-fw // 2)
        sizes.append((fh, fw))
    return sizes


def anchor_points(
    cfg: DetectorConfig, image_size: tuple[int, int] | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """(A, 3) float32 ``[x, y, stride]`` of every output location, in ``forward``'s order."""
    parts = []
    for (fh, fw), s in zip(feature_sizes(cfg, image_size), cfg.strides, strict=True):
        g = _grid(fh, fw, s, torch.device(device))
        parts.append(torch.cat([g, torch.full((len(g), 1), float(s), device=g.device)], dim=1))
    return torch.cat(parts)


class Detector(nn.Module):
    """``forward(images)``: normalised float NCHW -> ``(B, A, 4 + 1 + C)`` (layout in the module docstring)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.neck = PAN(self.backbone.out_channels, cfg)
        self.heads = nn.ModuleList(Head(self.neck.out_channels, cfg) for _ in cfg.strides)

    def forward(self, images: Tensor) -> Tensor:
        feats = self.neck(self.backbone(images))
        outs = []
        for head, feat, stride in zip(self.heads, feats, self.cfg.strides, strict=True):
            cls, box = head(feat)
            b, _, h, w = feat.shape
            # NHWC order: a view for channels_last tensors. float32 before decoding: bf16 has a 2 px step
            # at 256-512 px, too coarse for box corners.
            cls = cls.permute(0, 2, 3, 1).reshape(b, h * w, -1).float()
            box = box.permute(0, 2, 3, 1).reshape(b, h * w, 5).float()
            ltrb = F.softplus(box[..., :4]) * stride  # positive distances, smooth (no dead ReLU zone)
            points = _grid(h, w, stride, images.device)
            xyxy = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)
            outs.append(torch.cat([xyxy, box[..., 4:], cls], dim=-1))
        return torch.cat(outs, dim=1)


def build_detector(cfg: DetectorConfig) -> Detector:
    return Detector(cfg)


def _conv_backward_flops(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, _out_pad, _groups,
    output_mask, out_shape=None, **kwargs
) -> int:  # fmt: skip
    """FLOPs of ``aten.convolution_backward``: grad_input and grad_weight each cost one forward conv.

    Replaces torch 2.14's formula, whose grad_weight term ignores ``groups`` and so counts a depthwise conv's
    weight gradient ``channels`` times over (the fix proposed in pytorch/pytorch#183405 divides by groups).
    """
    forward = 2 * math.prod(x_shape if transposed else grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def model_info(cfg: DetectorConfig) -> dict[str, float]:
    """Parameter count and GFLOPs for one ``cfg.input_size`` image, forward and forward+backward.

    FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``: 2 per multiply-accumulate, convolutions and
    matmuls only (elementwise ops, BN and activations are not counted). Backward uses the grouped-conv
    correction above; the input image needs no gradient, so backward is a little under 2x forward.
    """
    model = build_detector(cfg)
    w, h = cfg.input_size
    x = torch.zeros(1, 3, h, w)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    forward = counter.get_total_flops()
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model.train()(x).sum().backward()
    both = counter.get_total_flops()
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "gflops_forward": forward / 1e9,
        "gflops_forward_backward": both / 1e9,
    }
