"""Commands of crosswalk.drive (registered by crosswalk.cli): ``crosswalk drive``."""

from __future__ import annotations

import argparse
import sys

from crosswalk.cliutil import non_negative_float, positive_float


def cmd_drive(args: argparse.Namespace) -> int:
    import httpx

    from crosswalk.drive.sim import DriveConfig
    from crosswalk.drive.sweep import run_drive

    cfg = DriveConfig(fps=args.fps, actuation_delay_s=args.actuation_s, false_alarms=args.false_alarms)
    try:
        run_drive(
            args.model,
            scenarios=args.scenario,
            speeds_kmh=tuple(args.speed_kmh),
            via=args.via,
            fps=args.fps,
            latency_ms=args.latency_ms,
            seed=args.seed,
            sweep=not args.no_sweep,
            json_out=args.json,
            plot=args.plot,
            gif=args.gif,
            cfg=cfg,
        )
    except (ValueError, OSError) as e:  # unknown scenario, missing model
        print(f"error: {e}", file=sys.stderr)
        return 2
    except httpx.HTTPError as e:  # the server in --via is not running or refused the frame
        print(f"error: {args.via}: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub, groups) -> None:
    p = sub.add_parser(
        "drive",
        help="the vehicle loop: a pedestrian steps out, the car sees (with real latency) and brakes",
        description="Drive simulated scenarios with the real model in the loop; report detection and braking "
        "distances, collisions, and the maximum inference latency that still avoids a collision.",
    )
    p.add_argument(
        "model", nargs="?", default=None, help="model package, run or weights folder (default: reference)"
    )
    p.add_argument(
        "--scenario",
        default="all",
        help="all, a case (adult-walk-curb, child-walk-parked, child-run-parked), a condition "
        "(day, dusk, night, fog, rain), CASE-CONDITION, or a comma-separated list",
    )
    p.add_argument("--speed-kmh", type=positive_float, nargs="+", default=[30.0, 50.0, 70.0])
    p.add_argument("--via", default="inproc", help="inproc, or the URL of a running `crosswalk serve`")
    p.add_argument("--fps", type=positive_float, default=20.0, help="camera frame rate")
    p.add_argument(
        "--latency-ms",
        type=non_negative_float,
        default=None,
        help="replace the measured inference latency by this value (detections still come from the model)",
    )
    p.add_argument("--actuation-s", type=non_negative_float, default=0.15, help="brake actuation delay")
    p.add_argument(
        "--false-alarms",
        choices=["count", "brake"],
        default="count",
        help="a brake decision for a false positive: count it and drive on (default), or brake",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sweep", action="store_true", help="skip the maximum-safe-latency sweep")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--plot", help="PNG of gap and speed over time, events marked")
    p.add_argument("--gif", help="GIF of the camera view of the first scenario")
    p.set_defaults(func=cmd_drive)
