"""Admission: every decision to refuse work because there is too much of it, in one place.

Two gates, both answering :class:`~gateway.errors.Overloaded` (``RESOURCE_EXHAUSTED`` with a
``google.rpc.RetryInfo`` delay) at once instead of queueing:

* :class:`Admission`, entered once per request by the engine before anything else: the calling
  API key's quotas (``max_concurrent`` calls in flight, a token bucket of ``rate_per_s`` and
  ``burst``), the generations in flight (``limits.max_concurrent_streams``, Generate and
  GenerateStream alike) and the requests in flight gateway-wide
  (``server.max_concurrent_requests``). Authentication (which key is calling) is the
  transport's (:mod:`gateway.auth`); the key's name is all this gate needs.
* :class:`QueueTimeAdmission`, asked by a deployment's batcher when a request reaches it: a
  count bound (``batching.max_queued_inputs``) and the **predicted queue time** against a
  budget. The budget is ``batching.max_queue_ms`` when the operator sets one; by default it is
  derived from the deployment's measured service time: :data:`DEFAULT_BUDGET_MULTIPLE` times
  what one full batch costs at the measured cost per input (an exponentially weighted mean;
  ``max_batch_size`` inputs). Not the mean batch time: that grows with the batches a load forms
  and would let the queue, the batches and the latency grow together; the cost per input stays.
  So an admitted request waits at most about four full batches, whatever the overload, and a
  closed loop of callers up to about four batches' worth (64 single sentences with the default
  ``max_batch_size``) is served, not refused: a tighter default starved such loops with
  rejections they retry at once (measured: 0.19x the in-process throughput at c=64 with one
  batch). Until a first
  batch has been measured everything is admitted (the count bound still holds).

The predicted wait counts the whole batches queued ahead of a request (inputs that will share
its batch do not delay it) at the learnt cost per input, spread over the batch slots, plus half
a batch when every slot is busy. Plain Python with an injectable clock: no asyncio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from gateway.errors import Overloaded

if TYPE_CHECKING:  # gateway.config imports the batcher, which imports this module
    from gateway.config import GatewayConfig

#: the derived queue-time budget, in full batches at the measured cost per input
DEFAULT_BUDGET_MULTIPLE = 4.0
#: a key over its concurrency quota, or the gateway over its limits, is told to retry after this
CONCURRENCY_RETRY_S = 0.1
STREAM_RETRY_S = 1.0

RejectObserver = Callable[[str, str], None]  # (reason, key name)
ANONYMOUS = "anonymous"


# -- per request -----------------------------------------------------------------------------
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a call takes one."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class KeyLimits:
    max_concurrent: int | None = None
    rate_per_s: float | None = None
    burst: int | None = None


@dataclass(frozen=True)
class AdmissionPolicy:
    """The limits of one config."""

    max_concurrent: int
    max_generations: int
    keys: Mapping[str, KeyLimits] = field(default_factory=dict)  # by key name

    @classmethod
    def from_config(cls, config: GatewayConfig) -> AdmissionPolicy:
        auth = config.auth
        keys = {
            k.name: KeyLimits(k.max_concurrent, k.rate_per_s, k.burst)
            for k in (auth.keys if auth is not None and auth.enabled else ())
        }
        return cls(
            config.server.max_concurrent_requests,
            config.limits.max_concurrent_streams,
            MappingProxyType(keys),
        )


@dataclass
class _KeyState:
    in_flight: int = 0
    bucket: TokenBucket | None = None


class Lease:
    """What one admitted request holds; released exactly once (``with`` or :meth:`release`)."""

    def __init__(self, gate: Admission, state: _KeyState | None, generation: bool) -> None:
        self._gate = gate
        self._state = state
        self._generation = generation
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self._gate._leave(self._state, self._generation)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Admission:
    """See the module docstring. Per-key state lives on by key name across reloads."""

    def __init__(
        self,
        policy: AdmissionPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_reject: RejectObserver | None = None,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._on_reject = on_reject
        self._keys: dict[str, _KeyState] = {}
        self.in_flight = 0
        self.generations_in_flight = 0
        self.reconfigure(policy)

    @property
    def policy(self) -> AdmissionPolicy:
        return self._policy

    def reconfigure(self, policy: AdmissionPolicy) -> None:
        """Apply ``policy`` to the requests that start from now on."""
        self._policy = policy
        now = self._clock()
        for name in list(self._keys):
            if name not in policy.keys and self._keys[name].in_flight == 0:
                del self._keys[name]
        for name, limits in policy.keys.items():
            state = self._keys.setdefault(name, _KeyState())
            if limits.rate_per_s is None:
                state.bucket = None
                continue
            burst = limits.burst or max(1, math.ceil(limits.rate_per_s))
            old = state.bucket
            state.bucket = TokenBucket(limits.rate_per_s, burst, now)
            if old is not None:
                state.bucket.tokens = min(float(burst), old.tokens)

    def _refuse(self, reason: str, caller: str | None, error: Overloaded) -> Overloaded:
        if self._on_reject is not None:
            self._on_reject(reason, caller or ANONYMOUS)
        return error

    def enter(self, caller: str | None, *, generation: bool = False) -> Lease:
        """Admit one request of ``caller`` (an API key name; None: anonymous) or raise
        :class:`Overloaded` naming the limit."""
        policy = self._policy
        limits = policy.keys.get(caller) if caller is not None else None
        state = None
        if caller is not None and limits is not None:
            state = self._keys.setdefault(caller, _KeyState())
            if limits.max_concurrent is not None and state.in_flight >= limits.max_concurrent:
                raise self._refuse(
                    "overloaded",
                    caller,
                    Overloaded(
                        f"API key {caller!r} has {state.in_flight} calls in flight, its quota "
                        f"max_concurrent={limits.max_concurrent}",
                        retry_after=CONCURRENCY_RETRY_S,
                    ),
                )
            if state.bucket is not None:
                wait = state.bucket.take(self._clock())
                if wait > 0:
                    raise self._refuse(
                        "overloaded",
                        caller,
                        Overloaded(
                            f"API key {caller!r} is over its rate limit "
                            f"rate_per_s={limits.rate_per_s} (burst {state.bucket.burst})",
                            retry_after=wait,
                        ),
                    )
        if generation and self.generations_in_flight >= policy.max_generations:
            raise self._refuse(
                "streams",
                caller,
                Overloaded(
                    f"{self.generations_in_flight} streams in flight, the limit "
                    f"limits.max_concurrent_streams={policy.max_generations}; retry later",
                    retry_after=STREAM_RETRY_S,
                ),
            )
        if self.in_flight >= policy.max_concurrent:
            raise self._refuse(
                "concurrency",
                caller,
                Overloaded(
                    f"{self.in_flight} requests in flight, the limit "
                    f"server.max_concurrent_requests={policy.max_concurrent}; retry later",
                    retry_after=CONCURRENCY_RETRY_S,
                ),
            )
        if state is not None:
            state.in_flight += 1
        if generation:
            self.generations_in_flight += 1
        self.in_flight += 1
        return Lease(self, state, generation)

    def _leave(self, state: _KeyState | None, generation: bool) -> None:
        self.in_flight -= 1
        if generation:
            self.generations_in_flight -= 1
        if state is not None:
            state.in_flight -= 1


# -- per deployment queue ----------------------------------------------------------------------
@dataclass(frozen=True)
class QueueState:
    """What the batcher knows when a request arrives."""

    queued_inputs: int
    in_flight_batches: int
    max_batch_size: int
    max_in_flight_batches: int


class QueueTimeAdmission:
    """``budget_s``: the longest predicted queue wait admitted (None: derived, see the module
    docstring); ``alpha``: the weight of the newest batch in the means."""

    def __init__(
        self,
        budget_s: float | None = None,
        *,
        alpha: float = 0.2,
        multiple: float = DEFAULT_BUDGET_MULTIPLE,
    ) -> None:
        if budget_s is not None and budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, got {budget_s}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if multiple <= 0:
            raise ValueError(f"multiple must be > 0, got {multiple}")
        self.budget_s = budget_s
        self.multiple = multiple
        self._alpha = alpha
        self.seconds_per_input: float | None = None
        self.seconds_per_batch: float | None = None

    def budget(self, max_batch_size: int) -> float | None:
        """The budget in force for a queue of ``max_batch_size``-input batches: the explicit
        one, else the derived one (None until measured)."""
        if self.budget_s is not None:
            return self.budget_s
        if self.seconds_per_input is None:
            return None
        return self.multiple * self.seconds_per_input * max(1, max_batch_size)

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
        running = 0.5 * self.seconds_per_batch if busy else 0.0
        size = max(1, state.max_batch_size)
        ahead = (state.queued_inputs // size) * size  # whole batches; the rest joins ours
        return running + ahead * self.seconds_per_input / slots

    def check(self, name: str, state: QueueState) -> None:
        """Raise :class:`Overloaded` (with the excess as retry delay) above the budget."""
        budget = self.budget(state.max_batch_size)
        if budget is None:
            return
        wait = self.expected_wait(state)
        if wait > budget:
            rule = (
                f"max_queue_ms={budget * 1000:.0f}"
                if self.budget_s is not None
                else f"the queue budget {budget * 1000:.1f} ms ({self.multiple:g}x the measured "
                "time of a full batch)"
            )
            raise Overloaded(
                f"{name}: expected queue time {wait * 1000:.0f} ms exceeds {rule} "
                f"({state.queued_inputs} inputs queued)",
                retry_after=wait - budget,
            )

    def admit(self, name: str, count: int, state: QueueState, max_queued_inputs: int) -> None:
        """Raise :class:`Overloaded` if ``count`` more inputs would be refused: beyond the
        count bound, or predicted to wait longer than the budget."""
        if state.queued_inputs + count > max_queued_inputs:
            raise Overloaded(
                f"{name}: {state.queued_inputs} inputs queued, {count} more would "
                f"exceed max_queued_inputs={max_queued_inputs}"
            )
        self.check(name, state)


def max_queued_for(budget_s: float, inputs_per_s: float, *, floor: int = 1) -> int:
    """The count bound equivalent to a queue-time budget at a measured throughput: what
    drains within ``budget_s`` (at least ``floor``, e.g. the largest request)."""
    return max(floor, int(budget_s * inputs_per_s))
