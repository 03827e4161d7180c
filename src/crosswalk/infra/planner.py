"""Size the infrastructure for both workloads from measured profiles and the hardware catalog.

Pure functions (no I/O): the formulas are tested on hand-worked cases, and every figure the plans return
carries its derivation (``{"value", "formula", "inputs"}``) under ``derivation``.

Training (the approach infra.md sec. 4.6 recommends for a CNN, since Calculon/ASTRA-sim model transformers):
per-GPU images/s from the measured FLOPs at a model FLOPs utilisation, capped by a memory roofline; a step
time of compute plus the ring all-reduce of the gradients (nccl-tests: t = 2(n-1)/n * S/B); the smallest
GPU count that meets the deadline; storage, read bandwidth and decode cores to keep those GPUs fed.

Inference: the latency-vs-batch line measured on this machine (a + c*b), moved to a device by a roofline
(compute- or memory-bound per image, plus per-kernel launch cost); replicas from an M/M/c queue (Erlang C)
whose p99 wait is scaled to deterministic-ish service by the Allen-Cunneen factor (1 + cs^2)/2.
"""

from __future__ import annotations

import math
from typing import Any

P99 = 0.99


def derived(value: Any, formula: str, **inputs: Any) -> dict[str, Any]:
    """A figure with its derivation, the shape every planned figure is reported in."""
    return {"value": value, "formula": formula, "inputs": inputs}


# ---- formulas ---------------------------------------------------------------------------------------------


def allreduce_time_s(bytes_: float, n: int, bus_bw_bytes_per_s: float, latency_s: float = 0.0) -> float:
    """Ring all-reduce time: ``latency + 2(n-1)/n * S / B`` (nccl-tests doc/PERFORMANCE.md, where B is the
    bus bandwidth); zero for one rank."""
    if n <= 1:
        return 0.0
    return latency_s + 2 * (n - 1) / n * bytes_ / bus_bw_bytes_per_s


def fit_alpha_beta(sizes_bytes: list[float], times_s: list[float]) -> tuple[float, float]:
    """Least-squares ``t = alpha + S / B`` over measured (size, time) pairs -> (alpha_s, B bytes/s of S)."""
    line = fit_line(sizes_bytes, times_s)
    return line[0], 1.0 / line[1]


