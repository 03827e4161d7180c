"""Open Inference Protocol v2 (KServe v2, as spoken by Triton, KServe and MLServer): parse and encode.

No HTTP here: bytes and headers in, a parsed request out; detections in, a body and headers out, so the
protocol is tested on its own. Specs: kserve ``docs/predict-api/v2/required_api.md`` (the REST API) and
Triton's ``docs/protocol/extension_binary_data.md`` (binary tensor data); serving.md [T5][K5].

The model ``crosswalk`` (version "1") takes exactly one of:

- ``images``  BYTES [N] (or [N, 1])      encoded JPEG/PNG frames, any size
- ``pixels``  UINT8 [N, H, W, 3]         RGB frames, any H x W (letterboxed by the server)

and answers, per image (K = the most detections of any image in the request; shorter rows are padded):

- ``detections``      BYTES [N]          a JSON list of ``{"box", "score", "label", "class"}`` per image
- ``boxes``           FP32 [N, K, 4]     x1, y1, x2, y2 in original pixels (padding: 0)
- ``scores``          FP32 [N, K]        (padding: 0)
- ``labels``          INT32 [N, K]       class ids (padding: -1)
- ``num_detections``  INT32 [N]

Request parameters (all optional): ``min_score`` (0..1), ``classes`` (names or ids), ``timeout`` (the
deadline in microseconds, Triton's name for it [T14]), ``binary_data_output`` (bool).

Binary tensor data: with an ``Inference-Header-Content-Length: L`` header the first L bytes are the JSON,
and each input with ``parameters.binary_data_size`` takes that many bytes of the rest, in input order. BYTES
elements are a 4-byte little-endian length then the bytes. Outputs asked for with
``parameters.binary_data`` (or all of them, with ``binary_data_output``) come back the same way. In JSON,
BYTES elements are strings: images sent that way must be base64 with ``parameters.content_type = "base64"``
on the input (MLServer's convention), since JPEG bytes are not UTF-8 text.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from crosswalk.infer import Detection

HEADER_LENGTH = "inference-header-content-length"
INPUTS = {"images": "BYTES", "pixels": "UINT8"}
OUTPUTS = {
    "detections": "BYTES",
    "boxes": "FP32",
    "scores": "FP32",
    "labels": "INT32",
    "num_detections": "INT32",
}
NUMPY_TYPES = {"FP32": np.float32, "INT32": np.int32, "UINT8": np.uint8}


def dumps(obj: Any) -> bytes:
    """JSON bytes through orjson: a response of 100 detections took 0.6 ms in ``json.dumps``, 0.05 here."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


class OIPError(ValueError):
    """A malformed inference request; the message names the field (HTTP 400)."""


