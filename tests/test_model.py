"""The detector package on tiny inputs: budgets, config round trip, shapes, loss semantics, decode, bf16."""

from __future__ import annotations

import pytest
import torch

from crosswalk.data.targets import BatchTargets
from crosswalk.model import (
    MEAN_RGB,
    STD_RGB,
    DetectorConfig,
    anchor_points,
    assign,
    build_detector,
    decode,
    detection_loss,
    model_info,
    normalize,
    pad_targets,
)

SMALL = (64, 64)  # (W, H) of most tests


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs gain nothing from a second thread, and on a shared 2-core machine OpenMP's barriers stall
    for seconds whenever another process holds a core (measured: 0.1 s steps became 2-6 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def target(boxes, labels, ignore=None) -> dict[str, torch.Tensor]:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    ignore = [False] * len(boxes) if ignore is None else ignore
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.long), "ignore": torch.tensor(ignore)}


@pytest.fixture(scope="module")
def nano_info() -> dict[str, float]:
    return model_info(DetectorConfig.preset("nano"))  # at 512x288, counted once


def test_nano_fits_the_budget_and_small_is_bigger(nano_info):
    assert nano_info["params"] <= 1_500_000
    assert nano_info["gflops_forward"] <= 1.5
    # Backward costs about two forwards (a little less: the image needs no gradient).
    assert (
        2.0 * nano_info["gflops_forward"]
        < nano_info["gflops_forward_backward"]
        <= 3.0 * nano_info["gflops_forward"]
    )
    small = build_detector(DetectorConfig.preset("small"))
    assert sum(p.numel() for p in small.parameters()) > 2 * nano_info["params"]


def test_config_round_trip_and_loud_errors():
    cfg = DetectorConfig.preset("small", input_size=(320, 192))
    assert cfg.preset == "small" and cfg.width_mult == 0.5 and cfg.input_size == (320, 192)
    as_json = {
        k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()
    }  # what JSON gives back
    assert DetectorConfig.from_dict(as_json) == cfg
    with pytest.raises(
        ValueError, match=r"unknown DetectorConfig keys \['widht_mult'\]; valid keys: .*width_mult"
    ):
        DetectorConfig.from_dict({**cfg.to_dict(), "widht_mult": 1.0})
    with pytest.raises(ValueError, match="valid keys"):
        DetectorConfig.preset("nano", num_clases=2)
    with pytest.raises(ValueError, match="valid presets"):
        DetectorConfig.preset("huge")
    with pytest.raises(ValueError, match="num_classes"):
        DetectorConfig(num_classes=1)  # class_names still lists three
    with pytest.raises(ValueError, match="strides"):
        DetectorConfig(strides=(8, 32))


@pytest.mark.parametrize(("batch", "size"), [(1, (64, 64)), (3, (64, 64)), (1, (128, 72)), (3, (128, 72))])
def test_forward_shape(batch, size):
    cfg = DetectorConfig.preset("nano", input_size=size)
    model = build_detector(cfg).eval()
    w, h = size
    with torch.no_grad():
        out = model(torch.randn(batch, 3, h, w))
    points = anchor_points(cfg)
    assert out.shape == (batch, len(points), 4 + 1 + cfg.num_classes)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # Boxes are decoded around their own location: x1 < x < x2, y1 < y < y2.
    assert (out[..., 0] < points[:, 0]).all() and (points[:, 0] < out[..., 2]).all()
    assert (out[..., 1] < points[:, 1]).all() and (points[:, 1] < out[..., 3]).all()


