"""The batching policy as a pure function (hand-worked cases, no clock, no sleeps) and its asyncio shell."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from crosswalk.serve.batcher import (
    ComputeModel,
    DeadlineExceeded,
    DynamicBatcher,
    Shed,
    next_batch_decision,
)


@dataclass
class R:
    enqueued_s: float
    deadline_s: float | None = None


def compute_s(n: int) -> float:
    return 0.010 + 0.005 * (n - 1)  # 10 ms for one image, 5 ms for each more


def decide(queue, now_s, **kw):
    args = {"max_batch": 8, "max_delay_s": 0.002, "latency_target_s": 0.100, "compute_s": compute_s}
    return next_batch_decision(queue, now_s, **{**args, **kw})


def test_empty_queue_waits_for_an_arrival():
    d = decide([], 0.0)
    assert (d.expired, d.take, d.wait_s) == ((), 0, None)


def test_lone_request_waits_at_most_max_delay():
    # start_by = min(0 + 0.100 - compute(2) = 0.085, 0 + max_delay 0.002) = 0.002
    d = decide([R(0.0)], 0.0)
    assert d.take == 0 and d.wait_s == pytest.approx(0.002)
    assert decide([R(0.0)], 0.002).take == 1


def test_no_wait_when_no_arrival_is_expected_in_time():
    assert decide([R(0.0)], 0.0, next_arrival_s=0.050).take == 1  # a sequential client: nobody is coming
    assert decide([R(0.0)], 0.0, next_arrival_s=0.001).take == 0  # a request is due within the window


def test_full_batch_runs_at_once():
    d = decide([R(0.0)] * 4, 0.0, max_batch=4)
    assert (d.take, d.wait_s) == (4, None)


def test_batch_is_cut_to_meet_the_oldest_target():
    # Oldest queued at 0, now 0.060, target 0.100: 40 ms left; 0.010 + 0.005 (n - 1) <= 0.040 -> n <= 7.
    d = decide([R(0.0)] * 10, 0.060)
    assert d.take == 7


def test_late_oldest_still_runs_alone():
    assert decide([R(0.0)] * 5, 0.200).take == 1


def test_waits_only_while_a_bigger_batch_still_meets_the_target():
    # max_delay is generous (50 ms); the target is what stops the wait: 0.100 - compute(3) = 0.080.
    d = decide([R(0.0), R(0.01)], 0.02, max_delay_s=0.050)
    assert d.take == 0 and d.wait_s == pytest.approx(0.030)  # wait until 0.050 = 0 + max_delay
    d = decide([R(0.0), R(0.01)], 0.02, max_delay_s=0.5)
    assert d.take == 0 and d.wait_s == pytest.approx(0.080 - 0.02)
    assert decide([R(0.0), R(0.01)], 0.080, max_delay_s=0.5).take == 2


def test_expired_requests_are_dropped_before_compute():
    # A needs 10 ms of compute but its deadline is 5 ms away: expired. B has no deadline.
    d = decide([R(0.0, deadline_s=0.005), R(0.0)], 0.0, max_delay_s=0.0)
    assert d.expired == (0,) and d.take == 1


def test_a_member_deadline_limits_the_batch():
    # The third request must finish by 0.022: compute(3) = 0.020 fits from now 0; compute(4) = 0.025 does not.
    queue = [R(0.0), R(0.0), R(0.0, deadline_s=0.022), R(0.0), R(0.0)]
    assert decide(queue, 0.0).take == 3


def test_compute_model_learns_and_clips_stalls():
    model = ComputeModel(0.010)
    assert model(1) == pytest.approx(0.010) and model(3) == pytest.approx(0.030)
    for _ in range(100):
        model.observe(4, 0.016)  # 10 ms + 3 x 2 ms: batching amortises
    assert model.per_image_s == pytest.approx(0.002, rel=0.01)
    model.observe(1, 100.0)  # a 100 s stall is clipped at 4x: 10 ms + 0.5 x 30 ms
    assert model(1) == pytest.approx(0.025)
    model.observe(1, 0.010)  # and the estimate comes down slowly: 25 ms - 0.1 x 15 ms
    assert model(1) == pytest.approx(0.0235)
    assert model.drain_s(10, 4) == pytest.approx(2 * model(4) + model(2))


def test_admission_estimate_widens_with_noise():
    steady, noisy = ComputeModel(0.010), ComputeModel(0.010)
    for i in range(40):
        steady.observe(1, 0.010)
        noisy.observe(1, 0.005 if i % 2 else 0.015)  # the same mean, +-5 ms
    assert steady.deviation_s == pytest.approx(0.0, abs=1e-6)
    assert noisy.deviation_s > 0.003
    assert noisy.drain_s(4, 1, deviations=2) > noisy.drain_s(4, 1) + 4 * 2 * 0.003


# ---- the asyncio shell ------------------------------------------------------------------------------------


class Runtime:
    """A fake runtime: records batch sizes; ``gate`` holds it inside a batch until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, payloads: list) -> list:
        self.batches.append(list(payloads))
        self.entered.set()
        self.gate.wait(5)
        return [p * 10 for p in payloads]


