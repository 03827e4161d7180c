"""``crosswalk export`` and ``crosswalk predict``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_export(args: argparse.Namespace) -> int:
    from crosswalk.infer.export import export_package

    config = export_package(args.run, args.out, parity_count=args.parity_frames, name=args.name)
    p = config["parity"]
    print(
        f"exported {config['name']} version {config['version']} to {args.out}: model.onnx, model.safetensors, "
        f"config.json\nparity on {p['frames']} generated frames: scores max |diff| {p['score_max_abs_diff']:.2e}, "
        f"boxes {p['box_max_abs_diff_px']:.2e} px ({p['box_max_abs_diff_canvas']:.2e} of the canvas), "
        f"post-NMS detections identical: {p['identical_detections']}"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from crosswalk.infer import Predictor
    from crosswalk.infer.draw import draw_detections

    predictor = Predictor(args.model, backend=args.backend, threads=args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in map(Path, args.images):
        try:
            data = path.read_bytes()
            image = predictor.load_image(data)
            [dets] = predictor.predict([image], min_score=args.min_score, classes=args.classes)
        except (OSError, ValueError) as e:  # ImageError is a ValueError
            print(f"error: {path}: {e}")
            failed += 1
            continue
        draw_detections(image, dets, out / f"{path.stem}.jpg")
        record = {"image": path.name, "width": image.shape[1], "height": image.shape[0], "detections": dets}
        (out / f"{path.stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        counts = {c: sum(d["class"] == c for d in dets) for c in predictor.classes}
        print(f"{path.name}: " + ", ".join(f"{n} {c}" for c, n in counts.items()))
    print(f"wrote {len(args.images) - failed} annotated images and JSON files to {out}")
    return 2 if failed else 0


def register(sub, groups) -> None:
    ex = sub.add_parser("export", help="export a run as a model package: ONNX, safetensors, config.json")
    ex.add_argument("run", help="a run folder, its weights/ folder or model.safetensors")
    ex.add_argument("--out", required=True, help="REPO/NAME/VERSION (Triton's model-repository layout)")
    ex.add_argument("--name", help="model name in config.json (default: NAME from --out)")
    ex.add_argument("--parity-frames", type=int, default=8, help="generated frames for the parity check")
    ex.set_defaults(func=cmd_export)

    pr = sub.add_parser("predict", help="detect objects in images; writes annotated images and JSON")
    pr.add_argument("model_and_images", nargs="+", metavar="[MODEL] IMAGE")
    pr.add_argument("--out", default="predictions")
    pr.add_argument("--backend", choices=["onnxruntime", "torch"], default="onnxruntime")
    pr.add_argument("--threads", type=int)
    pr.add_argument("--min-score", type=float)
    pr.add_argument("--classes", nargs="+", help="class names or ids to keep")
    pr.set_defaults(func=_split_model_and_images)


def _split_model_and_images(args: argparse.Namespace) -> int:
    """``predict [MODEL] IMAGES...``: the first argument is the model when it is a folder."""
    first, *rest = args.model_and_images
    if Path(first).is_dir():
        args.model, args.images = first, rest
    else:
        args.model, args.images = None, args.model_and_images
    if not args.images:
        print("error: no images given")
        return 2
    return cmd_predict(args)