def test_normalize_is_channels_last_float():
    images = torch.zeros(2, 5, 7, 3, dtype=torch.uint8)
    images[..., 0] = 255
    x = normalize(images)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x[0, 0, 0, 0].item() == pytest.approx((255 - MEAN_RGB[0]) / STD_RGB[0], rel=1e-5)
    assert x[0, 2, 0, 0].item() == pytest.approx(-MEAN_RGB[2] / STD_RGB[2], rel=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        normalize(images.float())


def test_assignment_gives_far_pedestrians_a_positive_and_large_boxes_a_coarse_level():
    cfg = DetectorConfig.preset("nano", input_size=(128, 128))
    points = anchor_points(cfg)
    # A 5 px wide, 16 px tall pedestrian between stride-8 cell centres (x = 4, 12, 20, ...): no cell centre
    # lies inside it, yet the cell holding its centre (x 15.5 -> cell 12, y 24 -> cell 20 or 28) is positive.
    # A 100 px tall box goes to stride 16 (64 < 100 <= 128).
    gt = pad_targets([target([[13.0, 16.0, 18.0, 32.0], [20.0, 10.0, 60.0, 110.0]], [0, 2])], points.device)
    positive, matched, cls_valid = assign(points, gt, cfg)
    far = positive[0] & (matched[0] == 0)
    assert far.sum() >= 1 and (points[far, 2] == 8).all() and (points[far, 0] == 12).all()
    near = positive[0] & (matched[0] == 1)
    assert near.sum() >= 4 and (points[near, 2] == 16).all()
    assert cls_valid.all()  # no ignore regions here


def test_pad_targets_matches_a_copy_per_image():
    g = torch.Generator().manual_seed(0)
    counts = [0, 3, 1, 0, 5]
    targets = [
        {
            "boxes": torch.rand(n, 4, generator=g) * 100,
            "labels": torch.randint(0, 3, (n,), generator=g),
            "ignore": torch.rand(n, generator=g) < 0.3,
        }
        for n in counts
    ]
    del targets[2]["ignore"]  # hand-made targets may leave it out: nothing ignored there
    gt = pad_targets(targets, torch.device("cpu"))
    assert gt["boxes"].shape == (5, 5, 4)
    for i, (t, n) in enumerate(zip(targets, counts, strict=True)):
        ignore = t.get("ignore", torch.zeros(n, dtype=torch.bool))
        assert torch.equal(gt["boxes"][i, :n], t["boxes"]) and not gt["boxes"][i, n:].any()
        assert torch.equal(gt["labels"][i, :n], t["labels"]) and not gt["labels"][i, n:].any()
        assert torch.equal(gt["ignore"][i, :n], ignore) and not gt["ignore"][i, n:].any()
        assert torch.equal(gt["real"][i, :n], ~ignore) and not gt["real"][i, n:].any()
    assert pad_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], "cpu")["boxes"].shape == (
        1,
        1,
        4,
    )


def test_batch_targets_index_slice_join_and_pad_like_the_per_image_list():
    g = torch.Generator().manual_seed(1)
    counts = [2, 0, 3, 1]
    per_image = [
        {
            "boxes": torch.rand(n, 4, generator=g),
            "labels": torch.arange(n),
            "ignore": torch.zeros(n, dtype=torch.bool),
        }
        for n in counts
    ]
    flat = BatchTargets.from_list(per_image)
    assert len(flat) == 4 and flat.owner.tolist() == [0, 0, 2, 2, 2, 3]
    assert all(torch.equal(flat[i]["boxes"], t["boxes"]) for i, t in enumerate(per_image))
    assert torch.equal(flat[-1]["labels"], per_image[3]["labels"])
    assert [len(t["boxes"]) for t in flat[1:3]] == [0, 3] and flat[1:3].counts.tolist() == [0, 3]
    assert [len(t["boxes"]) for t in flat[::2]] == [2, 3]
    joined = flat[:1] + flat[2:]
    assert joined.counts.tolist() == [2, 3, 1] and torch.equal(joined[1]["boxes"], per_image[2]["boxes"])
    with pytest.raises(IndexError):
        flat[4]
    with pytest.raises(ValueError, match="add up to"):
        BatchTargets({"boxes": torch.zeros(3, 4)}, [1, 1])
    padded, from_list = pad_targets(flat, "cpu"), pad_targets(per_image, "cpu")
    assert all(torch.equal(padded[k], from_list[k]) for k in padded)


def test_loss_is_finite_with_empty_targets():
    cfg = DetectorConfig.preset("nano", input_size=SMALL)
    model = build_detector(cfg)
    out = model(torch.randn(2, 3, 64, 64))
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "ignore": torch.zeros(0, dtype=bool),
    }
    loss, parts = detection_loss(out, [empty, empty], cfg)
    assert torch.isfinite(loss) and parts["num_positives"] == 0 and parts["box"] == 0.0
    loss.backward()
    # One empty image next to one with a box.
    loss, parts = detection_loss(
        model(torch.randn(2, 3, 64, 64)), [empty, target([[8, 8, 30, 50]], [0])], cfg
    )
    assert torch.isfinite(loss) and parts["num_positives"] >= 1