def fit_line(xs: list[float], ys: list[float], relative: bool = False) -> tuple[float, float]:
    """Least-squares (intercept, slope); with two points, the line through them. ``relative``: minimise the
    squared relative residuals (weights 1/y^2), so that a batch-1 latency counts as much as a batch-32 one
    instead of the largest batch setting the line alone."""
    if len(xs) < 2 or len(set(xs)) < 2:
        raise ValueError(f"a line needs two distinct x values, got {xs}")
    ws = [1 / y**2 for y in ys] if relative else [1.0] * len(xs)
    total = sum(ws)
    mx = sum(w * x for w, x in zip(ws, xs, strict=True)) / total
    my = sum(w * y for w, y in zip(ws, ys, strict=True)) / total
    slope = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys, strict=True)) / sum(
        w * (x - mx) ** 2 for w, x in zip(ws, xs, strict=True)
    )
    return my - slope * mx, slope


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability an arrival waits in M/M/c with ``offered_load`` a = lambda/mu (Erlang C; Kleinrock,
    Queueing Systems vol. 1, sec. 3.5). 1.0 when the queue is unstable (a >= c)."""
    c, a = servers, offered_load
    if a <= 0:
        return 0.0
    if a >= c:
        return 1.0
    term, total = 1.0, 1.0  # a^k/k! summed for k < c, built iteratively (no factorial overflow)
    for k in range(1, c):
        term *= a / k
        total += term
    top = term * a / c * c / (c - a)  # a^c/c! * c/(c-a)
    return top / (total + top)


def mmc_wait_quantile_s(q: float, arrival_per_s: float, service_per_s: float, servers: int) -> float:
    """The q-quantile of the M/M/c waiting time: P(W > t) = C(c, a) exp(-(c mu - lambda) t)."""
    if arrival_per_s >= servers * service_per_s:
        return math.inf
    c_wait = erlang_c(servers, arrival_per_s / service_per_s)
    if c_wait <= 1 - q:
        return 0.0
    return math.log(c_wait / (1 - q)) / (servers * service_per_s - arrival_per_s)


def p99_latency_s(
    arrival_per_s: float,
    batch: int,
    service_s: float,
    replicas: int,
    service_cv2: float,
    overhead_s: float = 0.0,
) -> float:
    """p99 of one frame: server overhead + the wait for its batch to fill + queueing + the batch's service.

    Batches of ``batch`` frames arrive at lambda/batch per second; each of ``replicas`` serves one in
    ``service_s``. The M/M/c p99 wait is scaled by Allen-Cunneen's (1 + cs^2)/2 (M/G/c from M/M/c; arrivals
    taken as Poisson), ``service_cv2`` being the measured squared coefficient of variation of service time.
    """
    batches_per_s = arrival_per_s / batch
    wait = mmc_wait_quantile_s(P99, batches_per_s, 1.0 / service_s, replicas)
    fill = (batch - 1) / arrival_per_s
    return overhead_s + fill + wait * (1 + service_cv2) / 2 + service_s


# ---- training ---------------------------------------------------------------------------------------------


def ring_busbw(n: int, gpu: dict, server: dict, network: dict) -> dict:
    """Bus bandwidth (bytes/s) and fixed latency (s) of a ring all-reduce over ``n`` GPUs (infra.md s3.3)."""
    per_node = server["gpus"]
    if n <= per_node:
        return derived(gpu["ring_busbw_gb_per_s"] * 1e9, "intra-node ring busbw of the GPU (catalog)",
                       ring_busbw_gb_per_s=gpu["ring_busbw_gb_per_s"]) | {"latency_s": 0.0}  # fmt: skip
    inter = server["compute_nics"] * network["achievable_gb_per_s"]
    value = min(gpu["ring_busbw_gb_per_s"], inter) * 1e9
    return derived(
        value,
        "min(intra-node busbw, NICs per node x achievable per NIC) (infra.md s3.3 planning rule)",
        ring_busbw_gb_per_s=gpu["ring_busbw_gb_per_s"],
        compute_nics=server["compute_nics"],
        nic_achievable_gb_per_s=network["achievable_gb_per_s"],
    ) | {"latency_s": network["allreduce_latency_us"] * 1e-6}


def per_gpu_training_rate(profile: dict, gpu: dict, mfu: float, assumptions: dict) -> dict:
    """Images/s one GPU trains at: min(compute roof at ``mfu``, memory roof of the activation traffic)."""
    flops = profile["gflops_forward_backward_per_image"] * 1e9
    act = profile["activation_bytes_per_image"] * (
        0.5 if profile.get("activation_dtype") == "float32" else 1.0
    )
    traffic = act * assumptions["train_bytes_per_activation_byte"]
    compute = gpu["bf16_dense_tflops"] * 1e12 * mfu / flops
    memory = gpu["memory_bw_gb_per_s"] * 1e9 * assumptions["gpu_memory_efficiency"] / traffic
    bound = "compute" if compute <= memory else "memory"
    return derived(
        min(compute, memory),
        "min(peak x MFU / FLOPs per image, memory BW x efficiency / (3 x bf16 activation bytes per image))",
        peak_bf16_tflops=gpu["bf16_dense_tflops"],
        mfu=mfu,
        gflops_forward_backward_per_image=profile["gflops_forward_backward_per_image"],
        memory_bw_gb_per_s=gpu["memory_bw_gb_per_s"],
        memory_efficiency=assumptions["gpu_memory_efficiency"],
        bf16_activation_bytes_per_image=round(act),
        compute_bound_images_per_s=round(compute, 1),
        memory_bound_images_per_s=round(memory, 1),
    ) | {"bound": bound, "arithmetic_intensity_flop_per_byte": round(flops / traffic, 2)}


def training_plan(
    profile: dict,
    catalog: dict,
    train_images: int,
    epochs: float,
    deadline_h: float,
    gpu_key: str = "h200_sxm",
    server_key: str = "kr6288v2",
    per_gpu_batch: int = 64,
    mfu: dict | None = None,
    checkpoints_kept: int = 3,
    max_gpus: int = 65536,
) -> dict:
    """GPUs, nodes, storage, read bandwidth, decode cores and all-reduce cost for ``epochs`` over
    ``train_images`` within ``deadline_h`` on ``gpu_key`` GPUs in ``server_key`` nodes. ``mfu``: a derivation
    (``{"value", "formula", "inputs"}``) from a measurement; the catalog's sourced assumption without one."""
    gpu, server = catalog["gpu"][gpu_key], catalog["server"][server_key]
    server = {**server, "compute_nics": server.get("compute_nics", 0)}
    network = catalog["network"][server.get("network", "ndr_ib")]
    drive = catalog["storage"][server.get("drive", "nvme_gen5")]
    assumptions = catalog["assumptions"]
    if mfu is None:
        mfu = derived(gpu["cnn_train_mfu"], "catalog assumption: " + gpu["sources"]["cnn_train_mfu"])
    rate = per_gpu_training_rate(profile, gpu, mfu["value"], assumptions)
    total_images = train_images * epochs
    required = total_images / (deadline_h * 3600)
    grad = profile["gradient_bytes_per_step"]
    compute_s = per_gpu_batch / rate["value"]

    def throughput(n: int) -> tuple[float, float, dict]:
        bw = ring_busbw(n, gpu, server, network)
        ar = allreduce_time_s(grad, n, bw["value"], bw["latency_s"])
        return n * per_gpu_batch / (compute_s + ar), ar, bw

    hi = 1  # double until the rate is met, then bisect for the smallest count that meets it
    while throughput(hi)[0] < required and hi < max_gpus:
        hi *= 2
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if throughput(mid)[0] >= required else (mid, hi)
    n = hi
    achieved, ar_s, bw = throughput(n)
    feasible = achieved >= required
    nodes = math.ceil(n / server["gpus"])
    bytes_per_sample = profile["bytes_per_sample"]
    dataset_tb = train_images * bytes_per_sample / 1e12
    storage_tb = dataset_tb + checkpoints_kept * profile["checkpoint_bytes"] / 1e12
    read = achieved * bytes_per_sample / 1e9
    read_node = read / nodes
    drives_bw = math.ceil(read_node / drive["read_gb_per_s"])
    drives_cap = math.ceil(storage_tb / drive["capacity_tb"])
    drives = max(1, drives_bw, drives_cap)
    decode_cores = achieved / nodes * profile["decode_cpu_s_per_sample"]
    cores_free = server["cpu_cores"] - server["gpus"]  # one core per training process
    hours = total_images / achieved / 3600
    ckpt_s = profile["checkpoint_bytes"] / (drive["write_gb_per_s"] * 1e9)
    this_rate = profile["step"]["images_per_s"]
    plan = {
        "gpu": gpu_key,
        "server": server_key,
        "feasible": feasible,
        "gpus": n,
        "nodes": nodes,
        "images_per_s": round(achieved, 1),
        "required_images_per_s": round(required, 1),
        "hours_predicted": round(hours, 3),
        "per_gpu_images_per_s": round(rate["value"], 1),
        "per_gpu_bound": rate["bound"],
        "mfu": mfu["value"],
        "mfu_this_machine": profile.get("mfu_this_machine"),
        "total_pflop": round(total_images * profile["gflops_forward_backward_per_image"] / 1e6, 2),
        "storage_tb": round(storage_tb, 6),
        "read_gb_per_s": round(read, 3),
        "drives_per_node": drives,
        "drives_fit": drives <= server.get("nvme_bays", 0),
        "dataset_fits_in_node_ram": dataset_tb * 1e3 < server.get("memory_gb", 0) * 0.5,
        "decode_cores_per_node": round(decode_cores, 1),
        "cpu_decode_fits": decode_cores <= cores_free,
        "gpu_decode_engines_per_node": gpu["nvjpg_engines"] * server["gpus"],
        "allreduce_ms_per_step": round(1e3 * ar_s, 4),
        "compute_ms_per_step": round(1e3 * compute_s, 3),
        "allreduce_fraction": round(ar_s / (ar_s + compute_s), 4),
        "interconnect_bound": ar_s > compute_s,
        "checkpoint_write_s": round(ckpt_s, 4),
        "this_machine_hours": round(total_images / this_rate / 3600, 1),
    }
    plan["derivation"] = {
        "total_pflop": derived(plan["total_pflop"], "images x epochs x GFLOPs(fwd+bwd) per image / 1e6",
                               images=train_images, epochs=epochs,
                               gflops_forward_backward_per_image=profile["gflops_forward_backward_per_image"]),
        "required_images_per_s": derived(plan["required_images_per_s"], "images x epochs / (deadline_h x 3600)",
                                         images=train_images, epochs=epochs, deadline_h=deadline_h),
        "mfu": mfu,
        "per_gpu_images_per_s": rate,
        "allreduce_ms_per_step": derived(plan["allreduce_ms_per_step"], "latency + 2(n-1)/n x gradient bytes / busbw",
                                         n=n, gradient_bytes=grad, busbw_gb_per_s=round(bw["value"] / 1e9, 1),
                                         latency_us=1e6 * bw["latency_s"], busbw=bw),
        "compute_ms_per_step": derived(plan["compute_ms_per_step"], "per-GPU batch / per-GPU images/s",
                                       per_gpu_batch=per_gpu_batch, per_gpu_images_per_s=round(rate["value"], 1)),
        "gpus": derived(n, "smallest n with n x batch / (compute + all-reduce) >= required images/s "
                        "(no compute/communication overlap: conservative)",
                        required_images_per_s=round(required, 1), achieved_images_per_s=round(achieved, 1)),
        "nodes": derived(nodes, "ceil(gpus / GPUs per node)", gpus=n, gpus_per_node=server["gpus"]),
        "storage_tb": derived(plan["storage_tb"], "images x bytes per sample (manifest) + kept checkpoints x checkpoint bytes",
                              images=train_images, bytes_per_sample=bytes_per_sample, checkpoints_kept=checkpoints_kept,
                              checkpoint_bytes=profile["checkpoint_bytes"]),
        "read_gb_per_s": derived(plan["read_gb_per_s"], "cluster images/s x bytes per sample",
                                 images_per_s=round(achieved, 1), bytes_per_sample=bytes_per_sample),
        "drives_per_node": derived(drives, "max(ceil(read per node / drive read), ceil(storage / drive capacity))",
                                   read_per_node_gb_per_s=round(read_node, 3), drive_read_gb_per_s=drive["read_gb_per_s"],
                                   drive_capacity_tb=drive["capacity_tb"], nvme_bays=server.get("nvme_bays")),
        "decode_cores_per_node": derived(plan["decode_cores_per_node"],
                                         "node images/s x decode CPU-seconds per sample (measured on this machine's core)",
                                         node_images_per_s=round(achieved / nodes, 1),
                                         decode_cpu_s_per_sample=profile["decode_cpu_s_per_sample"],
                                         cores_free=cores_free),
        "checkpoint_write_s": derived(plan["checkpoint_write_s"], "checkpoint bytes / drive sequential write",
                                      checkpoint_bytes=profile["checkpoint_bytes"],
                                      drive_write_gb_per_s=drive["write_gb_per_s"]),
        "this_machine_hours": derived(plan["this_machine_hours"], "images x epochs / measured images/s (real loader) / 3600",
                                      images_per_s=this_rate),
    }  # fmt: skip
    return plan


