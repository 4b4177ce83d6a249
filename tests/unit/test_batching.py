"""The request batcher: flush rules, length grouping, split-back, failures, admission, expiry."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.batching import Batched, Batcher, BatchingConfig, BatchStats
from gateway.errors import BackendError, BackendUnavailable, DeadlineExceeded, Overloaded

LONG_WAIT_MS = 60_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeRun:
    """A backend call that records its batches; batches can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.active = 0
        self.max_active = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.failures: dict[str, Exception] = {}
        self.short_by: dict[str, int] = {}

    def hold(self, item: str) -> asyncio.Event:
        gate = self.gates[item] = asyncio.Event()
        return gate

    def seen(self) -> list[str]:
        return [item for batch in self.batches for item in batch]

    async def __call__(self, items: Sequence[str]) -> Sequence[str]:
        self.batches.append(list(items))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for item in items:
                if item in self.gates:
                    await self.gates[item].wait()
            for item in items:
                if item in self.failures:
                    raise self.failures[item]
            missing = max((self.short_by.get(item, 0) for item in items), default=0)
            return [f"out:{item}" for item in items][: len(items) - missing]
        finally:
            self.active -= 1


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(1.0):
        while not condition():
            await asyncio.sleep(0)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def make(
    run: FakeRun,
    *,
    clock: FakeClock | None = None,
    on_batch: Callable[[BatchStats], None] | None = None,
    max_length: int = 512,
    **config: object,
) -> Batcher[str, str]:
    settings: dict[str, object] = {
        "max_wait_ms": LONG_WAIT_MS,
        "max_batch_tokens": 100_000,
        "max_batch_size": 32,
        "max_in_flight_batches": 2,
        "min_fill": 0.0,
    }
    settings.update(config)
    return Batcher(
        "enc",
        run,
        BatchingConfig.model_validate(settings),
        max_length=max_length,
        on_batch=on_batch,
        clock=clock or FakeClock(),
    )


def spawn(submission: Coroutine[Any, Any, Batched[str]]) -> asyncio.Task[Batched[str]]:
    return asyncio.create_task(submission)


async def occupy_only_slot(run: FakeRun, batcher: Batcher[str, str]) -> asyncio.Event:
    """Dispatch a held one-input batch so that the batcher's only in-flight slot is taken."""
    gate = run.hold("blocker")
    spawn(batcher.submit(["blocker"], [1]))
    await until(lambda: batcher.in_flight_batches == 1)
    return gate


# -- config ------------------------------------------------------------------------------------


def test_config_rejects_unknown_keys_and_out_of_range_values() -> None:
    with pytest.raises(ValidationError, match="max_batch_size"):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(ValidationError, match="max_wait_ms"):
        BatchingConfig(max_wait_ms=-1)
    with pytest.raises(ValidationError, match="batch_sise"):
        BatchingConfig.model_validate({"batch_sise": 4})


def test_check_fits_names_both_numbers_when_one_maximal_input_exceeds_the_budget() -> None:
    BatchingConfig(max_batch_tokens=512).check_fits(512)
    with pytest.raises(ValueError, match=r"max_batch_tokens=256.*max_length=512"):
        BatchingConfig(max_batch_tokens=256).check_fits(512)
    with pytest.raises(ValueError, match="max_length=512"):
        make(FakeRun(), max_batch_tokens=256, max_length=512)


# -- flush rules -------------------------------------------------------------------------------


async def test_batcher_dispatches_full_batch_without_waiting() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=3)
    result = await asyncio.wait_for(batcher.submit(["a", "b", "c"], [1, 1, 1]), 1.0)
    assert run.batches == [["a", "b", "c"]]
    assert result.results == ["out:a", "out:b", "out:c"]
    await batcher.close()


async def test_batcher_flushes_partial_batch_when_max_wait_elapses() -> None:
    run, clock = FakeRun(), FakeClock()
    batcher = make(run, clock=clock, max_batch_size=8, max_wait_ms=10)
    task = spawn(batcher.submit(["a"], [3]))
    await settle()
    clock.advance(0.009)
    await asyncio.sleep(0.02)
    assert run.batches == []
    assert batcher.queued_inputs == 1
    clock.advance(0.002)
    result = await asyncio.wait_for(task, 1.0)
    assert run.batches == [["a"]]
    assert result.results == ["out:a"]
    await batcher.close()


async def test_batcher_dispatches_when_pending_inputs_reach_the_token_budget() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=32, max_batch_tokens=100, max_length=50)
    first = spawn(batcher.submit(["a"], [50]))
    await settle()
    assert run.batches == []
    result = await asyncio.wait_for(batcher.submit(["b"], [50]), 1.0)
    assert run.batches == [["a", "b"]]
    assert result.results == ["out:b"]
    assert (await first).results == ["out:a"]
    await batcher.close()


