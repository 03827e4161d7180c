"""OIP v2 parsing and encoding, checked against tritonclient's own request builder and response parser."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import tritonclient.http as triton

from crosswalk.serve import oip

DETS = [
    [
        {"box": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "label": 0, "class": "pedestrian"},
        {"box": [5.0, 6.0, 7.0, 8.0], "score": 0.5, "label": 2, "class": "vehicle"},
    ],
    [],
]


def triton_body(inputs, outputs=None, **kw) -> tuple[bytes, str | None]:
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs, **kw)
    return body, None if json_size is None else str(json_size)


def test_binary_bytes_images_and_parameters_from_tritonclient():
    images = triton.InferInput("images", [2], "BYTES")
    images.set_data_from_numpy(np.array([b"\xff\xd8jpeg", b"\x89PNGpng"], dtype=object), binary_data=True)
    body, header = triton_body(
        [images], request_id="r1", timeout=2500, parameters={"min_score": 0.4, "classes": ["pedestrian"]}
    )
    req = oip.parse_infer_request(body, header)
    assert req.images == [b"\xff\xd8jpeg", b"\x89PNGpng"] and req.pixels is None
    assert (req.id, req.timeout_us, req.min_score, req.classes) == ("r1", 2500, 0.4, ["pedestrian"])


def test_json_and_binary_pixels_from_tritonclient():
    pixels = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    for binary in (False, True):
        tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        req = oip.parse_infer_request(*triton_body([tensor]))
        np.testing.assert_array_equal(req.pixels, pixels)


def test_base64_images_in_json():
    doc = {
        "inputs": [
            {
                "name": "images",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(b"\xff\xd8abc").decode()],
            }
        ]
    }
    assert oip.parse_infer_request(json.dumps(doc).encode(), None).images == [b"\xff\xd8abc"]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "inputs"),
        ([], "request must be a JSON object"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, "inputs[0].name"),
        (
            {"inputs": [{"name": "images", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            "inputs[0].datatype",
        ),
        (
            {"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES", "data": ["a"]}]},
            "inputs[0].data",
        ),
        (
            {"inputs": [{"name": "images", "shape": "1", "datatype": "BYTES", "data": ["a"]}]},
            "inputs[0].shape",
        ),
        ({"inputs": [{"name": "images", "shape": [0], "datatype": "BYTES", "data": []}]}, "inputs[0].shape"),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 2, 2], "datatype": "UINT8", "data": [0] * 4}]},
            "inputs[0].shape",
        ),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [0, 1, 300]}]},
            "0..255",
        ),
        ({"inputs": [{"name": "pixels", "shape": [1, 1, 1, 3], "datatype": "UINT8"}]}, "inputs[0].data"),
        (
            {
                "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "parameters": {"min_score": 2},
            },
            "parameters.min_score",
        ),
        (
            {
                "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "parameters": {"timeout": -1},
            },
            "parameters.timeout",
        ),
        (
            {
                "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "outputs": [{"name": "masks"}],
            },
            "outputs[0].name",
        ),
        (
            {
                "inputs": [
                    {"name": "images", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                    {"name": "pixels", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [0, 0, 0]},
                ]
            },
            "inputs[1].name",
        ),
    ],
)
def test_malformed_requests_name_the_field(doc, field):
    with pytest.raises(oip.OIPError, match=field.replace("[", r"\[").replace("]", r"\]")):
        oip.parse_infer_request(json.dumps(doc).encode(), None)


def test_malformed_binary_framing():
    head = json.dumps(
        {
            "inputs": [
                {"name": "images", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}
            ]
        }
    ).encode()
    with pytest.raises(oip.OIPError, match="binary_data_size"):
        oip.parse_infer_request(head + b"\x10\x00", str(len(head)))  # fewer bytes than declared
    with pytest.raises(oip.OIPError, match="claims"):
        oip.parse_infer_request(
            head + b"\xff\x00\x00\x00abcd", str(len(head))
        )  # element longer than the data
    with pytest.raises(oip.OIPError, match="Inference-Header-Content-Length"):
        oip.parse_infer_request(head, "999999")
    with pytest.raises(oip.OIPError, match="not valid JSON"):
        oip.parse_infer_request(b"\xff\xfe{", None)


@pytest.mark.parametrize("binary", [False, True])
def test_responses_parse_with_tritonclient(binary):
    req = oip.InferRequest(images=[b"a", b"b"], pixels=None, id="r9", binary_default=binary)
    body, headers = oip.encode_infer_response(DETS, req, "crosswalk", "1")
    length = headers.get("inference-header-content-length")
    result = triton.InferenceServerClient.parse_response_body(
        body, header_length=None if length is None else int(length)
    )
    assert result.get_response()["id"] == "r9"
    np.testing.assert_array_equal(result.as_numpy("num_detections"), [2, 0])
    boxes = result.as_numpy("boxes")
    assert boxes.dtype == np.float32 and boxes.shape == (2, 2, 4)
    np.testing.assert_array_equal(boxes[0], [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(boxes[1], 0)  # padding
    np.testing.assert_array_equal(result.as_numpy("labels"), [[0, 2], [-1, -1]])
    np.testing.assert_allclose(result.as_numpy("scores"), [[0.9, 0.5], [0, 0]])
    detections = [json.loads(d) for d in result.as_numpy("detections")]
    assert detections == DETS


def test_requested_outputs_only_and_mixed_binary():
    req = oip.InferRequest(images=[b"a"], pixels=None, outputs={"boxes": True, "num_detections": False})
    body, headers = oip.encode_infer_response(DETS[:1], req, "crosswalk", "1")
    head = json.loads(body[: int(headers["inference-header-content-length"])])
    assert [o["name"] for o in head["outputs"]] == ["boxes", "num_detections"]
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 2 * 4 * 4
    assert head["outputs"][1]["data"] == [2]