@dataclass
class InferRequest:
    images: list[bytes] | None  # encoded frames, or
    pixels: np.ndarray | None  # uint8 (N, H, W, 3)
    id: str | None = None
    min_score: float | None = None
    classes: list[str | int] | None = None
    timeout_us: int | None = None
    outputs: dict[str, bool] = field(default_factory=dict)  # name -> binary; empty = all, JSON by default
    binary_default: bool = False
    images_from_json_text: bool = False  # BYTES given as JSON text without base64: explains a decode error

    @property
    def count(self) -> int:
        return len(self.images) if self.images is not None else len(self.pixels)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The body of ``POST .../infer`` (and its binary-extension header) -> ``InferRequest``; OIPError if bad."""
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise OIPError("Inference-Header-Content-Length must be an integer") from None
        if not 0 < json_length <= len(body):
            raise OIPError(
                f"Inference-Header-Content-Length {json_length} is outside the body of {len(body)} bytes"
            )
        head, binary = body[:json_length], memoryview(body)[json_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        doc = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OIPError(f"request is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OIPError("request must be a JSON object with an 'inputs' list")
    req = InferRequest(images=None, pixels=None)
    req.id = _optional(doc, "id", str, "id")
    _parse_parameters(_optional(doc, "parameters", dict, "parameters") or {}, req)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OIPError("inputs: a non-empty list is required")
    offset = 0
    for i, tensor in enumerate(inputs):
        offset = _parse_input(tensor, f"inputs[{i}]", binary, offset, req)
    if offset != len(binary):
        raise OIPError(f"binary data: {len(binary) - offset} bytes after the last input's binary_data_size")
    if req.images is None and req.pixels is None:
        raise OIPError("inputs: give 'images' (BYTES) or 'pixels' (UINT8)")
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise OIPError("outputs: must be a list")
        for i, out in enumerate(outputs):
            name = out.get("name") if isinstance(out, dict) else None
            if name not in OUTPUTS:
                raise OIPError(f"outputs[{i}].name: unknown output {name!r}; the model has {sorted(OUTPUTS)}")
            params = _optional(out, "parameters", dict, f"outputs[{i}].parameters") or {}
            binary_flag = _optional(params, "binary_data", bool, f"outputs[{i}].parameters.binary_data")
            req.outputs[name] = req.binary_default if binary_flag is None else binary_flag
    return req


def _parse_parameters(params: dict, req: InferRequest) -> None:
    min_score = params.get("min_score")
    if min_score is not None:
        if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1:
            raise OIPError(f"parameters.min_score: a number in [0, 1] is required, got {min_score!r}")
        req.min_score = float(min_score)
    classes = params.get("classes")
    if classes is not None:
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        if not isinstance(classes, list) or not all(isinstance(c, (str, int)) for c in classes):
            raise OIPError("parameters.classes: a list of class names or ids (or a comma-separated string)")
        req.classes = classes
    timeout = params.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise OIPError(f"parameters.timeout: microseconds as a non-negative integer, got {timeout!r}")
        req.timeout_us = timeout
    req.binary_default = bool(_optional(params, "binary_data_output", bool, "parameters.binary_data_output"))


def _parse_input(tensor: Any, where: str, binary: memoryview, offset: int, req: InferRequest) -> int:
    if not isinstance(tensor, dict):
        raise OIPError(f"{where}: must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if name not in INPUTS:
        raise OIPError(
            f"{where}.name: unknown input {name!r}; the model takes 'images' (BYTES) or 'pixels' (UINT8)"
        )
    if (name == "images" and req.images is not None) or (name == "pixels" and req.pixels is not None):
        raise OIPError(f"{where}.name: input {name!r} given twice")
    if req.images is not None or req.pixels is not None:
        raise OIPError(f"{where}.name: send either 'images' or 'pixels', not both")
    datatype = tensor.get("datatype")
    if datatype != INPUTS[name]:
        raise OIPError(f"{where}.datatype: input {name!r} is {INPUTS[name]}, got {datatype!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise OIPError(f"{where}.shape: a list of non-negative integers is required, got {shape!r}")
    if name == "images" and not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise OIPError(f"{where}.shape: images are [N] or [N, 1], got {shape}")
    if name == "pixels" and not (len(shape) == 4 and shape[3] == 3):
        raise OIPError(f"{where}.shape: pixels are [N, H, W, 3] RGB, got {shape}")
    if shape[0] < 1 or (name == "pixels" and (shape[1] < 1 or shape[2] < 1)):
        raise OIPError(f"{where}.shape: at least one image of at least 1x1 pixels, got {shape}")
    count = math.prod(shape)
    params = _optional(tensor, "parameters", dict, f"{where}.parameters") or {}
    size = params.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise OIPError(f"{where}.parameters.binary_data_size: a non-negative integer, got {size!r}")
        if offset + size > len(binary):
            raise OIPError(
                f"{where}.parameters.binary_data_size: {size} bytes wanted, {len(binary) - offset} left in the body"
            )
        chunk = binary[offset : offset + size]
        if name == "images":
            req.images = _split_bytes(chunk, count, where)
        else:
            if size != count:
                raise OIPError(
                    f"{where}.parameters.binary_data_size: shape {shape} needs {count} bytes, got {size}"
                )
            req.pixels = np.frombuffer(chunk, np.uint8).reshape(shape)
        return offset + size
    if "data" not in tensor:
        raise OIPError(f"{where}.data: required (or parameters.binary_data_size with binary data)")
    data = tensor["data"]
    if name == "images":
        flat = _flatten(data, where)
        if len(flat) != count or not all(isinstance(s, str) for s in flat):
            raise OIPError(f"{where}.data: shape {shape} needs {count} strings, got {len(flat)} element(s)")
        if params.get("content_type") == "base64":
            try:
                req.images = [base64.b64decode(s, validate=True) for s in flat]
            except (binascii.Error, ValueError):
                raise OIPError(f"{where}.data: not valid base64") from None
        else:
            req.images = [s.encode("utf-8", "surrogateescape") for s in flat]
            req.images_from_json_text = True
    else:
        try:
            array = np.asarray(data, dtype=np.int64)
        except (ValueError, TypeError, OverflowError):
            raise OIPError(f"{where}.data: a (flat or nested) list of integers 0..255 is required") from None
        if array.size != count:
            raise OIPError(f"{where}.data: shape {shape} needs {count} values, got {array.size}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise OIPError(f"{where}.data: UINT8 values must be in 0..255")
        req.pixels = array.astype(np.uint8).reshape(shape)
    return offset


def _flatten(data: Any, where: str) -> list:
    if not isinstance(data, list):
        raise OIPError(f"{where}.data: must be a list")
    if all(not isinstance(x, list) for x in data):
        return data
    flat: list = []
    for x in data:
        flat.extend(_flatten(x, where) if isinstance(x, list) else [x])
    return flat


def _split_bytes(chunk: memoryview, count: int, where: str) -> list[bytes]:
    """BYTES binary data: ``count`` elements, each a uint32 little-endian length then that many bytes."""
    items, pos = [], 0
    for k in range(count):
        if pos + 4 > len(chunk):
            raise OIPError(f"{where}: binary data ends before element {k} of {count}")
        (n,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + n > len(chunk):
            raise OIPError(f"{where}: element {k} claims {n} bytes, {len(chunk) - pos} are left")
        items.append(bytes(chunk[pos : pos + n]))
        pos += n
    if pos != len(chunk):
        raise OIPError(f"{where}: {len(chunk) - pos} bytes after the last of {count} elements")
    return items


def _optional(obj: dict, key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise OIPError(f"{where}: must be {kind.__name__}, got {type(value).__name__}")
    return value


# ---- responses -----------------------------------------------------------------------------------------


def output_tensors(detections: list[list[Detection]]) -> dict[str, np.ndarray | list[bytes]]:
    """Per-image detection lists -> the model's output tensors (padded to the longest list)."""
    n = len(detections)
    k = max((len(d) for d in detections), default=0)
    boxes = np.zeros((n, k, 4), np.float32)
    scores = np.zeros((n, k), np.float32)
    labels = np.full((n, k), -1, np.int32)
    counts = np.zeros(n, np.int32)
    for i, dets in enumerate(detections):
        counts[i] = len(dets)
        for j, d in enumerate(dets):
            boxes[i, j] = d["box"]
            scores[i, j] = d["score"]
            labels[i, j] = d["label"]
    return {
        "detections": [dumps(d) for d in detections],
        "boxes": boxes,
        "scores": scores,
        "labels": labels,
        "num_detections": counts,
    }