def test_ignore_regions_are_neither_positive_nor_negative():
    cfg = DetectorConfig.preset("nano", input_size=SMALL)
    points = anchor_points(cfg)
    box = [16.0, 8.0, 40.0, 56.0]
    inside = (
        (points[:, 0] > box[0]) & (points[:, 0] < box[2]) & (points[:, 1] > box[1]) & (points[:, 1] < box[3])
    )
    assert inside.sum() >= 6
    out = torch.randn(1, len(points), 5 + cfg.num_classes, generator=torch.Generator().manual_seed(0))
    hot, cold = out.clone(), out.clone()
    hot[0, inside, 5:] = 8.0  # confident detections all over the ignore region ...
    cold[0, inside, 5:] = -8.0  # ... or none: the loss must not care
    ignored = [target([box], [0], [True])]
    loss_hot, parts_hot = detection_loss(hot, ignored, cfg)
    loss_cold, parts_cold = detection_loss(cold, ignored, cfg)
    assert parts_hot["num_positives"] == 0 and parts_hot["box"] == 0.0 and parts_hot["quality"] == 0.0
    assert loss_hot.item() == pytest.approx(loss_cold.item(), rel=1e-6)
    # Without the ignore region those hot locations are negatives and cost a lot: the mask above mattered.
    nothing = [target([], [])]
    assert detection_loss(hot, nothing, cfg)[0].item() > detection_loss(cold, nothing, cfg)[0].item() + 50


def test_thirty_adam_steps_overfit_two_images():
    torch.manual_seed(0)
    cfg = DetectorConfig.preset("nano", input_size=SMALL)
    model = build_detector(cfg)
    images = normalize(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8))
    targets = [target([[10, 12, 26, 50]], [0]), target([[30, 8, 54, 40]], [2])]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, _ = detection_loss(model(images), targets, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_decode_keeps_one_of_two_overlapping_boxes():
    cfg = DetectorConfig.preset("nano", input_size=SMALL)
    a = len(anchor_points(cfg))
    out = torch.full((1, a, 5 + cfg.num_classes), -10.0)
    out[..., :4] = torch.tensor([0.0, 0.0, 4.0, 4.0])
    out[0, 0, :4] = torch.tensor([10.0, 10.0, 30.0, 50.0])
    out[0, 1, :4] = torch.tensor([11.0, 10.0, 31.0, 50.0])  # IoU 0.9 with the first: suppressed
    out[0, 2, :4] = torch.tensor([40.0, 10.0, 60.0, 50.0])  # same class, no overlap: kept
    out[0, :3, 4] = 10.0  # quality ~1
    out[0, 0, 5] = 3.0
    out[0, 1, 5] = 2.0
    out[0, 2, 7] = 1.0  # class 2
    (det,) = decode(out, cfg, score_threshold=0.3)
    assert det["labels"].tolist() == [0, 2]
    assert det["boxes"].tolist() == [[10.0, 10.0, 30.0, 50.0], [40.0, 10.0, 60.0, 50.0]]
    assert det["scores"][0].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).sqrt().item(), rel=1e-4)
    # Nothing clears a high threshold: empty but well-formed.
    (none,) = decode(out, cfg, score_threshold=0.99)
    assert none["boxes"].shape == (0, 4) and none["labels"].dtype == torch.int64


def test_channels_last_bf16_forward_backward():
    cfg = DetectorConfig.preset("nano", input_size=(128, 72))
    model = build_detector(cfg).to(memory_format=torch.channels_last)
    images = normalize(torch.randint(0, 256, (2, 72, 128, 3), dtype=torch.uint8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
        loss, parts = detection_loss(out, [target([[20, 10, 40, 60]], [0]), target([], [])], cfg)
    assert out.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(list(model.parameters())) and all(torch.isfinite(g).all() for g in grads)
