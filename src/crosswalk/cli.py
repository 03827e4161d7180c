"""The ``crosswalk`` command: parse arguments, build a config, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from crosswalk.cliutil import keep_freed_memory, positive_float, positive_int, write_json


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"size must look like 512x288, got {text!r}") from e
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return w, h


# ---- data ---------------------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace) -> int:
    from crosswalk.data.synth import SynthConfig, synthesize

    w, h = args.size
    cfg = SynthConfig(
        frames=args.frames,
        seed=args.seed,
        width=w,
        height=h,
        workers=args.workers,
        shard_size_bytes=int(args.shard_size * 1e6),
    )
    result = synthesize(args.out, cfg)
    m = result.manifest
    print(
        f"{m['samples']} frames in {len(m['shards'])} shard(s) at {args.out}: "
        f"{result.frames_per_s:.1f} frames/s, {result.frames_per_s_per_core:.1f} per core ({cfg.workers} workers)"
    )
    print(
        "objects: "
        + ", ".join(f"{k} {v}" for k, v in m["class_counts"].items())
        + f", ignore {m['ignore_regions']}"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from crosswalk.data.verify import verify_dataset

    report = verify_dataset(args.dir, progress=not args.quiet)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    status = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(
        f"{args.dir}: {report.shards} shard(s), {report.samples} samples verified in {report.seconds:.1f} s: {status}"
    )
    return 0 if report.ok else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    from crosswalk.data.inspect import inspect_dataset

    stats = inspect_dataset(args.dir, montage=args.montage, frames=args.frames)
    write_json(stats, args.json)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from crosswalk.data.formats import DatasetImportError, import_dataset

    try:
        report = import_dataset(args.format, args.src, args.out, on_error=args.on_error)
    except DatasetImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in report.errors:
        print(f"skipped: {line}", file=sys.stderr)
    print(
        f"imported {report.imported} image(s) into {args.out}; skipped {report.skipped}, dropped {report.dropped}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from crosswalk.data.formats import export_coco

    coco = export_coco(args.dir, args.out)
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} annotations")
    return 0


# ---- model, train, eval ----------------------------------------------------------------------------------


def cmd_model_info(args: argparse.Namespace) -> int:
    from crosswalk.model import DetectorConfig, model_info

    for preset in args.preset:
        w, h = args.size
        info = model_info(DetectorConfig.preset(preset, input_size=(w, h)))
        print(
            f"{preset:6s} {info['params'] / 1e6:6.3f} M params  {info['gflops_forward']:6.3f} GFLOPs forward  "
            f"{info['gflops_forward_backward']:6.3f} GFLOPs forward+backward  at {w}x{h}"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from crosswalk.train.config import resolve_config
    from crosswalk.train.loop import Preempted, TrainingDiverged, train

    try:
        cfg = resolve_config(args.config, args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = train(cfg, args.data, args.out, val=args.val, resume=args.resume)
    except Preempted as e:
        return int(e.code)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (FileExistsError, FileNotFoundError, ValueError) as e:  # run folder, --resume, init_from
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"run {result.run}: {result.step} steps; weights {result.run / 'weights' / 'model.safetensors'}"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from crosswalk.train.runs import evaluate_run

    results = evaluate_run(args.model, args.data, json_out=args.json, plots=args.plots, workers=args.workers)
    return 0 if results is not None else 1


# ---- bench and demo -------------------------------------------------------------------------------------


def cmd_bench_data(args: argparse.Namespace) -> int:
    from crosswalk.bench.data import DataBenchConfig, bench_data

    cfg = DataBenchConfig(
        workers=args.workers, batch_size=args.batch_size, seconds=args.seconds, rounds=args.rounds
    )
    result = bench_data(args.dir, cfg)
    write_json(result, args.json)
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from crosswalk.bench.train import TrainBenchConfig, bench_train

    cfg = TrainBenchConfig(
        preset=args.preset,
        batch_size=args.batch_size,
        workers=args.workers,
        steps=args.steps,
        repeats=args.repeats,
        compile=args.compile,
        decode=args.decode,
    )
    write_json(bench_train(args.dir, cfg), args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from crosswalk.demo import run_demo

    return run_demo(Path(args.out), frames=args.frames)


# ---- parser -------------------------------------------------------------------------------------------

COMMAND_MODULES = [
    "crosswalk.infer.commands",
    "crosswalk.serve.commands",
    "crosswalk.bench.commands",
    "crosswalk.drive.commands",
    "crosswalk.infra.commands",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crosswalk", description="Teach a car to see pedestrians, end to end.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="synthesize, import, verify, inspect and export datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="render driving scenes into checksummed shards")
    s.add_argument("--out", required=True, help="new dataset folder")
    s.add_argument("--frames", type=positive_int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=_size, default=(512, 288), help="WxH, default 512x288")
    s.add_argument("--workers", type=positive_int, default=2)
    s.add_argument("--shard-size", type=float, default=64.0, help="MB per shard, default 64")
    s.set_defaults(func=cmd_synth)

    v = dsub.add_parser("verify", help="recompute hashes, decode images, validate annotations")
    v.add_argument("dir")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=cmd_verify)

    i = dsub.add_parser("inspect", help="statistics and a labelled montage")
    i.add_argument("dir")
    i.add_argument("--montage", help="PNG path for a montage of frames chosen to cover every condition")
    i.add_argument("--frames", type=positive_int, default=16, help="frames in the montage")
    i.add_argument("--json", help="write the statistics here")
    i.set_defaults(func=cmd_inspect)

    im = dsub.add_parser("import", help="import COCO, YOLO, VOC or CityPersons into shards")
    im.add_argument("--format", required=True, choices=["coco", "yolo", "voc", "citypersons"])
    im.add_argument("src", help="COCO: the instances JSON; others: the dataset root folder")
    im.add_argument("--out", required=True)
    im.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    im.set_defaults(func=cmd_import)

    ex = dsub.add_parser("export", help="export shards as COCO JSON (images beside it)")
    ex.add_argument("--format", required=True, choices=["coco"])
    ex.add_argument("dir")
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=cmd_export)

    mo = sub.add_parser("model", help="the detector")
    msub = mo.add_subparsers(dest="model_command", required=True)
    mi = msub.add_parser("info", help="parameters and FLOPs (torch.utils.flop_counter)")
    mi.add_argument("--preset", nargs="+", default=["nano", "small"])
    mi.add_argument("--size", type=_size, default=(512, 288))
    mi.set_defaults(func=cmd_model_info)

    tr = sub.add_parser("train", help="train the detector (single process or under torchrun)")
    tr.add_argument("--data", required=True)
    tr.add_argument("--val")
    tr.add_argument("--out", required=True, help="run folder")
    tr.add_argument("--config", help="TOML or JSON file of TrainConfig keys")
    tr.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest checkpoint"
    )
    tr.add_argument("overrides", nargs="*", metavar="key=value")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="COCO AP and pedestrian MR-2 of a run or weights on a dataset")
    ev.add_argument("model", help="a run folder, or a weights folder / model.safetensors")
    ev.add_argument("--data", required=True)
    ev.add_argument("--json")
    ev.add_argument("--plots")
    ev.add_argument("--workers", type=int, default=2)
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="benchmarks that write JSON")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    bd = bsub.add_parser("data", help="loader throughput against the JPEG decode limit")
    bd.add_argument("dir")
    bd.add_argument("--json", required=True)
    bd.add_argument("--workers", type=positive_int, default=2)
    bd.add_argument("--batch-size", type=positive_int, default=32)
    bd.add_argument("--seconds", type=positive_float, default=1.0, help="per phase of each round (default 1)")
    bd.add_argument(
        "--rounds", type=positive_int, default=12, help="loader and decode phases alternated (12)"
    )
    bd.set_defaults(func=cmd_bench_data)

    bt = bsub.add_parser("train", help="training images/s with the real loader against compute only")
    bt.add_argument("dir")
    bt.add_argument("--json", required=True)
    bt.add_argument("--preset", default="nano")
    bt.add_argument("--batch-size", type=positive_int, default=32)
    bt.add_argument("--workers", type=int, default=2)
    bt.add_argument("--steps", type=positive_int, default=10)
    bt.add_argument("--repeats", type=positive_int, default=3)
    bt.add_argument("--compile", action="store_true")
    bt.add_argument(
        "--decode",
        choices=["workers", "device"],
        default="workers",
        help="where JPEGs are decoded: in the loader's workers, or batched on the training device (nvJPEG)",
    )
    bt.set_defaults(func=cmd_bench_train)

    # Later parts of the system keep their commands beside their code; each module's register() adds its
    # subcommands and imports nothing heavy at module level.
    groups = {"data": dsub, "model": msub, "bench": bsub}
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, groups)

    d = sub.add_parser("demo", help="the main job on the embedded default data")
    d.add_argument("--out", default="outputs")
    d.add_argument("--frames", type=positive_int, default=512)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting turn any CPU oversubscription (loader workers, a second rank,
    # anything else running) into 10-40x slower steps: measured here, a nano step took 4.7 s spinning, 0.32 s
    # passive. Set before torch loads its OpenMP runtime; an explicit setting in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    keep_freed_memory()
    from crosswalk.data.schema import AnnotationError
    from crosswalk.data.shards import CorruptSampleError, DatasetError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DatasetError, CorruptSampleError, AnnotationError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)  # expected failures get one line, not a traceback
        return 2
