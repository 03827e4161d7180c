"""Export, the runtime and ``crosswalk predict``: parity, golden boxes, bad images, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from crosswalk.cli import main
from crosswalk.data.shards import sha256_file
from crosswalk.infer import ImageError, Predictor
from crosswalk.infer.export import ServingModule, export_package
from crosswalk.infer.image import decode, prepare
from crosswalk.infer.postprocess import select
from crosswalk.model import DetectorConfig, build_detector, normalize
from crosswalk.model import decode as torch_decode
from crosswalk.scenes import render_frame
from crosswalk.train.checkpoint import export_weights

GOLDEN = Path(__file__).parent / "golden"
TINY = DetectorConfig(width_mult=0.125, depth_mult=0.33, neck_channels=64, input_size=(128, 96))


def tiny_net(seed: int = 0) -> torch.nn.Module:
    """A fixed-seed tiny detector. Fresh initialisation predicts the same box and score everywhere (zeroed
    head, prior-probability bias), so seeded noise on the weights makes its outputs vary like a trained one's."""
    torch.manual_seed(seed)
    net = build_detector(TINY).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.15 * torch.randn_like(p))
    return net


def tiny_weights(run: Path) -> Path:
    """The tiny detector's weights, written as the trainer writes them (safetensors + model.json)."""
    return export_weights(run, tiny_net().state_dict(), TINY.to_dict(), {"step": 0})


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    tiny_weights(root / "run")
    export_package(root / "run", root / "repo" / "tiny" / "1", parity_count=4)
    return root / "repo" / "tiny" / "1"


@pytest.fixture(scope="module")
def frame() -> bytes:
    return render_frame(7, 3)[0]


def test_export_writes_a_checked_package(tiny_package: Path) -> None:
    config = json.loads((tiny_package / "config.json").read_text())
    assert sorted(p.name for p in tiny_package.iterdir()) == [
        "config.json",
        "model.onnx",
        "model.safetensors",
    ]
    for name, digest in config["files"].items():
        assert sha256_file(tiny_package / name) == digest
    parity = config["parity"]
    assert parity["score_max_abs_diff"] <= 1e-4 and parity["box_max_abs_diff_canvas"] <= 1e-4
    assert parity["identical_detections"]
    assert config["classes"] == ["pedestrian", "cyclist", "vehicle"] and config["input_size"] == [128, 96]
    assert (config["name"], config["version"]) == ("tiny", "1")


