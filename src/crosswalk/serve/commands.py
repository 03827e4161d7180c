"""``crosswalk serve``: the detection server (registered by crosswalk.cli). Nothing heavy is imported here."""

from __future__ import annotations

import argparse
import sys

from crosswalk.cliutil import positive_int


def register(sub, groups) -> None:
    s = sub.add_parser(
        "serve",
        help="serve the detector: OIP v2 (Triton/KServe clients), /v1/detect, /metrics",
        description="Serve a model package over HTTP with dynamic batching, load shedding and replicas.",
    )
    s.add_argument(
        "repo", nargs="?", help="model package, run or weights folder (default: the reference model)"
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0 = any free port (printed at start)")
    s.add_argument(
        "--replicas", type=int, default=1, help="worker processes; 0 = in this process, unsupervised"
    )
    s.add_argument(
        "--threads", type=positive_int, help="runtime threads per replica (default: cores / replicas)"
    )
    s.add_argument("--backend", choices=["onnxruntime", "torch"], default="onnxruntime")
    s.add_argument("--max-batch", type=positive_int, default=8)
    s.add_argument("--max-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    s.add_argument(
        "--latency-target-ms",
        type=float,
        default=100.0,
        help="batches and admission keep requests under this",
    )
    s.add_argument("--queue-limit", type=positive_int, default=64, help="images admitted per replica")
    s.add_argument("--max-body-bytes", type=positive_int, default=16 * 1024 * 1024)
    s.add_argument("--max-pixels", type=positive_int, default=40_000_000, help="decompression-bomb limit")
    s.add_argument("--api-key", help="require this key (X-API-Key); default: $CROSSWALK_API_KEY, else none")
    s.add_argument(
        "--drain-timeout-s", type=float, default=30.0, help="SIGTERM: longest wait for in-flight work"
    )
    s.add_argument("--model-name", default="crosswalk", help="the OIP model name")
    s.add_argument("--model-version", default="1")
    s.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment instead")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.ray:
        from crosswalk.serve.ray_app import run_ray

        return int(run_ray(args) or 0)
    from crosswalk.serve.config import ServeConfig
    from crosswalk.serve.replicas import serve

    try:
        cfg = ServeConfig(
            host=args.host,
            port=args.port,
            replicas=args.replicas,
            threads=args.threads,
            backend=args.backend,
            max_batch=args.max_batch,
            max_delay_ms=args.max_delay_ms,
            latency_target_ms=args.latency_target_ms,
            queue_limit=args.queue_limit,
            max_body_bytes=args.max_body_bytes,
            max_pixels=args.max_pixels,
            api_key=args.api_key,
            drain_timeout_s=args.drain_timeout_s,
            model_name=args.model_name,
            model_version=args.model_version,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from crosswalk.infer.predictor import resolve_package

    resolve_package(args.repo)  # a missing model fails here, in one line, not in every replica
    try:
        return serve(args.repo, cfg)
    except OSError as e:  # the port is taken, the host does not resolve
        print(f"error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
