"""Dynamic batching tuned to a latency target, with admission control and deadlines.

Two layers, so the policy can be tested with a plain list and a number for "now" (no sleeps, no loop):

- ``next_batch_decision(queue, now_s, ...)``: the whole policy as one pure function. It drops what can no
  longer meet its deadline, sizes the batch so the oldest request still meets the latency target, and says
  how long it is worth waiting for company.
- ``DynamicBatcher``: the asyncio shell around it. Requests are admitted (or shed at once), queued with a
  future each, and run in batches on one worker thread, so the event loop never blocks on the runtime.

How this differs from the systems in ../shared/reference/serving.md:

- The batch window comes from the latency target, not from two guessed knobs. Triton waits
  ``max_queue_delay_microseconds`` (default 0) and Ray ``batch_wait_timeout_s`` (default 10 ms) whatever
  the load; here a batch grows only while its oldest request can still be answered within the target, and
  only while another arrival is actually expected in time (an estimate of the arrival interval), so a lone
  client never pays ``max_delay_ms`` (sec. 1a; sec. 5, item 4).
- Admission is on by default and counts time, not requests: a request is shed with 503 + Retry-After at
  once when the work already admitted would make it miss the target, and answered 504 when it carries a
  deadline it cannot make. No compute is spent on either. Ray and TorchServe cap queue length; Triton's
  queue is unbounded unless configured (sec. 4, item 2; sec. 5, item 1).
- A request whose client disconnects while queued is removed from the queue (LitServe, Ray and TorchServe
  keep computing it; Triton's fix is an open PR: sec. 4, item 3).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

# Admission fills the queue to this fraction of the latency target: the rest absorbs the estimate's error
# and the HTTP/decode path, so the tail (not the median) of accepted requests stays near the target. Under
# overload this only shortens the queue; the runtime stays busy, so throughput is unchanged.
ADMISSION_HEADROOM = 0.8
# ...and predicts pessimistically: mean compute plus two mean deviations per queued image, so on a noisy
# machine the queue is kept shorter rather than the tail let past the target.
ADMISSION_DEVIATIONS = 2.0


class Queued(Protocol):
    enqueued_s: float  # clock time the request joined the queue
    deadline_s: float | None  # clock time after which an answer is useless; None = no deadline


@dataclass(frozen=True)
class BatchDecision:
    expired: tuple[int, ...]  # queue indices that cannot meet their deadline: answer 504, do not compute
    take: int  # run the first ``take`` of the remaining (non-expired) requests now; 0 = not yet
    wait_s: float | None  # when take == 0: look again after this long (None: at the next arrival)


def next_batch_decision(
    queue: Sequence[Queued],
    now_s: float,
    *,
    max_batch: int,
    max_delay_s: float,
    latency_target_s: float,
    compute_s: Callable[[int], float],
    next_arrival_s: float | None = None,
) -> BatchDecision:
    """What to do with ``queue`` (oldest first) at time ``now_s``, when the runtime is free.

    ``compute_s(n)`` predicts the run time of a batch of n. ``next_arrival_s`` is when the next request is
    expected (None: unknown, so waiting is allowed). The oldest request must be answered by
    ``enqueued_s + latency_target_s``; the batch takes as many requests as still allow that (at least one),
    and it waits for more only while all of these hold: it is not full, the oldest has waited less than
    ``max_delay_s``, a batch one larger would still meet the target and every member's deadline, and a
    request is expected before that moment.
    """
    expired = tuple(
        i for i, r in enumerate(queue) if r.deadline_s is not None and now_s + compute_s(1) > r.deadline_s
    )
    live = [r for i, r in enumerate(queue) if i not in expired] if expired else list(queue)
    if not live:
        return BatchDecision(expired, 0, None)
    oldest = live[0]
    due_s = oldest.enqueued_s + latency_target_s
    limit = min(len(live), max_batch)
    finish_by = min(due_s, _deadline(live[0]))
    n = 1
    while n < limit:
        finish_by = min(finish_by, _deadline(live[n]))
        if now_s + compute_s(n + 1) > finish_by:
            break
        n += 1
    if n < len(live) or n == max_batch:
        return BatchDecision(expired, n, None)  # full, or more are waiting than fit: run now
    # Everything queued fits. Latest start for a batch of n + 1 that still finishes in time:
    start_by = min(due_s, *(_deadline(r) for r in live)) - compute_s(n + 1)
    start_by = min(start_by, oldest.enqueued_s + max_delay_s)
    if now_s >= start_by or (next_arrival_s is not None and next_arrival_s > start_by):
        return BatchDecision(expired, n, None)
    return BatchDecision(expired, 0, start_by - now_s)


def _deadline(r: Queued) -> float:
    return math.inf if r.deadline_s is None else r.deadline_s


class ComputeModel:
    """Predicted batch run time ``t(n) = single_s + (n - 1) * per_image_s``, tracked by moving averages.

    The averages rise fast and fall slowly (``alpha_up`` 0.5, ``alpha_down`` 0.1): under overload the
    cores are shared with the request handling itself, so compute slows down exactly when admission needs
    to know it, and an estimate that lags lets a burst in that then waits far past the target. Observations
    are clipped at 4x the prediction, so a single stall on a shared machine (env.md: steps spike to 1-2 s)
    moves the estimate by a bounded step.
    """

    def __init__(self, single_s: float, alpha_up: float = 0.5, alpha_down: float = 0.1) -> None:
        self.single_s = single_s
        self.per_image_s = single_s  # until batches are seen: linear, the CPU case (env.md sec. 4)
        self.alpha_up = alpha_up
        self.alpha_down = alpha_down
        self.deviation_s = 0.0  # mean absolute error per image, as TCP's RTTVAR (RFC 6298, beta = 1/4)

    def __call__(self, n: int) -> float:
        return self.single_s + (max(n, 1) - 1) * self.per_image_s

    def observe(self, n: int, seconds: float) -> None:
        seconds = min(seconds, 4 * self(n))
        n = max(n, 1)
        self.deviation_s += 0.25 * (abs(seconds - self(n)) / n - self.deviation_s)
        if n <= 1:
            self.single_s += self._alpha(seconds, self.single_s) * (seconds - self.single_s)
        else:
            marginal = max(0.0, (seconds - self.single_s) / (n - 1))
            self.per_image_s += self._alpha(marginal, self.per_image_s) * (marginal - self.per_image_s)

    def _alpha(self, observed: float, current: float) -> float:
        return self.alpha_up if observed > current else self.alpha_down

    def drain_s(self, images: int, max_batch: int, deviations: float = 0.0) -> float:
        """Time to run ``images`` queued images in full batches of ``max_batch``, plus ``deviations`` times
        the typical error per image (admission uses 2, as TCP's timeout adds 4 RTTVARs to the mean)."""
        full, rest = divmod(images, max_batch)
        mean_s = full * self(max_batch) + (self(rest) if rest else 0.0)
        return mean_s + deviations * images * self.deviation_s


class Shed(Exception):
    """Not admitted (queue full, or the target would be missed): HTTP 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: float, reason: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.reason = reason


class DeadlineExceeded(Exception):
    """The request's deadline cannot be met; answered before any compute is spent: HTTP 504."""


@dataclass(eq=False)
class WorkItem:
    payload: Any
    enqueued_s: float
    deadline_s: float | None
    future: asyncio.Future = field(repr=False)
    dispatched_s: float | None = None
    compute_s: float | None = None  # run time of the batch it went in


class BatcherMetrics(Protocol):
    """What the batcher reports (``crosswalk.serve.metrics.ServeMetrics`` implements it)."""

    def queued(self, depth: int) -> None: ...
    def dispatched(self, waits_s: list[float]) -> None: ...
    def computed(self, batch_size: int, seconds: float) -> None: ...
    def rejected(self, kind: str, reason: str, images: int) -> None: ...


class DynamicBatcher:
    """Admit, queue, batch and run requests on one runtime thread.

    ``run_batch(payloads) -> results`` runs in the worker thread, one call per batch, and must return one
    result per payload. Never on the event loop, even for a lone request, though the hand-off costs
    0.3-0.5 ms of thread wake-ups on a busy 2-core VM: tried and measured, a loop blocked in compute cannot
    admit, every arrival then finds an "idle" server, and the real queue grows unseen in the socket backlog
    (3x overload: no request shed promptly, accepted p99 1.4-2.2 s against 0.35 s with the thread). Usage from a handler: ``admit`` (cheap, may raise ``Shed``/``DeadlineExceeded``),
    prepare the inputs, ``submit`` them, await the items' futures; ``cancel`` them if the client leaves.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        compute: ComputeModel,
        *,
        max_batch: int,
        max_delay_s: float,
        latency_target_s: float,
        queue_limit: int,
        metrics: BatcherMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_batch = run_batch
        self.compute = compute
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.latency_target_s = latency_target_s
        self.queue_limit = queue_limit
        self.metrics = metrics
        self.clock = clock
        self.pending = 0  # images admitted and not yet answered (decoding, queued or computing)
        self.images_computed = 0
        self._queue: deque[WorkItem] = deque()
        self._wake = asyncio.Event()
        self._arrival_gap_s: float | None = None
        self._last_arrival_s: float | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._running_since: float | None = None  # clock time the batch on the runtime thread started
        self._running_size = 0

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="crosswalk-runtime")
        self._task = asyncio.create_task(self._loop(), name="crosswalk-batcher")

    async def stop(self) -> None:
        """Stop after the queue is empty (the server has stopped accepting by now)."""
        while self._queue or self.pending:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return len(self._queue)

    # ---- the request side -------------------------------------------------------------------------------

    def admit(self, images: int, deadline_s: float | None) -> None:
        """Reserve room for ``images`` or raise at once; call ``release`` if they are never submitted."""
        now = self.clock()
        if self.pending + images > self.queue_limit:
            self._reject("shed", "queue_full", images)
            wait_s = self.compute.drain_s(self.pending, self.max_batch)
            raise Shed(f"queue full ({self.pending} images waiting)", wait_s, "queue_full")
        predicted_s = self.compute.drain_s(self.pending + images, self.max_batch, ADMISSION_DEVIATIONS)
        predicted_s *= self._slowdown(now)
        if deadline_s is not None and now + predicted_s > deadline_s:
            self._reject("expired", "admission", images)
            raise DeadlineExceeded(
                f"the deadline is in {max(0.0, deadline_s - now) * 1e3:.1f} ms; "
                f"the work ahead and this request need about {predicted_s * 1e3:.1f} ms"
            )
        budget_s = ADMISSION_HEADROOM * self.latency_target_s
        if self.pending and predicted_s > budget_s:  # an idle server always admits
            self._reject("shed", "over_target", images)
            raise Shed(
                f"overloaded: about {predicted_s * 1e3:.0f} ms of work queued against a "
                f"{self.latency_target_s * 1e3:.0f} ms latency target",
                predicted_s - budget_s,
                "over_target",
            )
        self.pending += images

    def _slowdown(self, now: float) -> float:
        """How much longer than predicted the running batch already takes (>= 1): a live correction that
        reaches admission before the batch ends and the averages learn of it."""
        if self._running_since is None:
            return 1.0
        return max(1.0, (now - self._running_since) / self.compute(self._running_size))

    def release(self, images: int) -> None:
        self.pending -= images

    def submit(self, payloads: list[Any], deadline_s: float | None) -> list[WorkItem]:
        now = self.clock()
        if self._last_arrival_s is not None:
            gap = min(now - self._last_arrival_s, 1.0)
            self._arrival_gap_s = (
                gap if self._arrival_gap_s is None else 0.8 * self._arrival_gap_s + 0.2 * gap
            )
        self._last_arrival_s = now
        loop = asyncio.get_running_loop()
        items = [WorkItem(p, now, deadline_s, loop.create_future()) for p in payloads]
        self._queue.extend(items)
        self._queued()
        self._wake.set()
        return items

    def cancel(self, items: list[WorkItem]) -> int:
        """Remove still-queued items (their client left); returns how many were removed."""
        removed = 0
        for item in items:
            if item.dispatched_s is None and not item.future.done():
                try:
                    self._queue.remove(item)
                except ValueError:
                    continue
                item.future.cancel()
                removed += 1
        if removed:
            self.pending -= removed
            self._reject("cancelled", "disconnect", removed)
            self._queued()
            self._wake.set()
        return removed

    # ---- the batch loop ---------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self.clock()
            next_arrival = (
                self._last_arrival_s + self._arrival_gap_s if self._arrival_gap_s is not None else None
            )
            decision = next_batch_decision(
                self._queue,
                now,
                max_batch=self.max_batch,
                max_delay_s=self.max_delay_s,
                latency_target_s=self.latency_target_s,
                compute_s=self.compute,
                next_arrival_s=next_arrival,
            )
            if decision.expired:
                self._expire(decision.expired, now)
            if decision.take:
                await self._run([self._queue.popleft() for _ in range(decision.take)])
            elif self._queue:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), decision.wait_s)
                except TimeoutError:
                    pass

    def _expire(self, indices: tuple[int, ...], now: float) -> None:
        for i in sorted(indices, reverse=True):
            item = self._queue[i]
            del self._queue[i]
            item.future.set_exception(
                DeadlineExceeded(f"deadline cannot be met (queued {(now - item.enqueued_s) * 1e3:.0f} ms)")
            )
        self.pending -= len(indices)
        self._reject("expired", "queue", len(indices))
        self._queued()

    async def _run(self, batch: list[WorkItem]) -> None:
        start = self.clock()
        for item in batch:
            item.dispatched_s = start
        self._queued()
        if self.metrics is not None:
            self.metrics.dispatched([start - item.enqueued_s for item in batch])
        assert self._executor is not None, "start() the batcher first"
        self._running_since, self._running_size = start, len(batch)
        try:
            results, seconds = await asyncio.wrap_future(
                self._executor.submit(_timed, self.run_batch, [item.payload for item in batch])
            )
        except Exception as e:  # the runtime failed: these requests get a 500, the server keeps serving
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(e)
        else:
            self.compute.observe(len(batch), seconds)
            self.images_computed += len(batch)
            if self.metrics is not None:
                self.metrics.computed(len(batch), seconds)
            for item, result in zip(batch, results, strict=True):
                item.compute_s = seconds
                if not item.future.done():
                    item.future.set_result(result)
        finally:
            self.pending -= len(batch)
            self._running_since = None

    def _queued(self) -> None:
        if self.metrics is not None:
            self.metrics.queued(len(self._queue))

    def _reject(self, kind: str, reason: str, images: int) -> None:
        if self.metrics is not None:
            self.metrics.rejected(kind, reason, images)


def _timed(fn: Callable[[list[Any]], list[Any]], payloads: list[Any]) -> tuple[list[Any], float]:
    start = time.perf_counter()
    results = fn(payloads)
    return results, time.perf_counter() - start
