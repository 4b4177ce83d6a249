"""Admission by expected queue time: refuse at once what would wait longer than a budget.

A count bound (``max_queued_inputs``) is right only for one backend speed: too small and a
fast model is refused work it could do, too large and a slow or overloaded one queues callers
for seconds. :class:`QueueTimeAdmission` learns the cost of an input from the batches that
ran (an exponentially weighted mean of seconds per input and per batch) and estimates the wait
of a new request: the inputs queued ahead of it at that cost, shared by the batch slots, plus
half a batch when every slot is busy. Above the budget the request is refused with
``RESOURCE_EXHAUSTED`` and a ``RetryInfo`` of the excess, so callers back off about as long as
the queue needs to drain. Before the first batch there is nothing to learn from: everything
is admitted (the count bound still holds).

Plain Python, no asyncio: the batcher calls :meth:`observe` after each batch and
:meth:`check` in ``submit``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import Overloaded


@dataclass(frozen=True)
class QueueState:
    """What the batcher knows when a request arrives."""

    queued_inputs: int
    in_flight_batches: int
    max_batch_size: int
    max_in_flight_batches: int


class QueueTimeAdmission:
    """``budget_s``: the longest expected queue wait admitted; ``alpha``: EWMA weight."""

    def __init__(self, budget_s: float, *, alpha: float = 0.2) -> None:
        if budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, got {budget_s}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.budget_s = budget_s
        self._alpha = alpha
        self.seconds_per_input: float | None = None
        self.seconds_per_batch: float | None = None

    def observe(self, size: int, run_seconds: float, ok: bool = True) -> None:
        """Learn from one finished batch (failed batches say nothing about speed)."""
        if not ok or size < 1 or run_seconds < 0:
            return
        per_input = run_seconds / size
        if self.seconds_per_input is None or self.seconds_per_batch is None:
            self.seconds_per_input, self.seconds_per_batch = per_input, run_seconds
            return
        a = self._alpha
        self.seconds_per_input += a * (per_input - self.seconds_per_input)
        self.seconds_per_batch += a * (run_seconds - self.seconds_per_batch)

    def expected_wait(self, state: QueueState) -> float:
        """Seconds a request arriving now is expected to wait before its batch is sent."""
        if self.seconds_per_input is None or self.seconds_per_batch is None:
            return 0.0
        slots = max(1, state.max_in_flight_batches)
        busy = state.in_flight_batches >= slots
        # running batches are half done on average; the queue ahead drains at the learnt
        # cost per input (under load: the cost in full batches), over every batch slot
        running = 0.5 * self.seconds_per_batch if busy else 0.0
        return running + state.queued_inputs * self.seconds_per_input / slots

    def check(self, name: str, state: QueueState) -> None:
        """Raise :class:`Overloaded` (with the excess as retry delay) above the budget."""
        wait = self.expected_wait(state)
        if wait > self.budget_s:
            raise Overloaded(
                f"{name}: expected queue time {wait * 1000:.0f} ms exceeds max_queue_ms="
                f"{self.budget_s * 1000:.0f} ({state.queued_inputs} inputs queued)",
                retry_after=wait - self.budget_s,
            )


def max_queued_for(budget_s: float, inputs_per_s: float, *, floor: int = 1) -> int:
    """The count bound equivalent to a queue-time budget at a measured throughput: what
    drains within ``budget_s`` (at least ``floor``, e.g. the largest request)."""
    return max(floor, int(budget_s * inputs_per_s))