async def test_batcher_with_zero_max_wait_dispatches_as_soon_as_a_slot_is_free() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=32, max_wait_ms=0)
    result = await asyncio.wait_for(batcher.submit(["a"], [3]), 1.0)
    assert run.batches == [["a"]]
    assert result.batches == 1
    await batcher.close()


async def test_batcher_accumulates_inputs_while_no_slot_is_free() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=8, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    tasks = [spawn(batcher.submit([name], [2])) for name in ("a", "b", "c")]
    await settle()
    assert batcher.queued_inputs == 3
    assert run.batches == [["blocker"]]
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert run.batches == [["blocker"], ["a", "b", "c"]]
    await batcher.close()


# -- length grouping ---------------------------------------------------------------------------


async def test_batcher_groups_similar_lengths_and_pads_far_less_than_fifo() -> None:
    run = FakeRun()
    lengths: dict[str, int] = {}
    batcher = make(run, max_batch_size=4, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    tasks = []
    for i in range(16):
        name = f"x{i}"
        lengths[name] = 512 if i % 4 == 1 else 8
        tasks.append(spawn(batcher.submit([name], [lengths[name]])))
    await settle()
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)

    def padded(batches: list[list[str]]) -> int:
        return sum(max(lengths[n] for n in batch) * len(batch) for batch in batches)

    grouped = run.batches[1:]
    arrival = list(lengths)
    fifo = [arrival[i : i + 4] for i in range(0, 16, 4)]
    assert sorted(n for b in grouped for n in b) == sorted(arrival)
    assert all(len(batch) == 4 for batch in grouped)
    assert padded(fifo) == 4 * 4 * 512
    assert padded(grouped) == 3 * 4 * 8 + 4 * 512
    assert padded(grouped) * 3 < padded(fifo)
    await batcher.close()


async def test_batcher_builds_each_batch_around_the_oldest_pending_input() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=2, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    tasks = [spawn(batcher.submit(["long"], [400]))]
    tasks += [spawn(batcher.submit([f"s{i}"], [5])) for i in range(5)]
    await settle()
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert run.batches[1] == ["long", "s0"]
    assert run.batches[2:] == [["s1", "s2"], ["s3", "s4"]]
    await batcher.close()


async def test_batcher_keeps_every_batch_within_count_and_token_limits() -> None:
    run = FakeRun()
    rng = random.Random(7)
    lengths = {f"x{i}": rng.randint(1, 128) for i in range(60)}
    batcher = make(
        run,
        max_batch_size=6,
        max_batch_tokens=256,
        max_wait_ms=0,
        max_in_flight_batches=1,
        max_length=128,
    )
    gate = await occupy_only_slot(run, batcher)
    tasks = [spawn(batcher.submit([n], [length])) for n, length in lengths.items()]
    await settle()
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    grouped = run.batches[1:]
    assert sorted(run.seen()[1:]) == sorted(lengths)
    for batch in grouped:
        assert len(batch) <= 6
        assert max(lengths[n] for n in batch) * len(batch) <= 256
    await batcher.close()


# -- split back --------------------------------------------------------------------------------


async def test_batcher_returns_one_callers_results_in_its_order_across_batches() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=3, max_wait_ms=0, max_in_flight_batches=1)
    names = [f"i{k}" for k in range(7)]
    lengths = [100, 3, 90, 4, 95, 5, 2]
    result = await asyncio.wait_for(batcher.submit(names, lengths), 1.0)
    assert result.results == [f"out:{n}" for n in names]
    assert result.batches == 3
    assert len(run.batches) == 3
    assert run.batches == [["i0", "i2", "i4"], ["i1", "i3", "i6"], ["i5"]]
    await batcher.close()


async def test_batcher_fails_batch_when_run_returns_wrong_number_of_results() -> None:
    run = FakeRun()
    run.short_by["a"] = 1
    batcher = make(run, max_batch_size=2)
    with pytest.raises(BackendError, match="1 results for a batch of 2"):
        await asyncio.wait_for(batcher.submit(["a", "b"], [1, 1]), 1.0)
    await batcher.close()


# -- failure isolation -------------------------------------------------------------------------


async def test_failed_batch_fails_only_its_callers_and_batcher_keeps_working() -> None:
    run = FakeRun()
    boom = RuntimeError("triton fell over")
    run.failures["bad"] = boom
    batcher = make(run, max_batch_size=2, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    doomed = [spawn(batcher.submit(["bad"], [1])), spawn(batcher.submit(["c1"], [1]))]
    fine = [spawn(batcher.submit(["c2"], [1])), spawn(batcher.submit(["c3"], [1]))]
    await settle()
    gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*doomed, *fine, return_exceptions=True), 1.0)
    assert outcomes[0] is boom
    assert outcomes[1] is boom
    assert [o.results for o in outcomes[2:] if isinstance(o, Batched)] == [["out:c2"], ["out:c3"]]
    after = await asyncio.wait_for(batcher.submit(["later"], [1]), 1.0)
    assert after.results == ["out:later"]
    await batcher.close()


