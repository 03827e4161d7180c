"""The OpenAPI 3.0 document served at ``/openapi.json`` (written out, not generated from docstrings).

The OIP part follows KServe's ``rest_predict_v2.yaml`` [K5] in shape; the tests run schemathesis against
this document, so what it promises (statuses, media types, bounds) is what the server does.
"""

from __future__ import annotations

from crosswalk.serve.config import ServeConfig


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(ref: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


ERRORS = {
    "400": _error("malformed request: the message names the field"),
    "401": _error("API key missing or wrong"),
    "404": _error("unknown model or version"),
    "413": _error("body over the size limit, or more images than the queue holds"),
    "415": _error("wrong content type"),
    "503": _error("overloaded (see Retry-After) or not ready"),
    "504": _error("the request's deadline cannot be met; no compute was spent"),
}


def openapi_document(cfg: ServeConfig, classes: list[str]) -> dict:
    model_params = [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
    ]
    version_params = [
        *model_params,
        {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}},
    ]
    timeout_header = {
        "name": "X-Request-Timeout-Ms",
        "in": "header",
        "required": False,
        "description": "deadline in ms from arrival; a request that cannot make it is answered 504 at once",
        "schema": {"type": "number", "minimum": 0},
    }

    def model_get(summary: str, ok: dict, params: list) -> dict:
        return {
            "get": {"summary": summary, "parameters": params, "responses": {"200": ok, "404": ERRORS["404"]}}
        }

    def infer(params: list) -> dict:
        return {
            "post": {
                "summary": "OIP v2 inference (JSON, or JSON + binary tensor data)",
                "parameters": [
                    *params,
                    timeout_header,
                    {
                        "name": "Inference-Header-Content-Length",
                        "in": "header",
                        "required": False,
                        "description": "binary tensor data extension: length of the JSON part",
                        "schema": {"type": "integer", "minimum": 1},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}
                    },
                },
                "responses": {
                    "200": _json("#/components/schemas/InferResponse"),
                    **{k: ERRORS[k] for k in ("400", "401", "404", "413", "415", "503", "504")},
                },
            }
        }

    paths = {
        "/v2": {
            "get": {"summary": "server metadata", "responses": {"200": _json("#/components/schemas/Object")}}
        },
        "/v2/health/live": {
            "get": {"summary": "liveness", "responses": {"200": _json("#/components/schemas/Object")}}
        },
        "/v2/health/ready": {
            "get": {
                "summary": "readiness, with the number of ready replicas",
                "responses": {
                    "200": _json("#/components/schemas/Ready"),
                    "503": _json("#/components/schemas/Ready"),
                },
            }
        },
        "/v2/models/{model}": model_get("model metadata", _json("#/components/schemas/Object"), model_params),
        "/v2/models/{model}/versions/{version}": model_get(
            "model metadata", _json("#/components/schemas/Object"), version_params
        ),
        "/v2/models/{model}/ready": model_get(
            "model readiness", _json("#/components/schemas/Object"), model_params
        ),
        "/v2/models/{model}/versions/{version}/ready": model_get(
            "model readiness", _json("#/components/schemas/Object"), version_params
        ),
        "/v2/models/{model}/config": model_get(
            "Triton model configuration", _json("#/components/schemas/Object"), model_params
        ),
        "/v2/models/{model}/versions/{version}/config": model_get(
            "Triton model configuration", _json("#/components/schemas/Object"), version_params
        ),
        "/v2/models/stats": {
            "get": {
                "summary": "Triton statistics, all models",
                "responses": {"200": _json("#/components/schemas/Object")},
            }
        },
        "/v2/models/{model}/stats": model_get(
            "Triton statistics extension", _json("#/components/schemas/Object"), model_params
        ),
        "/v2/models/{model}/versions/{version}/stats": model_get(
            "Triton statistics extension", _json("#/components/schemas/Object"), version_params
        ),
        "/v2/models/{model}/infer": infer(model_params),
        "/v2/models/{model}/versions/{version}/infer": infer(version_params),
        "/v1/detect": {
            "post": {
                "summary": "detect objects in one image; boxes in original pixels",
                "parameters": [
                    {
                        "name": "min_score",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    {
                        "name": "classes",
                        "in": "query",
                        "required": False,
                        "description": f"comma-separated class names or ids, of {classes}",
                        "schema": {"type": "string"},
                    },
                    timeout_header,
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        "image/png": {"schema": {"type": "string", "format": "binary"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"image": {"type": "string", "format": "binary"}},
                                "required": ["image"],
                            }
                        },
                    },
                },
                "responses": {
                    "200": _json("#/components/schemas/DetectResponse"),
                    **{k: ERRORS[k] for k in ("400", "401", "413", "415", "503", "504")},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "this document", "responses": {"200": _json("#/components/schemas/Object")}}
        },
    }
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "enum": ["images", "pixels"]},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": ["BYTES", "UINT8"]},
            "parameters": {"type": "object"},
            "data": {"type": "array"},
        },
    }
    schemas = {
        "Object": {"type": "object"},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Ready": {
            "type": "object",
            "properties": {
                "ready": {"type": "boolean"},
                "replicas_ready": {"type": "integer"},
                "replicas": {"type": "integer"},
            },
        },
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "min_score": {"type": "number", "minimum": 0, "maximum": 1},
                        "classes": {"type": "array", "items": {"type": "string"}},
                        "timeout": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "deadline in microseconds",
                        },
                        "binary_data_output": {"type": "boolean"},
                    },
                },
                "inputs": {"type": "array", "minItems": 1, "items": tensor},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                    },
                },
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Detection": {
            "type": "object",
            "required": ["box", "score", "label", "class"],
            "properties": {
                "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                "score": {"type": "number"},
                "label": {"type": "integer"},
                "class": {"type": "string", "enum": classes},
            },
        },
        "DetectResponse": {
            "type": "object",
            "required": ["detections", "width", "height"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "string"},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "detections": {"type": "array", "items": {"$ref": "#/components/schemas/Detection"}},
            },
        },
    }
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "crosswalk detection server",
            "version": cfg.model_version,
            "description": "Open Inference Protocol v2 and a plain image endpoint for the crosswalk detector",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if cfg.resolved_api_key():
        doc["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }
        doc["security"] = [{"apiKey": []}]
    return doc