def make_batcher(runtime, clock=None, **kw) -> DynamicBatcher:
    args = {"max_batch": 4, "max_delay_s": 0.0, "latency_target_s": 0.1, "queue_limit": 8}
    if clock is not None:
        args["clock"] = clock
    return DynamicBatcher(runtime, ComputeModel(kw.pop("single_s", 0.001)), **{**args, **kw})


async def wait_entered(runtime: Runtime) -> None:
    await asyncio.to_thread(runtime.entered.wait, 5)


def test_batcher_batches_what_queues_while_the_runtime_is_busy():
    async def main():
        runtime = Runtime()
        b = make_batcher(runtime)
        await b.start()
        runtime.gate.clear()
        b.admit(1, None)
        first = b.submit([1], None)
        await wait_entered(runtime)  # the runtime is busy with [1]; the next five queue up
        b.admit(5, None)
        rest = b.submit([2, 3, 4, 5, 6], None)
        runtime.gate.set()
        results = await asyncio.gather(*(i.future for i in first + rest))
        await b.stop()
        return runtime.batches, results, b.pending, b.images_computed

    batches, results, pending, computed = asyncio.run(main())
    assert results == [10, 20, 30, 40, 50, 60]
    assert batches == [[1], [2, 3, 4, 5], [6]]  # max_batch 4
    assert pending == 0 and computed == 6


def test_admission_sheds_at_once_when_full_or_over_target():
    async def main():
        b = make_batcher(Runtime(), single_s=0.04, latency_target_s=0.125, max_batch=1)
        b.admit(1, None)  # an idle server always admits
        b.admit(1, None)  # 2 x 40 ms = 80 ms <= 0.8 x 125 ms
        with pytest.raises(Shed) as over:
            b.admit(1, None)  # 120 ms of work: over 0.8 x the 125 ms target
        b.release(2)
        small = make_batcher(Runtime(), queue_limit=2)
        small.admit(2, None)
        with pytest.raises(Shed) as full:
            small.admit(1, None)
        return over.value, full.value

    over, full = asyncio.run(main())
    assert over.reason == "over_target" and over.retry_after_s == pytest.approx(0.02)
    assert full.reason == "queue_full"


def test_deadline_that_cannot_be_met_is_refused_at_admission():
    t = [100.0]
    runtime = Runtime()
    b = make_batcher(runtime, clock=lambda: t[0], single_s=0.010)
    with pytest.raises(DeadlineExceeded):
        b.admit(1, deadline_s=100.005)  # 5 ms left, 10 ms of compute
    assert b.pending == 0 and runtime.batches == []


def test_queued_request_whose_deadline_passes_is_answered_without_compute():
    t = [100.0]

    async def main():
        runtime = Runtime()
        b = make_batcher(runtime, clock=lambda: t[0], single_s=0.001)
        await b.start()
        runtime.gate.clear()
        b.admit(1, None)
        blocker = b.submit(["a"], None)
        await wait_entered(runtime)
        b.admit(1, deadline_s=100.5)
        late = b.submit(["b"], deadline_s=100.5)
        t[0] = 101.0  # time passes while the runtime is busy: "b" can no longer make it
        runtime.gate.set()
        await blocker[0].future
        with pytest.raises(DeadlineExceeded):
            await late[0].future
        await b.stop()
        return runtime.batches

    assert asyncio.run(main()) == [["a"]]


def test_cancelled_request_leaves_the_queue_and_is_never_computed():
    async def main():
        runtime = Runtime()
        b = make_batcher(runtime)
        await b.start()
        runtime.gate.clear()
        b.admit(1, None)
        blocker = b.submit(["a"], None)
        await wait_entered(runtime)
        b.admit(2, None)
        gone = b.submit(["b", "c"], None)
        assert b.cancel(gone) == 2 and b.depth == 0
        runtime.gate.set()
        await blocker[0].future
        await b.stop()
        return runtime.batches, b.pending, gone[0].future.cancelled()

    batches, pending, cancelled = asyncio.run(main())
    assert batches == [["a"]] and pending == 0 and cancelled


def test_a_failing_runtime_fails_its_batch_and_the_batcher_keeps_going():
    calls = []

    def flaky(payloads):
        calls.append(payloads)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return payloads

    async def main():
        b = make_batcher(flaky)
        await b.start()
        b.admit(1, None)
        bad = b.submit([1], None)
        with pytest.raises(RuntimeError, match="device lost"):
            await bad[0].future
        b.admit(1, None)
        good = b.submit([2], None)
        result = await good[0].future
        await b.stop()
        return result, b.pending

    assert asyncio.run(main()) == (2, 0)