# ---- inference --------------------------------------------------------------------------------------------


def device_latency_line(profile: dict, device: dict, assumptions: dict) -> dict:
    """(a_ms, c_ms) of latency(b) = a + c*b on a GPU: a = kernels x launch cost + weights read once per batch;
    c = max(FLOPs / (peak x fraction), bytes / (BW x efficiency)) + input bytes over PCIe."""
    flops = profile["gflops_forward_per_image"] * 1e9
    traffic = profile["forward_bytes_per_image"] / 2  # measured in fp32; the GPU serves fp16/bf16
    compute_s = flops / (device["bf16_dense_tflops"] * 1e12 * assumptions["gpu_inference_fraction_of_peak"])
    memory_s = traffic / (device["memory_bw_gb_per_s"] * 1e9 * assumptions["gpu_memory_efficiency"])
    pcie_s = profile["input_bytes_per_image"] / (device["pcie_gb_per_s_per_direction"] * 1e9)
    a_s = profile["kernels_per_forward"] * assumptions["gpu_kernel_launch_us"] * 1e-6 + (
        profile["weight_bytes"] / 2 / (device["memory_bw_gb_per_s"] * 1e9)
    )
    c_s = max(compute_s, memory_s) + pcie_s
    return derived(
        (1e3 * a_s, 1e3 * c_s),
        "a = kernels x launch + fp16 weights / BW; c = max(FLOPs/(peak x fraction), fp16 bytes/(BW x eff)) + input/PCIe",
        kernels=profile["kernels_per_forward"],
        launch_us=assumptions["gpu_kernel_launch_us"],
        gflops_forward_per_image=profile["gflops_forward_per_image"],
        fp16_forward_bytes_per_image=round(traffic),
        peak_bf16_tflops=device["bf16_dense_tflops"],
        fraction_of_peak=assumptions["gpu_inference_fraction_of_peak"],
        memory_bw_gb_per_s=device["memory_bw_gb_per_s"],
        memory_efficiency=assumptions["gpu_memory_efficiency"],
        compute_us_per_image=round(1e6 * compute_s, 3),
        memory_us_per_image=round(1e6 * memory_s, 3),
        pcie_us_per_image=round(1e6 * pcie_s, 3),
    ) | {"bound": "compute" if compute_s >= memory_s else "memory"}


