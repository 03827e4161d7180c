"""The detection server: OIP v2 + ``/v1/detect`` over the ``crosswalk.infer.Predictor`` runtime.

- ``serve(model, ServeConfig)``: blocking; what ``crosswalk serve`` calls (replicas under a supervisor).
- ``running_server(model=None, port=0, **settings)``: a real server in a subprocess; yields its URL once ready.
- ``create_app(predictor, ServeConfig)``: the ASGI app, for in-process use and tests.

Modules: ``config`` (ServeConfig), ``batcher`` (the deadline-driven batching policy and its asyncio shell),
``oip`` (protocol parsing/encoding), ``app`` (routes and request path), ``middleware`` (API key, body
limit, request id, request metrics), ``metrics`` (Prometheus), ``replicas`` (socket sharing, supervisor),
``launcher`` (the subprocess helper), ``openapi`` (the served document), ``demo`` (the demo step:
``run_serve_demo(out)``, and ``offer_load``, the open-loop load generator).
"""

from crosswalk.serve.config import ServeConfig
from crosswalk.serve.launcher import running_server


def serve(model, cfg: ServeConfig) -> int:
    """Serve ``model`` (None = the reference model) until SIGTERM; see ``crosswalk.serve.replicas``."""
    from crosswalk.serve.replicas import serve as _serve

    return _serve(model, cfg)


def create_app(predictor, cfg: ServeConfig | None = None, **kwargs):
    """The Starlette app around a loaded predictor; see ``crosswalk.serve.app.create_app``."""
    from crosswalk.serve.app import create_app as _create_app

    return _create_app(predictor, cfg, **kwargs)


__all__ = ["ServeConfig", "create_app", "running_server", "serve"]
