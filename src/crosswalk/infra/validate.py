"""``crosswalk plan --validate``: the planner's models predict measurements they were not calibrated on.

Each check calibrates on some measured points of this machine's profiles and predicts another one:

- training step time: the line a + c*b through compute-only steps at two batch sizes (a: what a step costs
  whatever its size, the optimizer's update among it) -> the step time at the held-out batch (every step
  measured between two calibration-batch steps, at the speed they ran at: ``step_ms_paired``);
- inference latency: the line a + c*b fitted on the calibration batches -> every other measured batch,
  for each thread count (latencies paired with batch-1 calls, so that all are at one host speed level);
- replicas: one replica's images per CPU-second x the CPU-seconds per second the replicas were given (process
  time; on a machine shared with other tenants the cores a job gets vary from minute to minute) -> the
  replicas' summed images/s: the planner's "replicas scale with the cores they get" assumption (measured
  round by round against the lone replica, at the speed it ran at: ``efficiency_paired``);
- all-reduce: t = alpha + S/B fitted on the smallest and largest buffers of the 2-rank gloo run -> the
  middle one (timed in the same reps as the ends, at the speed they ran at: ``ms_paired``).

Errors are |predicted - measured| / measured, reported for every check whatever their size.
"""

from __future__ import annotations

from crosswalk.infra.planner import fit_alpha_beta, fit_line, latency_ms


def check(name: str, calibrated_on: str, predicted: float, measured: float, unit: str) -> dict:
    return {
        "name": name,
        "calibrated_on": calibrated_on,
        "predicted": round(predicted, 4),
        "measured": round(measured, 4),
        "unit": unit,
        "error_pct": round(100 * abs(predicted - measured) / measured, 2),
    }


def _step_ms(row: dict) -> float:
    """A compute-only row's step time: paired with its calibration-batch neighbours when the profile has it."""
    return row.get("step_ms_paired", row["step_ms"])


def training_checks(profile: dict) -> list[dict]:
    compute = profile["compute_only"]
    calib = [str(profile["calibration_batch_size"])]
    if "line_batch_size" in profile:  # a line a + c*b through two batch sizes; older profiles: images/s alone
        calib.insert(0, str(profile["line_batch_size"]))
        a, c = fit_line([int(b) for b in calib], [_step_ms(compute[b]) for b in calib])
        how = f"step time a + c*b through compute-only steps at batches {' and '.join(calib)}"
    else:
        a, c = 0.0, 1e3 / compute[calib[0]]["images_per_s"]
        how = f"compute-only images/s at batch {calib[0]}"
    out = [
        check(f"training step, batch {b}", how, a + c * int(b), _step_ms(compute[b]), "ms")
        for b in compute
        if b not in calib
    ]
    rows = profile["allreduce"]["rows"]
    if len(rows) >= 3:
        ends = [rows[0], rows[-1]]
        alpha, bw = fit_alpha_beta([r["bytes"] for r in ends], [r["ms"] / 1e3 for r in ends])
        for r in rows[1:-1]:
            out.append(
                check(
                    f"2-rank gloo all-reduce, {r['bytes'] / 1e6:.1f} MB",
                    f"alpha + S/B fitted on {ends[0]['bytes'] / 1e6:.1f} and {ends[1]['bytes'] / 1e6:.1f} MB",
                    1e3 * (alpha + r["bytes"] / bw),
                    r.get("ms_paired", r["ms"]),
                    "ms",
                )
            )
    return out


def inference_checks(profile: dict) -> list[dict]:
    out = []
    calib = profile["calibration_batches"]
    for threads in sorted({r["threads"] for r in profile["rows"]}):
        rows = [r for r in profile["rows"] if r["threads"] == threads]
        fit = [r for r in rows if r["batch"] in calib]
        a, c = fit_line([r["batch"] for r in fit], [latency_ms(r) for r in fit], relative=True)
        for r in rows:
            if r["batch"] not in calib:
                out.append(
                    check(
                        f"inference p50 latency, batch {r['batch']}, {threads} thread(s)",
                        f"a + c*b fitted on batches {calib}",
                        a + c * r["batch"],
                        latency_ms(r),
                        "ms",
                    )
                )
    rep = profile.get("replicas")
    if rep and rep.get("one_replica_images_per_s"):
        predicted = rep["one_replica_images_per_s"] / rep["one_replica_cpu_s_per_s"] * rep["cpu_s_per_s"]
        # paired: the replicas' images per CPU-second against the lone replica's in the same round, median
        # over rounds, at the predicted figure's speed level (older profiles: the pooled images/s)
        measured = predicted * rep["efficiency_paired"] if "efficiency_paired" in rep else rep["images_per_s"]
        out.append(
            check(
                f"{rep['replicas']} replicas side by side, images/s",
                "one replica's images per CPU-second x the CPU-seconds per second the replicas got",
                predicted,
                measured,
                "images/s",
            )
        )
    return out


def validate(profile_train: dict | None, profile_infer: dict | None) -> dict:
    """Every check the available profiles allow, and the largest error."""
    checks = (training_checks(profile_train) if profile_train else []) + (
        inference_checks(profile_infer) if profile_infer else []
    )
    return {
        "checks": checks,
        "max_error_pct": max((c["error_pct"] for c in checks), default=None),
        "machine": "this machine (the profiles' own measurements)",
    }