async def test_caller_with_items_in_a_failed_and_a_successful_batch_fails() -> None:
    run = FakeRun()
    boom = RuntimeError("bad shard")
    run.failures["p1"] = boom
    batcher = make(run, max_batch_size=1, max_wait_ms=0, max_in_flight_batches=2)
    with pytest.raises(RuntimeError) as caught:
        await asyncio.wait_for(batcher.submit(["p0", "p1"], [1, 1]), 1.0)
    assert caught.value is boom
    assert sorted(run.seen()) == ["p0", "p1"]
    await batcher.close()


# -- admission ---------------------------------------------------------------------------------


async def test_batcher_rejects_submit_beyond_queue_bound_without_queueing() -> None:
    run = FakeRun()
    batcher = make(run, max_queued_inputs=4, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    queued = spawn(batcher.submit(["a", "b", "c"], [1, 1, 1]))
    await settle()
    assert batcher.queued_inputs == 3
    with pytest.raises(Overloaded, match=r"enc.*max_queued_inputs=4"):
        await asyncio.wait_for(batcher.submit(["d", "e"], [1, 1]), 1.0)
    assert batcher.queued_inputs == 3
    gate.set()
    await asyncio.wait_for(queued, 1.0)
    assert "d" not in run.seen()
    await batcher.close()


async def test_submit_rejects_empty_items_mismatched_lengths_and_overlong_inputs() -> None:
    batcher = make(FakeRun(), max_length=16)
    with pytest.raises(ValueError, match="at least one item"):
        await asyncio.wait_for(batcher.submit([], []), 1.0)
    with pytest.raises(ValueError, match="2 items but 1 lengths"):
        await asyncio.wait_for(batcher.submit(["a", "b"], [1]), 1.0)
    with pytest.raises(ValueError, match="max_length=16"):
        await asyncio.wait_for(batcher.submit(["a"], [17]), 1.0)
    assert batcher.queued_inputs == 0
    await batcher.close()


# -- cancellation and expiry -------------------------------------------------------------------


async def test_cancelled_caller_has_its_queued_items_removed() -> None:
    run = FakeRun()
    batcher = make(run, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    gone = spawn(batcher.submit(["g1", "g2"], [1, 1]))
    kept = spawn(batcher.submit(["k"], [1]))
    await settle()
    assert batcher.queued_inputs == 3
    gone.cancel()
    await settle()
    assert batcher.queued_inputs == 1
    gate.set()
    assert (await asyncio.wait_for(kept, 1.0)).results == ["out:k"]
    assert gone.cancelled()
    assert "g1" not in run.seen() and "g2" not in run.seen()
    await batcher.close()


async def test_expired_items_are_dropped_before_dispatch_with_deadline_exceeded() -> None:
    run, clock = FakeRun(), FakeClock()
    batcher = make(run, clock=clock, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    late = spawn(batcher.submit(["late"], [1], deadline=clock.now + 1.0))
    patient = spawn(batcher.submit(["patient"], [1], deadline=clock.now + 10.0))
    await settle()
    clock.advance(2.0)
    gate.set()
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(late, 1.0)
    assert (await asyncio.wait_for(patient, 1.0)).results == ["out:patient"]
    assert "late" not in run.seen()
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(batcher.submit(["past"], [1], deadline=clock.now), 1.0)
    await batcher.close()


async def test_caller_cancelled_after_dispatch_does_not_disturb_the_batch() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=2)
    gate = run.hold("a")
    leaver = spawn(batcher.submit(["a"], [1]))
    stayer = spawn(batcher.submit(["b"], [1]))
    await until(lambda: run.batches == [["a", "b"]])
    leaver.cancel()
    await settle()
    gate.set()
    assert (await asyncio.wait_for(stayer, 1.0)).results == ["out:b"]
    assert leaver.cancelled()
    await until(lambda: batcher.in_flight_batches == 0)
    await batcher.close()


# -- concurrency, disabled mode, stats ---------------------------------------------------------


async def test_batcher_never_runs_more_than_max_in_flight_batches() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=1, max_wait_ms=0, max_in_flight_batches=2)
    gates = [run.hold(f"x{i}") for i in range(6)]
    tasks = [spawn(batcher.submit([f"x{i}"], [1])) for i in range(6)]
    await until(lambda: batcher.in_flight_batches == 2)
    await settle()
    assert run.active == 2
    assert batcher.queued_inputs == 4
    for gate in gates:
        gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert run.max_active == 2
    assert len(run.batches) == 6
    await batcher.close()


async def test_disabled_batcher_passes_each_request_straight_to_run() -> None:
    run = FakeRun()
    stats: list[BatchStats] = []
    batcher = make(run, enabled=False, max_batch_size=2, on_batch=stats.append)
    result = await asyncio.wait_for(batcher.submit(["a", "b", "c"], [1, 4, 2]), 1.0)
    assert run.batches == [["a", "b", "c"]]
    assert result.results == ["out:a", "out:b", "out:c"]
    assert result.batches == 1
    assert stats[0].padded_tokens == 12
    await batcher.close()


async def test_on_batch_reports_size_tokens_timings_and_outcome() -> None:
    run, clock = FakeRun(), FakeClock()
    run.failures["bad"] = RuntimeError("nope")
    stats: list[BatchStats] = []
    batcher = make(run, clock=clock, on_batch=stats.append, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    waiting = spawn(batcher.submit(["a", "b", "c"], [3, 5, 2]))
    await settle()
    clock.advance(1.0)
    slow = run.hold("a")
    gate.set()
    await until(lambda: len(run.batches) == 2)
    clock.advance(2.0)
    slow.set()
    result = await asyncio.wait_for(waiting, 1.0)
    assert (result.queue_seconds, result.run_seconds, result.batches) == (1.0, 2.0, 1)
    assert stats[1] == BatchStats(
        size=3, real_tokens=10, padded_tokens=15, queue_seconds_max=1.0, run_seconds=2.0, ok=True
    )
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(batcher.submit(["bad"], [4]), 1.0)
    assert stats[-1].ok is False and stats[-1].padded_tokens == 4
    await batcher.close()


# -- hot reload and shutdown -------------------------------------------------------------------


async def test_update_config_applies_to_batches_formed_afterwards() -> None:
    run = FakeRun()
    batcher = make(run, max_batch_size=1, max_wait_ms=0, max_in_flight_batches=1)
    gate = await occupy_only_slot(run, batcher)
    tasks = [spawn(batcher.submit([f"x{i}"], [1])) for i in range(4)]
    await settle()
    batcher.update_config(batcher.config.model_copy(update={"max_batch_size": 2}))
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert run.batches[1:] == [["x0", "x1"], ["x2", "x3"]]
    with pytest.raises(ValueError, match="max_length=512"):
        batcher.update_config(BatchingConfig(max_batch_tokens=100))
    assert batcher.config.max_batch_size == 2
    await batcher.close()


async def test_close_fails_queued_callers_and_waits_for_running_batches() -> None:
    run = FakeRun()
    batcher = make(run, max_wait_ms=0, max_in_flight_batches=1)
    gate = run.hold("running")
    running = spawn(batcher.submit(["running"], [1]))
    await until(lambda: batcher.in_flight_batches == 1)
    queued = spawn(batcher.submit(["queued"], [1]))
    await settle()
    closing = asyncio.create_task(batcher.close())
    with pytest.raises(BackendUnavailable, match="closed"):
        await asyncio.wait_for(queued, 1.0)
    await settle()
    assert not closing.done()
    gate.set()
    await asyncio.wait_for(closing, 1.0)
    assert (await running).results == ["out:running"]
    assert "queued" not in run.seen()
    with pytest.raises(BackendUnavailable, match="closed"):
        await asyncio.wait_for(batcher.submit(["after"], [1]), 1.0)


async def test_min_fill_keeps_short_and_long_inputs_in_separate_batches() -> None:
    run = FakeRun()
    batcher = make(run, max_in_flight_batches=1, min_fill=0.6, max_wait_ms=0)
    gate = await occupy_only_slot(run, batcher)
    lengths = [10, 12, 11, 60, 58, 9, 62]
    tasks = [spawn(batcher.submit([f"x{n}"], [n])) for n in lengths]
    await settle()
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    batches = run.batches[1:]
    assert sorted(map(sorted, batches)) == [["x10", "x11", "x12", "x9"], ["x58", "x60", "x62"]]
    padded = sum(max(int(i[1:]) for i in b) * len(b) for b in batches)
    assert padded < max(lengths) * len(lengths) * 0.6  # one mixed batch would pad far more


async def test_min_fill_never_leaves_the_oldest_input_behind() -> None:
    run = FakeRun()
    batcher = make(run, min_fill=1.0, max_wait_ms=0)
    replies = await asyncio.gather(batcher.submit(["a", "b"], [3, 40]))
    assert replies[0].results == ["out:a", "out:b"]
    assert all(len(b) == 1 for b in run.batches)  # each alone: any pair pads
