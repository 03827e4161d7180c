"""The infrastructure steps of ``make demo``: profile both workloads, plan, and write the report."""

from __future__ import annotations

import json
from pathlib import Path

# The demo's planning question: a fleet's worth of frames trained overnight, and a city's cameras served.
DEMO_PLAN = {"train_images": 1_000_000, "epochs": 50, "deadline_h": 8.0, "serve_fps": 3000.0, "p99_ms": 50.0}


def run_infra_demo(
    out: str | Path, data: str | Path | None = None, model: str | Path | None = None, quick: bool = True
) -> Path:
    """Write ``profile_train.json``, ``profile_infer.json``, ``plan.json`` and ``report.html`` into ``out``;
    print the plan with its derivations and return the report's path."""
    from crosswalk.infra.plan import format_plan, plan_from_dir
    from crosswalk.infra.profile_infer import InferProfileConfig, profile_infer
    from crosswalk.infra.profile_train import TrainProfileConfig, profile_train
    from crosswalk.infra.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def save(name: str, obj: dict) -> None:
        (out / name).write_text(json.dumps(obj, indent=2) + "\n")

    print("\n== profile the training workload", flush=True)
    save(
        "profile_train.json",
        profile_train(data, TrainProfileConfig.quick() if quick else TrainProfileConfig()),
    )
    print("\n== profile the inference workload", flush=True)
    # The full inference profile even in the demo (about 2 minutes instead of 45 s): with fewer rounds, this
    # host's jumps in speed put `plan --validate` above 10% in most runs (11-19% in three quick runs, 7-9% in
    # three full ones).
    cfg = InferProfileConfig()
    save("profile_infer.json", profile_infer(model, cfg, bench_json=out / "bench_infer.json"))
    print("\n== plan the infrastructure: " + ", ".join(f"{k}={v}" for k, v in DEMO_PLAN.items()), flush=True)
    plan = plan_from_dir(out, **DEMO_PLAN)
    save("plan.json", plan)
    print(format_plan(plan))
    report = write_report(out, out / "report.html")
    print(f"\n== report: {report.resolve()}")
    return report