def latency_ms(row: dict) -> float:
    """A profile row's p50 latency: the one paired with batch-1 calls (one host speed level for every batch
    size, see profile_infer) when the profile has it, else the plain median."""
    return row.get("p50_ms_paired", row["p50_ms"])


def measured_latency_line(profile: dict, threads: int) -> dict:
    """(a_ms, c_ms) fitted by least squares on this machine's p50 latency at the calibration batch sizes."""
    rows = [
        r for r in profile["rows"] if r["threads"] == threads and r["batch"] in profile["calibration_batches"]
    ]
    a, c = fit_line([r["batch"] for r in rows], [latency_ms(r) for r in rows], relative=True)
    return derived((a, c), "least squares of relative residuals, p50 latency (paired with batch 1) on batch (measured, ORT on this machine)",
                   threads=threads, batches=[r["batch"] for r in rows]) | {"bound": "measured"}  # fmt: skip


def size_replicas(
    line_ms: tuple[float, float],
    serve_fps: float,
    p99_ms: float,
    batches: list[int],
    service_cv2: float,
    overhead_ms: float,
    utilisation: float = 0.7,
    max_replicas: int = 100000,
) -> dict:
    """Fewest replicas (then lowest p99) over batch sizes such that utilisation <= ``utilisation`` and the
    predicted p99 <= ``p99_ms``. Returns the best choice, or the lowest-p99 one marked infeasible."""
    a, c = line_ms
    best, fallback = None, None
    for b in batches:
        service_s = max(a + c * b, 1e-6) / 1e3
        per_replica = b / service_s
        n = max(1, math.ceil(serve_fps / (utilisation * per_replica)))
        while n <= max_replicas:
            p99 = p99_latency_s(serve_fps, b, service_s, n, service_cv2, overhead_ms / 1e3)
            if 1e3 * p99 <= p99_ms or p99 == math.inf:
                break
            if (
                n > 4 * serve_fps / per_replica + 8
            ):  # more replicas no longer help: fill or service time dominates
                break
            n += 1
        p99 = p99_latency_s(serve_fps, b, service_s, n, service_cv2, overhead_ms / 1e3)
        row = {
            "batch": b,
            "replicas": n,
            "service_ms": round(1e3 * service_s, 4),
            "per_replica_images_per_s": round(per_replica, 1),
            "utilisation": round(serve_fps / (n * per_replica), 3),
            "p99_ms": round(1e3 * p99, 3),
        }
        if 1e3 * p99 <= p99_ms and (best is None or (n, row["p99_ms"]) < (best["replicas"], best["p99_ms"])):
            best = row
        if fallback is None or row["p99_ms"] < fallback["p99_ms"]:
            fallback = row
    return {**best, "feasible": True} if best else {**fallback, "feasible": False}