def test_export_refuses_a_non_empty_target(tiny_package: Path, tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export_package(tiny_package, tmp_path / "1")
    assert (tmp_path / "1" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("backend, name", [("onnxruntime", "model.onnx"), ("torch", "model.safetensors")])
def test_predictor_refuses_a_file_changed_after_export(
    tiny_package: Path, tmp_path: Path, backend, name
) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_package, package)
    data = bytearray((package / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (package / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{name}: sha256 .* does not match"):
        Predictor(package, backend=backend, warmup=False)


def test_numpy_postprocess_matches_torchvision_decode(frame: bytes) -> None:
    """The serving path's OpenCV NMS keeps exactly the boxes the evaluator's torchvision NMS keeps."""
    net = tiny_net()
    pixels = prepare(decode(frame), TINY.input_size).pixels
    with torch.no_grad():
        raw = net(
            __import__("crosswalk.model", fromlist=["normalize"]).normalize(torch.from_numpy(pixels[None]))
        )
        boxes, scores = ServingModule(net)(torch.from_numpy(pixels[None]))
    for threshold in (0.05, 0.08, 0.11):
        ref = torch_decode(raw, TINY, score_threshold=threshold, nms_iou=0.6, max_detections=100)[0]
        kept, s, labels = select(boxes[0].numpy(), scores[0].numpy(), threshold, 0.6, 100)
        assert len(kept) == len(ref["boxes"]) > 0
        np.testing.assert_allclose(kept, ref["boxes"].numpy(), atol=1e-4)
        np.testing.assert_allclose(s, ref["scores"].numpy(), atol=1e-6)
        np.testing.assert_array_equal(labels, ref["labels"].numpy())


def golden_detections(tiny_package: Path, frame: bytes, backend: str) -> list[dict]:
    predictor = Predictor(tiny_package, backend=backend, threads=1, score_threshold=0.1)
    return predictor.predict([frame])[0]


def evaluator_detections(frame: bytes) -> list[dict]:
    """The evaluator's path: torch model, ``crosswalk.model.decode``, letterbox map undone as in eval."""
    net = tiny_net()
    prep = prepare(decode(frame), TINY.input_size)
    with torch.no_grad():
        det = torch_decode(net(normalize(torch.from_numpy(prep.pixels[None]))), TINY, score_threshold=0.1)[0]
    boxes = prep.to_original(det["boxes"].numpy())
    return [
        {"box": b.tolist(), "score": float(s), "label": int(c)}
        for b, s, c in zip(boxes, det["scores"].numpy(), det["labels"].numpy(), strict=True)
    ]


def test_golden_boxes_on_evaluator_and_serving_paths(tiny_package: Path, frame: bytes) -> None:
    """A fixed tiny model on a fixed frame must keep giving the stored boxes, whichever path computes them.

    Regenerate (only after an intended change) with ``CROSSWALK_UPDATE_GOLDEN=1 pytest tests/test_infer.py``.
    """
    path = GOLDEN / "tiny_detections.json"
    serving = golden_detections(tiny_package, frame, "onnxruntime")
    if os.environ.get("CROSSWALK_UPDATE_GOLDEN"):
        path.write_text(json.dumps({"frame": "render_frame(7, 3)", "detections": serving}, indent=1) + "\n")
    golden = json.loads(path.read_text())["detections"]
    assert len(golden) > 0
    for name, got in [
        ("serving (onnxruntime)", serving),
        ("serving (torch)", golden_detections(tiny_package, frame, "torch")),
        ("evaluator", evaluator_detections(frame)),
    ]:
        assert len(got) == len(golden), name
        for g, d in zip(golden, got, strict=True):
            assert d["label"] == g["label"], name
            np.testing.assert_allclose(d["box"], g["box"], atol=1e-3, err_msg=name)
            assert abs(d["score"] - g["score"]) < 1e-5, name


def test_predictor_maps_boxes_to_original_pixels(tiny_package: Path, frame: bytes) -> None:
    """The same picture at twice the size gives boxes at twice the coordinates."""
    predictor = Predictor(tiny_package, threads=1, score_threshold=0.05)
    image = decode(frame)
    big = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    small_dets, big_dets = predictor.predict([image, big])
    # Both letterbox to the same canvas (INTER_AREA averages the duplicated pixels back), so the network sees
    # the same input; only the map back to original pixels differs.
    assert len(small_dets) == len(big_dets) > 0
    for s, b in zip(small_dets, big_dets, strict=True):
        assert s["label"] == b["label"] and abs(s["score"] - b["score"]) < 1e-3
        np.testing.assert_allclose(np.array(b["box"]) / 2, s["box"], atol=0.5)


def test_classes_and_min_score_filter(tiny_package: Path, frame: bytes) -> None:
    predictor = Predictor(tiny_package, threads=1, score_threshold=0.05)
    [all_dets] = predictor.predict([frame])
    [peds] = predictor.predict([frame], classes=["pedestrian"])
    [high] = predictor.predict([frame], min_score=0.115)
    assert {d["class"] for d in peds} <= {"pedestrian"}
    assert all(d["score"] > 0.115 for d in high) and len(high) <= len(all_dets)
    with pytest.raises(ValueError, match="unknown class 'tree'"):
        predictor.predict([frame], classes=["tree"])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a decompression bomb's first 33 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello, not an image", "not a JPEG or PNG"),
        (b"", "not a JPEG or PNG"),
        (png_header_only(100_000, 100_000), "over the limit"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt PNG"),
    ],
)
def test_bad_bytes_are_image_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode(data)


def test_truncated_jpeg_is_an_image_error(frame: bytes) -> None:
    with pytest.raises(ImageError, match="corrupt JPEG"):
        decode(frame[: len(frame) // 2])


def test_bad_arrays_are_image_errors(tiny_package: Path) -> None:
    predictor = Predictor(tiny_package, threads=1, warmup=False)
    for bad in (
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
    ):
        with pytest.raises(ImageError):
            predictor.load_image(bad)


def test_predict_cli_with_the_shipped_reference_model(tmp_path: Path, frame: bytes, capsys) -> None:
    """``crosswalk predict IMAGE --out DIR`` on a fresh clone: no model argument, the reference model."""
    image = tmp_path / "street.jpg"
    image.write_bytes(frame)
    (tmp_path / "broken.jpg").write_bytes(frame[:100])
    rc = main(["predict", str(image), str(tmp_path / "broken.jpg"), "--out", str(tmp_path / "pred")])
    assert rc == 2  # one image failed, and said so; the other was still written
    out = capsys.readouterr().out
    assert "broken.jpg" in out and "corrupt JPEG" in out
    record = json.loads((tmp_path / "pred" / "street.json").read_text())
    assert (record["width"], record["height"]) == (512, 288)
    assert len(record["detections"]) > 0
    assert cv2.imread(str(tmp_path / "pred" / "street.jpg")).shape == (288, 512, 3)


def test_serving_path_never_imports_torch() -> None:
    """A replacement replica must start in about a second: loading the shipped package for onnxruntime (hash
    check included) and the app must not pull in torch, whose import takes seconds on a busy machine."""
    code = (
        "import sys, crosswalk.serve.app\n"
        "from crosswalk.infer import Predictor\n"
        "Predictor(None, warmup=False)\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