def encode_infer_response(
    detections: list[list[Detection]], req: InferRequest, model_name: str, model_version: str
) -> tuple[bytes, dict[str, str]]:
    """-> (body, headers). JSON unless an output asked for binary data, then JSON header + binary parts."""
    tensors = output_tensors(detections)
    wanted = req.outputs or dict.fromkeys(OUTPUTS, req.binary_default)
    outputs, parts = [], []
    for name, binary in wanted.items():
        value = tensors[name]
        datatype = OUTPUTS[name]
        shape = [len(value)] if datatype == "BYTES" else list(value.shape)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            raw = (
                b"".join(struct.pack("<I", len(b)) + b for b in value)
                if datatype == "BYTES"
                else np.ascontiguousarray(value).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            entry["data"] = [b.decode() for b in value] if datatype == "BYTES" else value.reshape(-1).tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if req.id is not None:
        doc["id"] = req.id
    head = dumps(doc)
    if not parts:
        return head, {"content-type": "application/json"}
    return b"".join([head, *parts]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }


def model_metadata(name: str, version: str, classes: list[str], input_size: tuple[int, int]) -> dict:
    """``GET /v2/models/{m}``: the spec's fields, plus ``parameters`` describing how to call it."""
    return {
        "name": name,
        "versions": [version],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
        ],
        "outputs": [
            {"name": "detections", "datatype": "BYTES", "shape": [-1]},
            {"name": "boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "labels", "datatype": "INT32", "shape": [-1, -1]},
            {"name": "num_detections", "datatype": "INT32", "shape": [-1]},
        ],
        "parameters": {
            "classes": classes,
            "input_size": list(input_size),
            "usage": "send exactly one input: images (encoded JPEG/PNG) or pixels (RGB); boxes are x1,y1,x2,y2 "
            "in original pixels; parameters: min_score, classes, timeout (us), binary_data_output",
        },
    }


def model_config(name: str, max_batch: int, max_delay_us: int) -> dict:
    """``GET /v2/models/{m}/config``: Triton's model configuration (what perf_analyzer reads)."""
    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": max_batch,
        "input": [
            {"name": "images", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
            {"name": "pixels", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3], "optional": True},
        ],
        "output": [
            {"name": "detections", "data_type": "TYPE_STRING", "dims": [1]},
            {"name": "boxes", "data_type": "TYPE_FP32", "dims": [-1, 4]},
            {"name": "scores", "data_type": "TYPE_FP32", "dims": [-1]},
            {"name": "labels", "data_type": "TYPE_INT32", "dims": [-1]},
            {"name": "num_detections", "data_type": "TYPE_INT32", "dims": [1]},
        ],
        "dynamic_batching": {"max_queue_delay_microseconds": max_delay_us},
    }


