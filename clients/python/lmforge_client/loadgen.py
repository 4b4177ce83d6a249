"""An asyncio load generator for the gateway (or anything called through a coroutine).

Closed loop (:func:`closed_loop`): ``concurrency`` workers, each keeping one call in flight,
for a fixed time after a warm-up — the shape perf_analyzer's ``--concurrency-range`` uses, so
the two are comparable. Open loop (:func:`open_loop`): calls start at a fixed rate whatever
the answers do, the shape of real traffic spikes; used to measure overload behaviour.

Latencies are measured per call on the monotonic clock; failures are counted by gRPC status
name (``LmforgeError.code``), anything else by exception type.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from lmforge_client.types import LmforgeError

Call = Callable[[int], Awaitable[object]]


@dataclass(frozen=True)
class LoadResult:
    mode: str  # "closed" | "open"
    level: float  # concurrency (closed loop) or offered rate per second (open loop)
    seconds: float
    ok: int
    failed: dict[str, int] = field(default_factory=dict)
    latencies_ms: tuple[float, ...] = ()  # of the successful calls
    hung: int = 0  # calls still unanswered a grace period after the run (open loop)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th latency percentile of the successful calls (``nan`` without any)."""
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latencies_ms")
        data.update(
            throughput=round(self.throughput, 2),
            p50_ms=round(self.percentile(50), 3),
            p95_ms=round(self.percentile(95), 3),
            p99_ms=round(self.percentile(99), 3),
            requests=self.ok + sum(self.failed.values()),
        )
        return data


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (``0 <= q <= 100``) of ``values``, ``nan`` without values.

    Exactly ``numpy.percentile``'s default (linear interpolation at fractional rank
    ``q/100 * (n - 1)``, its lerp step included), the definition ``lmforge_core.stats`` uses
    for every server-side report; written out because this distribution depends on protobuf
    and grpcio only (``statistics.quantiles`` knows integer cut points only and rounds
    differently)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * (q / 100)
    below = math.floor(rank)
    if below >= len(ordered) - 1:
        return ordered[-1]
    a, b, t = ordered[below], ordered[below + 1], rank - below
    # numpy's _lerp: from the nearer end, so that t == 1 gives b exactly
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def _failure(exc: BaseException) -> str:
    return exc.code.name if isinstance(exc, LmforgeError) else type(exc).__name__


async def closed_loop(
    call: Call, concurrency: int, duration: float, warmup: float = 1.0
) -> LoadResult:
    """``concurrency`` workers call back to back; only calls started after ``warmup`` count."""
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + duration
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    counter = iter(range(1 << 62))

    async def worker() -> None:
        while (began := time.monotonic()) < stop_at:
            try:
                await call(next(counter))
            except Exception as exc:  # counted, the load goes on
                if began >= measure_from:
                    failures[_failure(exc)] += 1
                continue
            if began >= measure_from:
                latencies.append((time.monotonic() - began) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(
        "closed", concurrency, duration, len(latencies), dict(failures), tuple(latencies)
    )


async def open_loop(call: Call, rate: float, duration: float, grace: float = 10.0) -> LoadResult:
    """Start ``rate`` calls per second for ``duration`` seconds regardless of answers; a call
    still unanswered ``grace`` seconds after the last start counts as hung."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int) -> None:
        began = time.monotonic()
        try:
            await call(index)
        except Exception as exc:
            failures[_failure(exc)] += 1
            return
        latencies.append((time.monotonic() - began) * 1000)

    start = time.monotonic()
    total = int(rate * duration)
    for index in range(total):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    _, pending = await asyncio.wait(tasks, timeout=grace) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return LoadResult(
        "open", rate, duration, len(latencies), dict(failures), tuple(latencies), len(pending)
    )