def inference_plan(
    profile: dict,
    catalog: dict,
    serve_fps: float,
    p99_ms: float,
    gpus: list[str] | None = None,
    utilisation: float = 0.7,
    spare: int = 1,
) -> dict:
    """Replicas, predicted p99 and power for ``serve_fps`` frames/s under ``p99_ms`` on each device; the
    chosen device is the feasible one of least power. ``spare`` replicas (N+1) are added for reliability."""
    assumptions = catalog["assumptions"]
    overhead = profile.get("server_overhead_ms") or 0.0
    cv2 = profile.get("service_cv2", 0.0)
    batches = sorted({r["batch"] for r in profile["rows"]})
    candidates = {}
    threads = profile["best_threads"]
    cpu_line = measured_latency_line(profile, threads)
    machine = profile["machine"]
    cpu_servers = [("this_machine", machine["cores"], None, "this machine (measured)")]
    cpu_servers += [
        (k, v["cores"], v["tdp_w"] + v.get("host_power_w", 0), v["name"])
        for k, v in catalog.get("cpu", {}).items()
    ]
    for key, cores, tdp, name in cpu_servers:
        sized = size_replicas(cpu_line["value"], serve_fps, p99_ms, batches, cv2, overhead, utilisation)
        per_box = max(1, cores // threads)
        replicas = sized["replicas"] + spare
        boxes = math.ceil(replicas / per_box)
        candidates[key] = {
            "name": name,
            "kind": "cpu",
            **sized,
            "replicas": replicas,
            "replicas_for_load": sized["replicas"],
            "servers": boxes,
            "power_w": None if tdp is None else boxes * tdp,
            "latency_line_ms": [round(v, 4) for v in cpu_line["value"]],
            "derivation": {
                "latency_line": cpu_line,
                "replicas": derived(replicas, "M/M/c sizing with Allen-Cunneen p99 (planner.size_replicas) + spare",
                                    threads_per_replica=threads, replicas_per_server=per_box, spare=spare,
                                    note="per-core speed taken equal to this machine's measured core (fp32 ORT, no AMX)"),
                "power_w": derived(None if tdp is None else boxes * tdp, "servers x (CPU TDP + host power)",
                                   servers=boxes, server_w=tdp),
            },
        }  # fmt: skip
    for key, gpu in catalog["gpu"].items():
        if gpus is not None and key not in gpus:
            continue
        line = device_latency_line(profile, gpu, assumptions)
        sized = size_replicas(line["value"], serve_fps, p99_ms, batches, cv2, overhead, utilisation)
        replicas = sized["replicas"] + spare
        server_key = "kr6288v2" if gpu["form"] == "sxm" else "kr4268v2"
        server = catalog["server"][server_key]
        servers = math.ceil(replicas / server["gpus"])
        power = replicas * gpu["tdp_w"] + servers * server["host_power_w"]
        candidates[key] = {
            "name": gpu["name"],
            "kind": "gpu",
            **sized,
            "replicas": replicas,
            "replicas_for_load": sized["replicas"],
            "server": server_key,
            "servers": servers,
            "power_w": power,
            "bound": line["bound"],
            "latency_line_ms": [round(v, 5) for v in line["value"]],
            "derivation": {
                "latency_line": line,
                "replicas": derived(replicas, "M/M/c sizing with Allen-Cunneen p99 (planner.size_replicas) + spare",
                                    spare=spare, server_overhead_ms=overhead, service_cv2=cv2, utilisation_cap=utilisation),
                "power_w": derived(power, "replicas x GPU TDP + servers x host power", replicas=replicas,
                                   gpu_tdp_w=gpu["tdp_w"], servers=servers, host_power_w=server["host_power_w"]),
            },
        }  # fmt: skip
    feasible = {k: v for k, v in candidates.items() if v["feasible"] and v["power_w"] is not None}
    chosen = min(feasible, key=lambda k: feasible[k]["power_w"]) if feasible else None
    pick = candidates[chosen] if chosen else None
    return {
        "serve_fps": serve_fps,
        "p99_bound_ms": p99_ms,
        "device": chosen,
        "replicas": pick["replicas"] if pick else None,
        "p99_ms_predicted": pick["p99_ms"] if pick else None,
        "power_w": pick["power_w"] if pick else None,
        "server_overhead_ms": overhead,
        "candidates": candidates,
        "derivation": {
            "device": derived(
                chosen, "the feasible device (p99 <= bound) of least power", p99_bound_ms=p99_ms
            ),
            "server_overhead_ms": derived(
                overhead,
                "bench_infer.json overhead_paired_ms (per request: client time - the server's decode and "
                "compute), else overhead_ms (server p50 - runtime p50); 0 if not run",
                source=profile.get("server_overhead_source"),
            ),
        },
    }


def seed_servers(
    profile_train: dict,
    profile_infer: dict,
    catalog: dict,
    args: dict,
    mfus: dict | None = None,
    per_gpu_batch: int = 64,
) -> dict:
    """Both seed servers evaluated for both workloads: how many, and whether the workload fits. ``mfus``: MFU
    derivations by GPU key, from measurements (``training_plan``'s ``mfu``)."""
    out = {}
    for key, server in catalog["server"].items():
        row = {"name": server["name"], "role": server["role"], "training": {}, "inference": {}}
        for gpu in server["gpu_options"]:
            t = training_plan(profile_train, catalog, args["train_images"], args["epochs"], args["deadline_h"],
                              gpu_key=gpu, server_key=key, per_gpu_batch=per_gpu_batch,
                              mfu=(mfus or {}).get(gpu))  # fmt: skip
            row["training"][gpu] = {
                "nodes": t["nodes"],
                "gpus": t["gpus"],
                "hours_predicted": t["hours_predicted"],
                "interconnect_bound": t["interconnect_bound"],
                "fits": t["feasible"] and (t["drives_fit"] or server.get("nvme_bays") is None),
            }
            inf = inference_plan(profile_infer, catalog, args["serve_fps"], args["p99_ms"], gpus=[gpu])
            cand = inf["candidates"][gpu]
            pcie_gb_per_s = args["serve_fps"] * profile_infer["input_bytes_per_image"] / 1e9
            row["inference"][gpu] = {
                "servers": math.ceil(cand["replicas"] / server["gpus"]),
                "replicas": cand["replicas"],
                "p99_ms": cand["p99_ms"],
                "power_w": cand["replicas"] * catalog["gpu"][gpu]["tdp_w"]
                + math.ceil(cand["replicas"] / server["gpus"]) * server["host_power_w"],
                "fits": cand["feasible"],
                "host_to_gpu_gb_per_s": round(pcie_gb_per_s, 4),
            }
        if "local_storage_tb" in server:
            day_tb = args["serve_fps"] * 86400 * profile_infer["jpeg_bytes_per_image"] / 1e12
            row["frame_retention_days"] = round(server["local_storage_tb"] / day_tb, 1) if day_tb else None
        out[key] = row
    return out
