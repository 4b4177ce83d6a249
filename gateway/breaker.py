"""Per-deployment circuit breaker: stop sending to a deployment that keeps failing, probe it
again after a while, resume when the probe succeeds.

``closed`` → after ``failures`` consecutive failures ``open`` (rejects) → after
``open_seconds`` ``half_open`` (exactly one probe at a time) → a successful probe closes it, a
failed one re-opens it for another ``open_seconds``. Thread-safe; the clock is injectable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from gateway.routing_config import BreakerConfig

logger = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure breaker: closed → open → half_open (one probe) → closed or open.

    :meth:`allow` hands out the half-open probe; :attr:`available` only looks. A probe that
    reports nothing within ``open_seconds`` is presumed lost and another one is allowed.
    """

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self.config = config or BreakerConfig()
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_since: float | None = None

    def _state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "open" if now < self._opened_at + self.config.open_seconds else "half_open"

    def _probe_free(self, now: float) -> bool:
        return self._probe_since is None or now >= self._probe_since + self.config.open_seconds

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state(self._clock())

    @property
    def available(self) -> bool:
        """Whether :meth:`allow` would say yes now (without taking the probe)."""
        with self._lock:
            now = self._clock()
            state = self._state(now)
            return state == "closed" or (state == "half_open" and self._probe_free(now))

    def allow(self) -> bool:
        """Whether a request may go through now; in half_open this takes the one probe."""
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "closed":
                return True
            if state == "open" or not self._probe_free(now):
                return False
            self._probe_since = now
            return True

    def record_success(self) -> None:
        with self._lock:
            state = self._state(self._clock())
            if state == "open":
                return
            if state == "half_open":
                logger.info("breaker %s closed: probe succeeded", self.name)
            self._failures = 0
            self._opened_at = None
            self._probe_since = None

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "open":
                return
            self._failures += 1
            if state == "half_open" or self._failures >= self.config.failures:
                logger.warning(
                    "breaker %s open for %.1fs after %d consecutive failures",
                    self.name,
                    self.config.open_seconds,
                    self._failures,
                )
                self._opened_at = now
                self._probe_since = None

    def reconfigured(self, config: BreakerConfig) -> CircuitBreaker:
        """A breaker with new settings and this one's current state."""
        copy = CircuitBreaker(config, clock=self._clock, name=self.name)
        with self._lock:
            copy._failures = self._failures
            copy._opened_at = self._opened_at
            copy._probe_since = self._probe_since
        return copy
