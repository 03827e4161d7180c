"""``crosswalk report``: one self-contained HTML page from the JSON and PNG files the demo wrote.

Sections: the seed's six needs with training and inference side by side; the data and loader; the trainer;
the server; the vehicle loop; the plan (both seed servers evaluated) and its validation. Every image is
embedded as base64 and no asset is fetched from the network, so the file can be mailed or archived. A missing
input makes its section say "not run" instead of failing.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import jinja2

from crosswalk.infer.predictor import REFERENCE_MODEL
from crosswalk.infra.planner import latency_ms

SECTIONS = ("needs", "data", "trainer", "server", "vehicle", "plan")
SKIP_DIRS = {"data", "runs", "loadgen"}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_inputs(from_dir: str | Path) -> dict[str, Any]:
    """Every JSON the report knows, by name (None when absent), and the PNGs found in ``from_dir``."""
    d = Path(from_dir)
    names = ["data_stats", "bench_data", "bench_train", "eval_quick", "bench_infer", "drive",
             "profile_train", "profile_infer", "plan"]  # fmt: skip
    inputs: dict[str, Any] = {n: _read(d / f"{n}.json") for n in names}
    inputs["eval_reference"] = _read(REFERENCE_MODEL / "eval.json")
    pngs = []
    if d.is_dir():
        for p in sorted(d.rglob("*.png")):
            if not SKIP_DIRS.intersection(p.relative_to(d).parts[:-1]):
                pngs.append(p)
    inputs["pngs"] = pngs
    inputs["from_dir"] = d
    # the shipped model's curves beside the quick run's (a few minutes of training leave those near 100% miss)
    inputs["reference_pngs"] = sorted((REFERENCE_MODEL / "plots").glob("*.png"))
    return inputs


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return _png_uri(buf.getvalue())


def _section_of(path: Path) -> str:
    name = str(path).lower()
    if "montage" in name:
        return "data"
    if "eval" in name or "plots" in name:
        return "trainer"
    if "drive" in name or "scenario" in name or "gap" in name:
        return "vehicle"
    if "infer" in name or "latency" in name or "serve" in name:
        return "server"
    return "other"


def _plots(inputs: dict) -> dict[str, list[dict]]:
    """Plots drawn from the JSON inputs (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, list[dict]] = {s: [] for s in (*SECTIONS, "other")}
    pt, pi, plan = inputs["profile_train"], inputs["profile_infer"], inputs["plan"]
    if pt:
        s = pt["step"]
        parts = {k: s[f"{k}_ms"] for k in ("data_wait", "forward", "backward", "optimizer", "allreduce")}
        fig, ax = plt.subplots(figsize=(7, 2.4))
        left = 0.0
        for (name, ms), color in zip(parts.items(), plt.cm.tab10.colors, strict=False):
            ax.barh([0], [ms], left=left, color=color, label=f"{name.replace('_', ' ')} {ms:.1f} ms")
            left += ms
        ax.set_yticks([])
        ax.set_xlabel("ms per step")
        ax.set_title(f"One training step, batch {s['batch_size']}, measured on this machine")
        ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35))
        out["trainer"].append({"uri": _figure_uri(fig), "caption": "profile_train.json: step breakdown"})
    if pi:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        for t in sorted({r["threads"] for r in pi["rows"]}):
            rows = [r for r in pi["rows"] if r["threads"] == t]
            ax.plot(
                [r["batch"] for r in rows],
                [latency_ms(r) for r in rows],
                "o-",
                label=f"{t} thread(s), p50" + (" paired with batch 1" if "p50_ms_paired" in rows[0] else ""),
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency (ms)")
        ax.set_title("Inference latency against batch size (ORT, this machine)")
        ax.grid(alpha=0.3)
        ax.legend()
        out["server"].append({"uri": _figure_uri(fig), "caption": "profile_infer.json: latency vs batch"})
    if plan:
        cands = plan["inference"]["candidates"]
        keys = [k for k, c in cands.items() if c["power_w"] is not None]
        if keys:
            fig, ax = plt.subplots(figsize=(6.5, 3.6))
            for k in keys:
                c = cands[k]
                ax.scatter(c["power_w"], c["p99_ms"], s=40, color="tab:green" if c["feasible"] else "tab:red")
                ax.annotate(f"{k} x{c['replicas']}", (c["power_w"], c["p99_ms"]), fontsize=8,
                            xytext=(4, 3), textcoords="offset points")  # fmt: skip
            ax.axhline(plan["inference"]["p99_bound_ms"], color="gray", ls="--", label="p99 bound")
            ax.set_xlabel("power (W)")
            ax.set_ylabel("predicted p99 (ms)")
            ax.set_yscale("log")
            ax.set_title(f"Serving {plan['inference']['serve_fps']:g} frames/s: each device")
            ax.legend()
            out["plan"].append({"uri": _figure_uri(fig), "caption": "plan.json: devices for inference"})
        alts = plan["training"]["alternatives"]
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        ax.bar(list(alts), [a["hours_predicted"] for a in alts.values()], color="tab:blue")
        ax.axhline(plan["inputs"]["deadline_h"], color="gray", ls="--", label="deadline")
        ax.set_ylabel("hours to train")
        ax.set_title("Training on each GPU (with the GPU count the plan picks)")
        for i, a in enumerate(alts.values()):
            ax.annotate(f"{a['gpus']} GPU", (i, a["hours_predicted"]), ha="center", fontsize=8,
                        xytext=(0, 3), textcoords="offset points")  # fmt: skip
        ax.legend()
        out["plan"].append({"uri": _figure_uri(fig), "caption": "plan.json: training alternatives"})
    for p in inputs["pngs"]:  # captioned with their path in the outputs folder: eval_plots/miss_rate.png
        caption = str(p.relative_to(inputs["from_dir"]))
        out[_section_of(p)].append({"uri": _png_uri(p.read_bytes()), "caption": caption})
    for p in inputs["reference_pngs"]:
        caption = f"reference model (models/{REFERENCE_MODEL.name}): {p.name}"
        out["trainer"].append({"uri": _png_uri(p.read_bytes()), "caption": caption})
    return out


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "not run"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    elif isinstance(value, int) and abs(value) >= 10000:
        value = f"{value:,}"
    return f"{value}{' ' + unit if unit else ''}"


def _get(d: dict | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def needs_table(inputs: dict) -> list[dict]:
    """The seed's six needs, a measured (or planned) figure for each workload."""
    pt, pi, plan = inputs["profile_train"], inputs["profile_infer"], inputs["plan"]
    bt, bi, bd, drive = inputs["bench_train"], inputs["bench_infer"], inputs["bench_data"], inputs["drive"]
    t, i = _get(plan, "training"), _get(plan, "inference")
    collisions = None
    if drive and drive.get("scenarios"):
        collisions = (
            f"{sum(bool(s.get('collision')) for s in drive['scenarios'])} of {len(drive['scenarios'])}"
        )
    return [
        {"need": "Compute ('advanced computational power' / inference per frame)",
         "training": f"{_fmt(_get(pt, 'gflops_forward_backward_per_image'), 'GFLOP/image')} forward+backward; "
                     f"{_fmt(_get(t, 'total_pflop'), 'PFLOP')} for the plan; MFU here {_fmt(_get(pt, 'mfu_this_machine'))}",
         "inference": f"{_fmt(_get(pi, 'gflops_forward_per_image'), 'GFLOP/frame')}; batch-1 runtime p50 "
                      f"{_fmt(_get(bi, 'runtime_p50_ms'), 'ms')}"},
        {"need": "Storage: capacity and data-access latency",
         "training": f"{_fmt(_get(pt, 'bytes_per_sample'), 'B/sample')}; plan {_fmt(_get(t, 'storage_tb'), 'TB')} read at "
                     f"{_fmt(_get(t, 'read_gb_per_s'), 'GB/s')}; decode {_fmt(_scaled(_get(pt, 'decode_cpu_s_per_sample'), 1e3), 'CPU-ms/sample')}; "
                     f"loader/decode limit {_fmt(_get(bd, 'ratio'))}",
         "inference": f"model {_fmt(_scaled(_get(pi, 'weight_bytes'), 1e-6), 'MB')}; {_fmt(_get(pi, 'memory_per_replica_mb'), 'MB')} per replica; "
                      f"300 TB keeps {_fmt(_get(plan, 'seed_servers', 'kr4268v2', 'frame_retention_days'), 'days')} of frames"},
        {"need": "Interconnect (training) vs latency (inference)",
         "training": f"all-reduce {_fmt(_get(pt, 'step', 'allreduce_ms'), 'ms')} per step (2 gloo ranks here); planned "
                     f"{_fmt(_get(t, 'allreduce_ms_per_step'), 'ms')} on {_fmt(_get(t, 'gpus'))} GPU(s); interconnect-bound: "
                     f"{_fmt(_get(t, 'interconnect_bound'))}",
         "inference": f"server p50 {_fmt(_get(bi, 'server_p50_ms'), 'ms')} (overhead {_fmt(_get(bi, 'overhead_ms'), 'ms')}, per request {_fmt(_get(bi, 'overhead_paired_ms'), 'ms')}); planned p99 "
                      f"{_fmt(_get(i, 'p99_ms_predicted'), 'ms')} on {_fmt(_get(i, 'device'))}"},
        {"need": "Throughput",
         "training": f"{_fmt(_get(bt, 'train_images_per_s'), 'images/s')} with the loader, {_fmt(_get(bt, 'compute_only_images_per_s'), 'images/s')} compute only "
                     f"(this machine); planned {_fmt(_get(t, 'images_per_s'), 'images/s')}",
         "inference": f"{_fmt(_get(bi, 'batched_images_per_s'), 'images/s')} batched, server max {_fmt(_get(bi, 'server_max_qps'), 'QPS') if _get(bi, 'server_max_qps') is not None else 'none (no rate tried met)'} at p99 "
                      f"<= {_fmt(_get(bi, 'p99_bound_ms'), 'ms')}"},
        {"need": "Scalability",
         "training": f"planned {_fmt(_get(t, 'gpus'))} GPU(s) in {_fmt(_get(t, 'nodes'))} node(s); gloo busbw here "
                     f"{_fmt(_first_busbw(pt), 'GB/s')}",
         "inference": f"{_fmt(_get(pi, 'replicas', 'replicas'))} replicas here: {_fmt(_get(pi, 'replicas', 'images_per_s'), 'images/s')} "
                      f"on {_fmt(_get(pi, 'replicas', 'cpu_s_per_s'), 'cores')}"
                      + (f" ({_fmt(eff)} x one replica's images per core)" if (eff := _get(pi, 'replicas', 'efficiency_paired')) is not None else "")
                      + f"; planned {_fmt(_get(i, 'replicas'))} replicas"},
        {"need": "Reliability",
         "training": f"checkpoint {_fmt(_scaled(_get(pt, 'checkpoint_bytes'), 1e-6), 'MB')} written in "
                     f"{_fmt(_get(t, 'checkpoint_write_s'), 's')} to NVMe; exact resume after a kill (tested)",
         "inference": f"N+1 spare replica in the plan; LoadGen valid: {_fmt(_get(bi, 'valid'))}; vehicle-loop collisions "
                      f"{_fmt(collisions)}"},
    ]  # fmt: skip


def _scaled(value: Any, factor: float) -> Any:
    return None if value is None else value * factor


def _first_busbw(pt: dict | None) -> Any:
    rows = _get(pt, "allreduce", "rows")
    return rows[0]["busbw_gb_per_s"] if rows else None


def _kv(d: dict | None, keys: list[str] | None = None) -> list[tuple[str, str]]:
    if not d:
        return []
    keys = keys or [k for k, v in d.items() if not isinstance(v, dict | list)]
    return [(k, _fmt(d.get(k))) for k in keys if k in d]


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>crosswalk report</title>
<style>
 body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
 main{max-width:1280px;margin:0 auto;padding:24px 32px}
 h1{margin:0 0 4px 0} h2{border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:36px}
 .sub{color:#57606a;margin-bottom:16px}
 table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 16px 0;font-size:14px}
 th,td{border:1px solid #d0d7de;padding:6px 8px;text-align:left;vertical-align:top}
 th{background:#eef1f4}
 td.num{text-align:right;font-variant-numeric:tabular-nums}
 .grid{display:flex;flex-wrap:wrap;gap:16px}
 figure{margin:0;background:#fff;border:1px solid #d0d7de;padding:8px;max-width:100%}
 figure img{max-width:600px;width:100%;height:auto;display:block}
 figure.wide img{max-width:1200px}
 figcaption{font-size:12px;color:#57606a;margin-top:4px}
 .notrun{color:#9a6700;font-style:italic}
 .ok{color:#1a7f37;font-weight:600} .bad{color:#cf222e;font-weight:600}
 code,.formula{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
 nav a{margin-right:14px}
 .kv{width:auto;min-width:420px}
</style></head><body><main>
<h1>crosswalk: training and inference, measured and planned</h1>
<div class="sub">Written {{ when }} from <code>{{ from_dir }}</code>. Every figure below comes from a JSON file a
crosswalk command wrote; planned figures carry their formula in <code>plan.json</code>.</div>
<nav>{% for id, title in toc %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}</nav>

<section id="needs"><h2>The seed's six needs: training beside inference</h2>
<table><tr><th style="width:22%">Need</th><th>Training (measured here; planned)</th><th>Inference (measured here; planned)</th></tr>
{% for row in needs %}<tr><td>{{ row.need }}</td><td>{{ row.training }}</td><td>{{ row.inference }}</td></tr>{% endfor %}
</table></section>

<section id="data"><h2>Data and loader</h2>
{% if data_stats %}<table class="kv">{% for k, v in data_stats %}<tr><th>{{ k }}</th><td class="num">{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p class="notrun">data statistics: not run</p>{% endif %}
{% if bench_data %}<table class="kv">{% for k, v in bench_data %}<tr><th>{{ k }}</th><td class="num">{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p class="notrun">loader benchmark (bench_data.json): not run</p>{% endif %}
<div class="grid">{% for f in figures.data %}<figure class="wide"><img src="{{ f.uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div>
</section>

<section id="trainer"><h2>Trainer</h2>
{% if bench_train %}<table class="kv">{% for k, v in bench_train %}<tr><th>{{ k }}</th><td class="num">{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p class="notrun">training benchmark (bench_train.json): not run</p>{% endif %}
{% if profile_train %}<table class="kv">{% for k, v in profile_train %}<tr><th>{{ k }}</th><td class="num">{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p class="notrun">training profile (profile_train.json): not run</p>{% endif %}
{% if evals %}<table><tr><th>model</th><th>mAP50</th><th>mAP</th><th>pedestrian AP50</th><th>MR-2 reasonable</th></tr>
{% for e in evals %}<tr><td>{{ e.name }}</td><td class="num">{{ e.map50 }}</td><td class="num">{{ e.map }}</td><td class="num">{{ e.ped }}</td><td class="num">{{ e.mr }}</td></tr>{% endfor %}</table>
{% else %}<p class="notrun">evaluation: not run</p>{% endif %}
<div class="grid">{% for f in figures.trainer %}<figure><img src="{{ f.uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div>
</section>

<section id="server"><h2>Server</h2>
{% if bench_infer %}<table class="kv">{% for k, v in bench_infer %}<tr><th>{{ k }}</th><td class="num">{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p class="notrun">inference benchmark (bench_infer.json): not run</p>{% endif %}
{% if infer_rows %}<table><tr><th>threads</th><th>batch</th><th>p50 ms</th><th>p50 ms (paired)</th><th>p90 ms</th><th>images/s</th></tr>
{% for r in infer_rows %}<tr><td class="num">{{ r.threads }}</td><td class="num">{{ r.batch }}</td><td class="num">{{ r.p50_ms }}</td><td class="num">{{ r.p50_ms_paired if r.p50_ms_paired is defined else "" }}</td><td class="num">{{ r.p90_ms }}</td><td class="num">{{ r.images_per_s }}</td></tr>{% endfor %}</table>
{% else %}<p class="notrun">inference profile (profile_infer.json): not run</p>{% endif %}
<div class="grid">{% for f in figures.server %}<figure><img src="{{ f.uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div>
</section>

<section id="vehicle"><h2>Vehicle loop</h2>
{% if scenarios %}<table><tr><th>scenario</th><th>speed km/h</th><th>condition</th><th>collision</th><th>min gap m</th><th>first detection m</th><th>latency ms</th></tr>
{% for s in scenarios %}<tr><td>{{ s.name }}</td><td class="num">{{ s.speed_kmh }}</td><td>{{ s.condition }}</td><td class="{{ 'bad' if s.collision == 'yes' else 'ok' }}">{{ s.collision }}</td><td class="num">{{ s.min_gap_m }}</td><td class="num">{{ s.first_detection_m }}</td><td class="num">{{ s.latency_ms }}</td></tr>{% endfor %}</table>
{% if safe %}<table class="kv"><tr><th>speed</th><th>condition</th><th>max safe latency (ms)</th></tr>{% for r in safe %}<tr><td>{{ r[0] }}</td><td>{{ r[1] }}</td><td class="num">{{ r[2] }}</td></tr>{% endfor %}</table>{% endif %}
{% if distance_rows %}<table><tr><th>distance error, 10-40 m</th><th>per box: median %</th><th>within 10%</th><th>tracked: median %</th><th>within 10%</th></tr>
{% for r in distance_rows %}<tr><td>{{ r[0] }}</td>{% for v in r[1:] %}<td class="num">{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
{% else %}<p class="notrun">vehicle loop (drive.json): not run</p>{% endif %}
<div class="grid">{% for f in figures.vehicle %}<figure><img src="{{ f.uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div>
</section>

<section id="plan"><h2>The plan</h2>
{% if plan %}
<p>Inputs: {{ plan_inputs }}</p>
<h3>Training: {{ t.gpus }} x {{ t.gpu }} in {{ t.nodes }} x {{ t.server }},
 <span class="{{ 'ok' if t.feasible else 'bad' }}">{{ '%.2f' % t.hours_predicted }} h</span> against a {{ plan.inputs.deadline_h }} h deadline</h3>
<table><tr><th>figure</th><th>value</th><th>formula</th><th>inputs</th></tr>
{% for name, d in t_deriv %}<tr><td>{{ name }}</td><td class="num">{{ d.value }}</td><td class="formula">{{ d.formula }}</td><td class="formula">{{ d.inputs }}</td></tr>{% endfor %}</table>
<h3>Inference: {{ i.replicas }} x {{ i.device }}, predicted p99 {{ i.p99_ms_predicted }} ms (bound {{ i.p99_bound_ms }} ms), {{ i.power_w }} W</h3>
<table><tr><th>device</th><th>replicas</th><th>batch</th><th>service ms</th><th>p99 ms</th><th>power W</th><th>bound</th><th>meets p99</th></tr>
{% for k, c in i.candidates.items() %}<tr><td>{{ k }}</td><td class="num">{{ c.replicas }}</td><td class="num">{{ c.batch }}</td><td class="num">{{ c.service_ms }}</td><td class="num">{{ c.p99_ms }}</td><td class="num">{{ c.power_w if c.power_w is not none else 'n/a' }}</td><td>{{ c.get('bound') or 'measured' }}</td><td class="{{ 'ok' if c.feasible else 'bad' }}">{{ 'yes' if c.feasible else 'no' }}</td></tr>{% endfor %}</table>
<h3>The seed's servers, each evaluated for both workloads</h3>
<table><tr><th>server</th><th>GPU</th><th>training: GPUs / nodes / hours</th><th>interconnect-bound</th><th>inference: servers / replicas / p99 ms / W</th></tr>
{% for key, s in plan.seed_servers.items() %}{% for gpu, tr in s.training.items() %}{% set inf = s.inference[gpu] %}
<tr><td>{{ s.name }}</td><td>{{ gpu }}</td><td class="num">{{ tr.gpus }} / {{ tr.nodes }} / {{ '%.2f' % tr.hours_predicted }}</td><td>{{ 'yes' if tr.interconnect_bound else 'no' }}</td><td class="num">{{ inf.servers }} / {{ inf.replicas }} / {{ inf.p99_ms }} / {{ inf.power_w }}</td></tr>{% endfor %}{% endfor %}</table>
{% set cal = plan.gpu_calibration %}{% if cal %}<h3>Calibrated on a GPU: {{ cal.device }} ({{ cal.measured }})</h3>
<p>This model trains at {{ cal.measured_images_per_s }} images/s there ({{ cal.setting.preset }}, batch {{ cal.setting.batch }}, compute only, compile {{ 'on' if cal.setting.compile else 'off' }}; {{ cal.measured_with_loader_images_per_s }} with the real loader): MFU {{ cal.measured_mfu }} against the catalog's {{ cal.catalog_mfu }} (MLPerf ResNet-50), which predicted <span class="bad">{{ cal.catalog_predicted_images_per_s }} images/s ({{ cal.catalog_error_pct }}% off)</span>. Every GPU's catalog MFU above is scaled by {{ cal.scale }}.</p>{% endif %}
{% if plan.validation_gpu %}<h3>The planner's GPU figures against a lent GPU (reported, not fitted)</h3>
<table><tr><th>check</th><th>run and setting</th><th>predicted</th><th>measured</th><th>error %</th></tr>
{% for c in plan.validation_gpu %}<tr><td>{{ c.name }}</td><td>{{ c.calibrated_on }}</td><td class="num">{{ c.predicted }} {{ c.unit }}</td><td class="num">{{ c.measured }} {{ c.unit }}</td><td class="num {{ 'ok' if c.error_pct <= 10 else 'bad' }}">{{ c.error_pct }}</td></tr>{% endfor %}</table>{% endif %}
<h3>Validation on this machine: max error {{ plan.validation.max_error_pct }}%</h3>
<table><tr><th>check</th><th>calibrated on</th><th>predicted</th><th>measured</th><th>error %</th></tr>
{% for c in plan.validation.checks %}<tr><td>{{ c.name }}</td><td>{{ c.calibrated_on }}</td><td class="num">{{ c.predicted }} {{ c.unit }}</td><td class="num">{{ c.measured }} {{ c.unit }}</td><td class="num {{ 'ok' if c.error_pct <= 10 else 'bad' }}">{{ c.error_pct }}</td></tr>{% endfor %}</table>
{% else %}<p class="notrun">plan (plan.json): not run</p>{% endif %}
<div class="grid">{% for f in figures.plan %}<figure><img src="{{ f.uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div>
</section>
{% if figures.other %}<section id="other"><h2>Other figures</h2><div class="grid">{% for f in figures.other %}<figure><img src="{{ f.uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div></section>{% endif %}
</main></body></html>
"""


def _eval_row(name: str, e: dict | None) -> dict | None:
    if not e:
        return None
    return {
        "name": name,
        "map50": _fmt(e.get("map50")),
        "map": _fmt(e.get("map")),
        "ped": _fmt(_get(e, "per_class", "pedestrian", "ap50")),
        "mr": _fmt(_get(e, "pedestrian_mr", "reasonable")),
    }


def render_report(inputs: dict, from_dir: str | Path = "outputs") -> str:
    """The HTML page for ``load_inputs`` output."""
    plan = inputs["plan"]
    stats = inputs["data_stats"]
    drive = inputs["drive"]
    scenarios = [
        {k: _fmt(s.get(k)) for k in ("name", "speed_kmh", "condition", "collision", "min_gap_m", "first_detection_m", "latency_ms")}
        for s in (drive or {}).get("scenarios", [])
    ]  # fmt: skip
    safe = [
        (speed, cond, _fmt(v) if v is not None else "none: collides even at 0 ms")
        for speed, by in (_get(drive, "max_safe_latency_ms") or {}).items()
        for cond, v in (by.items() if isinstance(by, dict) else [("all", by)])
    ]
    by_box = _get(drive, "distance_error_by_condition") or {}
    tracked = _get(drive, "distance_error_tracked_by_condition") or {}
    distance_rows = [
        (cond, *(_fmt(e.get(k)) for e in (by_box.get(cond, {}), tracked.get(cond, {})) for k in ("median_abs_pct", "within_10pct")))
        for cond in by_box
    ]  # fmt: skip
    pt = inputs["profile_train"]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    ctx = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "from_dir": str(from_dir),
        "toc": [("needs", "Six needs"), ("data", "Data"), ("trainer", "Trainer"), ("server", "Server"),
                ("vehicle", "Vehicle loop"), ("plan", "Plan")],
        "needs": needs_table(inputs),
        "distance_rows": distance_rows,
        "data_stats": _kv(stats, ["frames", "objects_per_frame", "pedestrians_per_frame", "frames_without_pedestrians",
                                   "ignore", "truncated"]) + [(k, _fmt(stats.get(k))) for k in ("objects", "lighting", "weather") if stats and k in stats],
        "bench_data": _kv(inputs["bench_data"]),
        "bench_train": _kv(inputs["bench_train"]),
        "profile_train": _kv(pt) + ([(f"step {k}", _fmt(v)) for k, v in pt["step"].items() if k != "how"] if pt else []),
        "bench_infer": _kv(inputs["bench_infer"]),
        "infer_rows": (inputs["profile_infer"] or {}).get("rows", []),
        "evals": [r for r in (_eval_row("quick run (demo)", inputs["eval_quick"]),
                              _eval_row("reference model (models/reference-nano)", inputs["eval_reference"])) if r],
        "scenarios": scenarios,
        "safe": safe,
        "plan": plan,
        "plan_inputs": ", ".join(
            f"{k}={'the whole catalog' if k == 'hardware' and v is None else v}"
            for k, v in (plan or {}).get("inputs", {}).items()
        ),
        "t": (plan or {}).get("training"),
        "i": (plan or {}).get("inference"),
        "t_deriv": [
            (k, {"value": _fmt(d["value"]), "formula": d["formula"],
                 "inputs": ", ".join(f"{a}={b}" for a, b in d["inputs"].items() if not isinstance(b, dict))})
            for k, d in ((plan or {}).get("training", {}).get("derivation", {}) or {}).items()
        ],
        "figures": _plots(inputs),
    }  # fmt: skip
    return env.from_string(TEMPLATE).render(**ctx)


def write_report(from_dir: str | Path = "outputs", out_html: str | Path | None = None) -> Path:
    """Write the report for ``from_dir`` (default ``from_dir/report.html``); returns its path."""
    from_dir = Path(from_dir)
    out = Path(out_html) if out_html is not None else from_dir / "report.html"
    page = render_report(load_inputs(from_dir), from_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
