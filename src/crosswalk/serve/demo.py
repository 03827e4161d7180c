"""The serving step of the demo: a real server, one frame answered, its overhead, overload and a crash.

``run_serve_demo(out)`` starts ``crosswalk serve`` with two replicas, and measures in one run (so the
ratios are fair on a noisy machine): the runtime alone against the server on sequential requests
(``overhead_ms``), a 3x overload (accepted p99 against the latency target, how fast the 503s are), and a
replica killed with SIGKILL (how long until it is replaced). It writes ``serve.json`` and returns the dict.
``offer_load`` is the open-loop generator the reliability tests use too. The overload is 3x what two
replicas compute at idle; on two cores the generator and the HTTP handling take CPU from them, so the real
overload is heavier (the reliability test uses one replica to measure the policy rather than the machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import time
from pathlib import Path


async def _request(host: str, port: int, body: bytes) -> tuple[int, float, str | None]:
    """One POST /v1/detect on a fresh connection with asyncio streams (cheap: hundreds per second)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    response = await reader.read()
    writer.close()
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    retry = re.search(r"^retry-after: *(\S+)", head, re.M)
    return int(head.split()[1]), time.perf_counter() - start, retry.group(1) if retry else None


def offer_load(url: str, body: bytes, rate_per_s: float, seconds: float) -> list:
    """Open-loop arrivals at a fixed rate: (status, latency_s, retry_after) per request, or its exception."""

    async def offer() -> list:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        tasks, start = [], time.perf_counter()
        for i in range(int(rate_per_s * seconds)):
            delay = start + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_request(host, int(port), body)))
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(offer())


def percentile_ms(values_s: list[float], q: float) -> float | None:
    if not values_s:
        return None
    ordered = sorted(values_s)
    return round(1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def run_serve_demo(
    out: Path, target_ms: float = 300.0, requests: int = 40, model: str | Path | None = None
) -> dict:
    import httpx

    from crosswalk.infer import Predictor
    from crosswalk.scenes.render import render_frame
    from crosswalk.serve.launcher import running_server

    jpeg = render_frame(1, 3)[0]
    predictor = Predictor(model, threads=1)
    processes = []
    with running_server(
        model=model, replicas=2, threads=1, latency_target_ms=target_ms, process=processes
    ) as url:
        server = processes[0]
        with httpx.Client(timeout=30) as client:

            def post() -> httpx.Response:
                return client.post(url + "/v1/detect", content=jpeg, headers={"content-type": "image/jpeg"})

            detections = post().json()["detections"]
            runtime_s, server_s = [], []
            for _ in range(requests):  # interleaved, so both see the same machine
                start = time.perf_counter()
                predictor.predict([jpeg])
                runtime_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                post()
                server_s.append(time.perf_counter() - start)
            compute_per_image_s = statistics.median(runtime_s)
            results = offer_load(url, jpeg, rate_per_s=3 * 2 / compute_per_image_s, seconds=2.0)
            ok = [t for r in results if not isinstance(r, BaseException) and r[0] == 200 for t in [r[1]]]
            shed = [t for r in results if not isinstance(r, BaseException) and r[0] == 503 for t in [r[1]]]

            victim = int(re.findall(r"replica 0 started \(pid (\d+)\)", server.output())[-1])
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            replaced_s = None
            while time.monotonic() - killed < 30:
                pids = re.findall(r"replica 0 started \(pid (\d+)\)", server.output())
                if (
                    int(pids[-1]) != victim
                    and client.get(url + "/v2/health/ready").json()["replicas_ready"] == 2
                ):
                    replaced_s = round(time.monotonic() - killed, 2)
                    break
                time.sleep(0.05)
    runtime_p50 = statistics.median(runtime_s) * 1e3
    server_p50 = statistics.median(server_s) * 1e3
    summary = {
        "detections_in_frame": len(detections),
        "runtime_p50_ms": round(runtime_p50, 2),
        "server_p50_ms": round(server_p50, 2),
        "overhead_ms": round(server_p50 - runtime_p50, 2),
        "overload": {
            "latency_target_ms": target_ms,
            "offered": len(results),
            "accepted": len(ok),
            "shed_503": len(shed),
            "errors": sum(isinstance(r, BaseException) for r in results),
            "accepted_p50_ms": percentile_ms(ok, 0.5),
            "accepted_p99_ms": percentile_ms(ok, 0.99),
            "shed_p50_ms": percentile_ms(shed, 0.5),
        },
        "replica_replaced_s": replaced_s,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
