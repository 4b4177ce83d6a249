"""Keep a :class:`~triton_host.launcher.TritonServer` running: restart it when it dies.

A thread polls the server. When it has exited (crash, OOM kill, SIGKILL), the supervisor
cleans up after it (stubs, shared memory), waits a back-off (``initial_backoff_s``, doubling up
to ``max_backoff_s``) and restarts it on the same ports, so the gateway's channels reconnect
by themselves. More than ``max_restarts`` restarts within ``window_s`` seconds, or a restart
that fails that often, means something is broken for good: the supervisor gives up loudly
(an error log with the server's last lines) and calls ``on_give_up``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)


class Supervised(Protocol):
    """What the supervisor needs of a server (``TritonServer`` has it)."""

    @property
    def returncode(self) -> int | None: ...

    def is_running(self) -> bool: ...

    def cleanup(self) -> list[str]: ...

    def restart(self, ready_timeout: float = 120.0) -> None: ...

    def log_tail(self) -> str: ...


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 300.0
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    ready_timeout_s: float = 120.0
    poll_interval_s: float = 0.5


class TritonSupervisor:
    """Restarts ``server`` with back-off; see the module docstring. Use as a context manager
    or with :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        server: Supervised,
        policy: RestartPolicy | None = None,
        *,
        on_give_up: Callable[[str], None] | None = None,
        on_restart: Callable[[int], None] | None = None,
        sleep: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.policy = policy or RestartPolicy()
        self._on_give_up = on_give_up
        self._on_restart = on_restart
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait  # returns True when stopping
        self._clock = clock
        self._restarts: deque[float] = deque()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.gave_up: str | None = None

    def start(self) -> TritonSupervisor:
        self._thread = threading.Thread(target=self.run, name="triton-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> TritonSupervisor:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def run(self) -> None:
        """Watch until :meth:`stop` or until giving up (the thread's body)."""
        backoff = self.policy.initial_backoff_s
        while not self._sleep(self.policy.poll_interval_s):
            if self.server.is_running():
                if self._restarts and self._clock() - self._restarts[-1] > self.policy.window_s:
                    backoff = self.policy.initial_backoff_s  # stable again
                continue
            logger.error(
                "tritonserver died (exit code %s); last lines:\n%s",
                self.server.returncode,
                self.server.log_tail(),
            )
            self.server.cleanup()
            while not self._stopping.is_set():
                now = self._clock()
                while self._restarts and now - self._restarts[0] > self.policy.window_s:
                    self._restarts.popleft()
                if len(self._restarts) >= self.policy.max_restarts:
                    self._give_up(
                        f"tritonserver failed {len(self._restarts)} times within "
                        f"{self.policy.window_s:.0f} s; giving up"
                    )
                    return
                logger.warning("restarting tritonserver in %.1f s", backoff)
                if self._sleep(backoff):
                    return
                self._restarts.append(self._clock())
                backoff = min(backoff * 2, self.policy.max_backoff_s)
                try:
                    self.server.restart(self.policy.ready_timeout_s)
                except Exception as exc:  # any start failure counts as one
                    logger.error("restarting tritonserver failed: %s", exc)
                    self.server.cleanup()
                    continue
                self.restarts += 1
                logger.warning("tritonserver restarted (%d so far)", self.restarts)
                if self._on_restart is not None:
                    self._on_restart(self.restarts)
                break

    def _give_up(self, reason: str) -> None:
        self.gave_up = reason
        logger.critical("%s\n--- tritonserver log (tail) ---\n%s", reason, self.server.log_tail())
        if self._on_give_up is not None:
            self._on_give_up(reason)