def model_statistics(name: str, version: str, totals: dict[str, float]) -> dict:
    """``GET /v2/models/{m}/stats``: Triton's statistics extension, from the server's Prometheus totals.

    perf_analyzer reads these to split its latency into queue and compute. Decode happens before the
    queue and is not a model stage here, so ``compute_input`` and ``compute_output`` report zero time.
    """

    def stat(count: float, seconds: float = 0.0) -> dict:
        return {"count": int(count), "ns": int(seconds * 1e9)}

    images = totals.get("crosswalk_images_computed_total", 0.0)
    batches = totals.get("crosswalk_compute_latency_seconds_count", 0.0)
    queue_s = totals.get("crosswalk_queue_latency_seconds_sum", 0.0)
    compute_s = totals.get("crosswalk_image_compute_seconds_total", 0.0)
    failed = sum(totals.get(k, 0.0) for k in ("crosswalk_shed_total", "crosswalk_expired_total"))
    return {
        "model_stats": [
            {
                "name": name,
                "version": version,
                "last_inference": int(totals.get("crosswalk_last_inference_timestamp_seconds", 0.0) * 1e3),
                "inference_count": int(images),
                "execution_count": int(batches),
                "inference_stats": {
                    "success": stat(images, queue_s + compute_s),
                    "fail": stat(failed),
                    "queue": stat(totals.get("crosswalk_queue_latency_seconds_count", 0.0), queue_s),
                    "compute_input": stat(images),
                    "compute_infer": stat(images, compute_s),
                    "compute_output": stat(images),
                    "cache_hit": stat(0),
                },
                "batch_stats": [],
            }
        ]
    }
