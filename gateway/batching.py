"""Per-target request batching in front of a backend call that runs one padded batch.

A :class:`Batcher` owns one queue of pending inputs for one target model. Callers
:meth:`~Batcher.submit` a few items (with their token lengths) and await a future; one asyncio
task forms batches and runs them through ``run``, at most ``max_in_flight_batches`` at a time.

A batch is dispatched when an in-flight slot is free and the pending inputs fill
``max_batch_size`` or the token budget, or the oldest pending input has waited ``max_wait_ms``.
Each batch is built around the oldest pending input (nobody starves) and grown with the pending
inputs closest to it in length, so that padding stays low. Results are split back to callers in
their own order; a failed batch fails only the callers with items in it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import Field

from gateway.admission import QueueState, QueueTimeAdmission
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
)
from lmforge_core.strict import StrictModel

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ItemError:
    """One input's failure inside a batch that otherwise ran (e.g. one input too long): only
    the caller that submitted it fails, with this error."""

    error: GatewayError


RunBatch = Callable[[Sequence[T]], Awaitable[Sequence[R | ItemError]]]


class BatchingConfig(StrictModel):
    """How one target's inputs are grouped into backend calls."""

    enabled: bool = Field(True, description="false: each request is one backend call")
    max_batch_size: int = Field(16, ge=1, description="inputs per batch")
    max_batch_tokens: int = Field(8192, ge=1, description="budget: longest length x inputs")
    max_wait_ms: float = Field(
        0.0, ge=0, description="wait of the oldest input for company while a slot is free"
    )
    max_queued_inputs: int = Field(1024, ge=1, description="pending inputs; more are rejected")
    max_queue_ms: float | None = Field(
        None,
        gt=0,
        description="refuse a request whose predicted queue time exceeds this; null (the "
        "default): a budget derived from the measured service time "
        "(gateway.admission.DEFAULT_BUDGET_MULTIPLE full batches at its cost per input)",
    )
    max_in_flight_batches: int = Field(1, ge=1, description="batches running concurrently")
    min_fill: float = Field(
        0.6,
        ge=0,
        le=1,
        description="stop growing a batch before its real/padded tokens drop below this; the "
        "rest waits for the next batch (padding is compute spent on nothing)",
    )

    def check_fits(self, max_length: int) -> None:
        """Raise ``ValueError`` when one input of ``max_length`` tokens exceeds the budget."""
        if max_length > self.max_batch_tokens:
            raise ValueError(
                f"max_batch_tokens={self.max_batch_tokens} cannot hold one input of "
                f"max_length={max_length} tokens"
            )


@dataclass(frozen=True)
class BatchStats:
    """What one batch cost; given to ``on_batch`` after it finishes or fails."""

    size: int
    real_tokens: int
    padded_tokens: int
    queue_seconds_max: float
    run_seconds: float
    ok: bool


@dataclass(frozen=True)
class Batched(Generic[R]):
    """One caller's results and how its items travelled."""

    results: list[R]
    queue_seconds: float
    run_seconds: float
    batches: int


@dataclass(eq=False)
class _Request(Generic[R]):
    future: asyncio.Future[Batched[R]]
    size: int
    submitted: float
    deadline: float | None
    pending_keys: set[int] = field(default_factory=set)
    results: dict[int, R] = field(default_factory=dict)
    first_dispatch: float = 0.0
    last_dispatch: float = 0.0
    batches: int = 0


@dataclass(eq=False)
class _Entry(Generic[T, R]):
    seq: int
    request: _Request[R]
    index: int
    item: T
    length: int


