"""``crosswalk profile train|infer``, ``crosswalk plan`` and ``crosswalk report`` (registered by crosswalk.cli).

Heavy imports (torch, onnxruntime, matplotlib) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crosswalk.cliutil import positive_float, write_json


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_profile_train(args: argparse.Namespace) -> int:
    from crosswalk.infra.profile_train import TrainProfileConfig, profile_train

    if args.data is not None and not (Path(args.data) / "manifest.json").is_file():
        return _error(f"--data {args.data} is not a crosswalk dataset (no manifest.json); make one with "
                      "`crosswalk data synth` or leave --data out to profile on generated frames")  # fmt: skip
    overrides = {"preset": args.preset, "batch_size": args.batch_size, "workers": args.workers}
    if args.batch_size < 2:
        return _error("--batch-size must be at least 2: the step-time line also needs a step at half of it")
    # the line's second point at half the calibration batch, the held-out step at twice it
    overrides |= {"line_batch_size": args.batch_size // 2, "validate_batch_size": 2 * args.batch_size}
    cfg = TrainProfileConfig.quick(**overrides) if args.quick else TrainProfileConfig(**overrides)
    write_json(profile_train(args.data, cfg), args.json)
    return 0


def cmd_profile_infer(args: argparse.Namespace) -> int:
    from crosswalk.infra.profile_infer import InferProfileConfig, profile_infer

    cfg = InferProfileConfig.quick() if args.quick else InferProfileConfig()
    bench = Path(args.bench) if args.bench else Path(args.json).parent / "bench_infer.json"
    write_json(profile_infer(args.model, cfg, bench_json=bench), args.json)
    return 0


def _hardware(text: str | None) -> list[str] | None:
    return [k.strip() for k in text.split(",") if k.strip()] if text else None


def cmd_plan(args: argparse.Namespace) -> int:
    from crosswalk.infra.catalog import load_catalog
    from crosswalk.infra.plan import format_plan, plan_from_dir
    from crosswalk.infra.validate import validate

    try:
        catalog = load_catalog(args.catalog)
    except (OSError, ValueError) as e:
        return _error(str(e))
    if args.validate:
        src = Path(args.from_dir)
        pt, pi = (src / "profile_train.json", src / "profile_infer.json")
        if not pt.is_file() and not pi.is_file():
            return _error(
                f"{src} has neither profile_train.json nor profile_infer.json; run `crosswalk profile` first"
            )
        result = validate(
            json.loads(pt.read_text()) if pt.is_file() else None,
            json.loads(pi.read_text()) if pi.is_file() else None,
        )
        for c in result["checks"]:
            print(f"{c['name']}: predicted {c['predicted']:.4g} {c['unit']}, measured {c['measured']:.4g} "
                  f"-> {c['error_pct']:.1f}%  [{c['calibrated_on']}]")  # fmt: skip
        print(f"max error {result['max_error_pct']}%")
        if args.json:
            write_json({"validation": result}, args.json)
        return 0
    for name in ("train_images", "epochs", "deadline_h", "serve_fps", "p99_ms"):
        if getattr(args, name) is None:
            return _error(f"--{name.replace('_', '-')} is required (or pass --validate)")
    try:
        plan = plan_from_dir(
            args.from_dir,
            train_images=args.train_images,
            epochs=args.epochs,
            deadline_h=args.deadline_h,
            serve_fps=args.serve_fps,
            p99_ms=args.p99_ms,
            hardware=_hardware(args.hardware),
            catalog=catalog,
        )
    except KeyError as e:
        return _error(str(e.args[0]))
    print(format_plan(plan))
    if args.json:
        write_json(plan, args.json)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from crosswalk.infra.report import write_report

    if not Path(args.from_dir).is_dir():
        return _error(f"--from {args.from_dir} is not a folder; run `make demo` or point it at your outputs")
    path = write_report(args.from_dir, args.out)
    print(f"wrote {path}")
    return 0


def cmd_device_check(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from crosswalk.infra.device_check import DeviceCheckConfig, run_device_check

    cfg = DeviceCheckConfig.quick() if args.quick else DeviceCheckConfig()
    if args.budget_s is not None:
        cfg = replace(cfg, budget_s=args.budget_s)
    return 1 if run_device_check(args.out, cfg)["errors"] else 0


def register(sub, groups) -> None:
    prof = sub.add_parser("profile", help="measure the training and inference workloads (JSON)")
    psub = prof.add_subparsers(dest="profile_command", required=True)
    pt = psub.add_parser("train", help="FLOPs, activations, storage, decode, a step's phases, the all-reduce")
    pt.add_argument("--data", help="dataset folder (default: generate a few frames)")
    pt.add_argument("--preset", default="nano")
    pt.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="calibration batch (default 16); the step-time line also runs half of it, --validate predicts twice it",
    )
    pt.add_argument("--workers", type=int, default=2, help="loader processes")
    pt.add_argument("--quick", action="store_true", help="fewer steps (tests and the demo)")
    pt.add_argument("--json", required=True)
    pt.set_defaults(func=cmd_profile_train)

    pi = psub.add_parser("infer", help="latency and throughput against batch size and threads")
    pi.add_argument("model", nargs="?", help="package, run or weights folder (default: the reference model)")
    pi.add_argument("--bench", help="bench_infer.json for the server overhead (default: beside --json)")
    pi.add_argument("--quick", action="store_true", help="batches 1..16, shorter runs")
    pi.add_argument("--json", required=True)
    pi.set_defaults(func=cmd_profile_infer)

    pl = sub.add_parser("plan", help="size GPUs, storage, network and replicas from the profiles")
    pl.add_argument(
        "--from", dest="from_dir", default="outputs", help="folder with profile_*.json (default outputs)"
    )
    pl.add_argument("--train-images", type=int)
    pl.add_argument("--epochs", type=positive_float)
    pl.add_argument("--deadline-h", type=positive_float)
    pl.add_argument("--serve-fps", type=positive_float)
    pl.add_argument("--p99-ms", type=positive_float)
    pl.add_argument(
        "--hardware", help="catalog GPU keys, comma-separated; the first trains (default h200_sxm)"
    )
    pl.add_argument("--catalog", help="a hardware TOML of the same shape as the shipped one")
    pl.add_argument(
        "--validate", action="store_true", help="predict held-out measurements; report each error"
    )
    pl.add_argument("--json")
    pl.set_defaults(func=cmd_plan)

    dc = sub.add_parser("device-check", help="the GPU figures of every issue in one short run (a lent GPU)")
    dc.add_argument("--out", required=True, help="folder for device_check.json")
    dc.add_argument("--quick", action="store_true", help="a CPU smoke run: tiny frames, one step")
    dc.add_argument("--budget-s", type=positive_float, help="skip training rows past this (default 330 s)")
    dc.set_defaults(func=cmd_device_check)

    rp = sub.add_parser("report", help="one self-contained HTML page from the outputs folder")
    rp.add_argument("--from", dest="from_dir", default="outputs")
    rp.add_argument("--out", help="HTML path (default FROM/report.html)")
    rp.set_defaults(func=cmd_report)
