"""Commands of crosswalk.bench beyond data and train (registered by crosswalk.cli): ``crosswalk bench infer``."""

from __future__ import annotations

import argparse
import sys

from crosswalk.cliutil import positive_float, positive_int


def cmd_bench_infer(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from crosswalk.bench.infer import SYSTEMS, InferBenchConfig, bench_infer

    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    if not systems or set(systems) - set(SYSTEMS):
        print(f"error: --systems takes a comma-separated subset of {','.join(SYSTEMS)}", file=sys.stderr)
        return 2
    cfg = InferBenchConfig.quick() if args.quick else InferBenchConfig()
    overrides = {
        "seconds": args.seconds,
        "server_seconds": args.seconds,
        "max_batch": args.max_batch,
        "p99_ms": args.p99_ms,
        "threads": args.threads,
        "frames": args.frames,
        "server_probes": args.probes,
        "backend": args.backend,
    }
    cfg = replace(cfg, systems=systems, **{k: v for k, v in overrides.items() if v is not None})
    try:
        bench_infer(args.json, cfg, model=args.model, url=args.url)
    except ConnectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub, groups) -> None:
    bi = groups["bench"].add_parser(
        "infer",
        help="MLPerf LoadGen SingleStream, Server and Offline on the runtime and the HTTP server",
        description="Writes the JSON, a latency histogram PNG beside it and every run's LoadGen logs in "
        "loadgen/<system>/<scenario>/ of the JSON's folder.",
    )
    bi.add_argument("--json", required=True, help="output JSON; its folder receives the logs and the PNG")
    bi.add_argument("--url", help="a running server's base URL (default: start one for the benchmark)")
    bi.add_argument("--model", help="model package, run or weights folder (default: the reference model)")
    bi.add_argument("--quick", action="store_true", help="a few seconds per system (one Server probe)")
    bi.add_argument(
        "--seconds", type=positive_float, help="LoadGen min duration per run (default 3, quick 1)"
    )
    bi.add_argument("--max-batch", type=positive_int, help="Offline/Server batch size (default 8)")
    bi.add_argument("--p99-ms", type=positive_float, help="Server scenario p99 bound (default 50)")
    bi.add_argument("--probes", type=positive_int, help="Server QPS search steps per system (default 4)")
    bi.add_argument("--frames", type=positive_int, help="distinct JPEGs in the sample library")
    bi.add_argument("--threads", type=positive_int, help="runtime threads (default: all cores)")
    bi.add_argument("--backend", choices=["onnxruntime", "torch"])
    bi.add_argument("--systems", default="runtime,server", help="runtime,server (default both)")
    bi.set_defaults(func=cmd_bench_infer)