class Batcher(Generic[T, R]):
    """Batches the inputs submitted for one target and runs them through ``run``."""

    def __init__(
        self,
        name: str,
        run: RunBatch[T, R],
        config: BatchingConfig,
        *,
        max_length: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config.check_fits(max_length)
        self.name = name
        self._run = run
        self._config = config
        self._max_length = max_length
        self._on_batch = on_batch
        self._clock = clock
        self._pending: dict[int, _Entry[T, R]] = {}
        self._seq = itertools.count()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._admission = QueueTimeAdmission(_budget_s(config))

    @property
    def admission(self) -> QueueTimeAdmission:
        """What this queue learnt of its service time, and its budget."""
        return self._admission

    def admit(self, count: int) -> None:
        """Raise :class:`Overloaded` now if ``count`` more inputs would be refused (see
        :mod:`gateway.admission`); cheap enough to ask before the caller tokenizes."""
        config = self._config
        if self._closed or not config.enabled:
            return
        state = QueueState(
            len(self._pending),
            len(self._in_flight),
            config.max_batch_size,
            config.max_in_flight_batches,
        )
        self._admission.admit(self.name, count, state, config.max_queued_inputs)

    @property
    def config(self) -> BatchingConfig:
        return self._config

    @property
    def queued_inputs(self) -> int:
        return len(self._pending)

    @property
    def in_flight_batches(self) -> int:
        return len(self._in_flight)

    def update_config(self, config: BatchingConfig) -> None:
        """Use ``config`` for the batches formed from now on."""
        config.check_fits(self._max_length)
        self._config = config
        self._admission.budget_s = _budget_s(config)
        self._wakeup.set()

    async def start(self) -> None:
        """Start the task that owns the queue (does nothing when it already runs)."""
        if self._closed:
            raise BackendUnavailable(f"batcher {self.name} closed")
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Fail the callers still queued and wait for the batches already running."""
        self._closed = True
        self._fail_all_pending(f"batcher {self.name} closed")
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def submit(
        self, items: Sequence[T], lengths: Sequence[int], *, deadline: float | None = None
    ) -> Batched[R]:
        """Run ``items`` (``lengths[i]`` tokens each) in one or more batches; results in order."""
        if not items:
            raise ValueError("submit needs at least one item")
        if len(lengths) != len(items):
            raise ValueError(f"got {len(items)} items but {len(lengths)} lengths")
        for length in lengths:
            if not 0 <= length <= self._max_length:
                raise ValueError(f"length {length} is outside 0..max_length={self._max_length}")
        if self._closed:
            raise BackendUnavailable(f"batcher {self.name} closed")
        config = self._config
        if not config.enabled:
            return await self._passthrough(items, lengths)
        now = self._clock()
        self.admit(len(items))
        await self.start()
        request: _Request[R] = _Request(
            asyncio.get_running_loop().create_future(), len(items), now, deadline
        )
        for index, (item, length) in enumerate(zip(items, lengths, strict=True)):
            seq = next(self._seq)
            self._pending[seq] = _Entry(seq, request, index, item, length)
            request.pending_keys.add(seq)
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:
            if request.pending_keys:
                self._drop_pending(request)
                self._wakeup.set()
            raise

    async def _passthrough(self, items: Sequence[T], lengths: Sequence[int]) -> Batched[R]:
        started = self._clock()
        ok = False
        try:
            results = await self._run(items)
            self._check_count(results, len(items))
            ok = True
        finally:
            run_seconds = self._clock() - started
            self._report(lengths, 0.0, run_seconds, ok)
        failures = [r.error for r in results if isinstance(r, ItemError)]
        if failures:
            raise _merged(failures)
        return Batched([r for r in results if not isinstance(r, ItemError)], 0.0, run_seconds, 1)

    async def _loop(self) -> None:
        try:
            while not self._closed:
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(self._step()):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
        except Exception:
            logger.exception("batcher %s: queue loop failed", self.name)
            self._closed = True
            self._fail_all_pending(f"batcher {self.name} closed after an internal error")

    def _step(self) -> float | None:
        """Expire, dispatch every batch that is due; the seconds until the next check, if any."""
        config = self._config
        now = self._clock()
        self._expire(now)
        wait = config.max_wait_ms / 1000.0
        while self._pending and len(self._in_flight) < config.max_in_flight_batches:
            oldest = next(iter(self._pending.values()))
            count = len(self._pending)
            longest = max(entry.length for entry in self._pending.values())
            if (
                count < config.max_batch_size
                and longest * count < config.max_batch_tokens
                and now - oldest.request.submitted < wait
            ):
                break
            self._dispatch(self._form_batch(config), now)
        due = [e.request.deadline for e in self._pending.values() if e.request.deadline is not None]
        if self._pending and len(self._in_flight) < config.max_in_flight_batches:
            due.append(next(iter(self._pending.values())).request.submitted + wait)
        return max(0.0, min(due) - now) if due else None

    def _expire(self, now: float) -> None:
        expired = {
            e.request
            for e in self._pending.values()
            if e.request.deadline is not None and e.request.deadline <= now
        }
        for request in expired:
            logger.debug("batcher %s: dropping %d expired inputs", self.name, request.size)
            self._fail(request, DeadlineExceeded(f"deadline passed while queued for {self.name}"))

    def _form_batch(self, config: BatchingConfig) -> list[_Entry[T, R]]:
        """The oldest pending input and its closest neighbours in length, within the limits."""
        anchor = next(iter(self._pending.values()))
        # Among equal lengths, the older input sits nearer the anchor on either side.
        ordered = sorted(
            self._pending.values(),
            key=lambda e: (e.length, e.seq if e.length >= anchor.length else -e.seq),
        )
        lo = ordered.index(anchor)
        hi = lo + 1
        real = anchor.length

        def fits(added: int, longest: int, count: int) -> bool:
            padded = longest * count
            filled = (real + added) >= config.min_fill * padded
            return padded <= config.max_batch_tokens and filled

        while hi - lo < config.max_batch_size:
            count = hi - lo + 1
            longest = ordered[hi - 1].length
            left_fits = lo > 0 and fits(ordered[lo - 1].length, longest, count)
            right_fits = hi < len(ordered) and fits(ordered[hi].length, ordered[hi].length, count)
            if left_fits and right_fits:
                take_left = (
                    anchor.length - ordered[lo - 1].length <= ordered[hi].length - anchor.length
                )
            elif left_fits or right_fits:
                take_left = left_fits
            else:
                break
            if take_left:
                lo -= 1
                real += ordered[lo].length
            else:
                real += ordered[hi].length
                hi += 1
        return sorted(ordered[lo:hi], key=lambda e: e.seq)

    def _dispatch(self, batch: list[_Entry[T, R]], now: float) -> None:
        requests: dict[_Request[R], None] = {}
        for entry in batch:
            del self._pending[entry.seq]
            entry.request.pending_keys.discard(entry.seq)
            requests[entry.request] = None
        for request in requests:
            if request.batches == 0:
                request.first_dispatch = now
            request.batches += 1
            request.last_dispatch = now
        logger.debug(
            "batcher %s: dispatching %d inputs for %d callers", self.name, len(batch), len(requests)
        )
        task = asyncio.create_task(self._run_batch(batch, list(requests), now))
        self._in_flight.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wakeup.set()

    async def _run_batch(
        self, batch: list[_Entry[T, R]], requests: list[_Request[R]], dispatched: float
    ) -> None:
        ok = False
        try:
            results = await self._run([entry.item for entry in batch])
            self._check_count(results, len(batch))
        except asyncio.CancelledError:
            for request in requests:
                self._fail(request, BackendUnavailable(f"batcher {self.name} closed"))
            raise
        except Exception as exc:
            logger.warning("batcher %s: batch of %d inputs failed: %r", self.name, len(batch), exc)
            for request in requests:
                self._fail(request, exc)
        else:
            ok = True
            done = self._clock()
            errors: dict[_Request[R], list[GatewayError]] = {}
            for entry, result in zip(batch, results, strict=True):
                if isinstance(result, ItemError):
                    errors.setdefault(entry.request, []).append(result.error)
            for request, failures in errors.items():
                self._fail(request, _merged(failures))
            for entry, result in zip(batch, results, strict=True):
                self._deliver(entry, result, done)
        finally:
            self._report(
                [entry.length for entry in batch],
                max(dispatched - entry.request.submitted for entry in batch),
                self._clock() - dispatched,
                ok,
            )

    def _check_count(self, results: Sequence[R | ItemError], expected: int) -> None:
        if len(results) != expected:
            raise BackendError(
                f"{self.name}: backend returned {len(results)} results for a batch of {expected}"
            )

    def _deliver(self, entry: _Entry[T, R], result: R | ItemError, done: float) -> None:
        request = entry.request
        if request.future.done():
            return
        if isinstance(result, ItemError):
            return  # the caller was failed with its items' errors before delivery
        request.results[entry.index] = result
        if len(request.results) == request.size:
            results = [request.results[i] for i in range(request.size)]
            queued = request.last_dispatch - request.submitted
            ran = done - request.first_dispatch
            request.future.set_result(Batched(results, queued, ran, request.batches))

    def _fail(self, request: _Request[R], exc: BaseException) -> None:
        # the caller's other inputs still queued are dropped: its answer is this error
        self._drop_pending(request)
        if not request.future.done():
            request.future.set_exception(exc)

    def _drop_pending(self, request: _Request[R]) -> None:
        for seq in request.pending_keys:
            self._pending.pop(seq, None)
        request.pending_keys.clear()

    def _fail_all_pending(self, message: str) -> None:
        for request in {entry.request for entry in self._pending.values()}:
            self._fail(request, BackendUnavailable(message))

    def _report(self, lengths: Sequence[int], queued: float, run: float, ok: bool) -> None:
        self._admission.observe(len(lengths), run, ok)
        if self._on_batch is None:
            return
        stats = BatchStats(len(lengths), sum(lengths), max(lengths) * len(lengths), queued, run, ok)
        try:
            self._on_batch(stats)
        except Exception:
            logger.exception("batcher %s: on_batch callback failed", self.name)


def _budget_s(config: BatchingConfig) -> float | None:
    return None if config.max_queue_ms is None else config.max_queue_ms / 1000


def _merged(errors: Sequence[GatewayError]) -> GatewayError:
    """One error for a caller whose inputs failed one by one: every field violation when they
    are all invalid inputs, else the first error."""
    if all(isinstance(e, InvalidInput) for e in errors):
        return InvalidInput.from_violations(
            v for e in errors if isinstance(e, InvalidInput) for v in e.violations
        )
    return errors[0]
