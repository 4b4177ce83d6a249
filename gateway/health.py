"""Standard gRPC health checking (``grpc.health.v1``) driven by a readiness check.

:class:`HealthMonitor` owns an asyncio ``HealthServicer`` and a background task that runs a
readiness check every ``interval`` seconds (the gateway's: every route has a ready deployment
on a ready Triton). The overall status (``""``) and the inference service's status are
``SERVING`` only while the check passes; until the first check completes they are
``NOT_SERVING``; after :meth:`HealthMonitor.stop` they stay ``NOT_SERVING`` for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health, health_pb2

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    def __init__(
        self,
        check: Callable[[], Awaitable[bool]],
        service_names: Sequence[str],
        *,
        interval: float = 0.5,
        check_timeout: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.servicer = health.aio.HealthServicer()
        self._check = check
        self._names = ("", *service_names)
        self._interval = interval
        self._check_timeout = check_timeout
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._serving: bool | None = None
        self._stopping = False

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    async def _publish(self, serving: bool) -> None:
        if serving == self._serving:
            return
        if self._serving is not None:
            logger.info("health: %s", "SERVING" if serving else "NOT_SERVING")
        self._serving = serving
        status = SERVING if serving else NOT_SERVING
        for name in self._names:
            await self.servicer.set(name, status)
        if self._on_change is not None:
            self._on_change(serving)

    async def check_once(self) -> bool:
        """Run the check now and publish the result; returns whether it is serving."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the check finishes, and stop() would then wait forever.
            async with asyncio.timeout(self._check_timeout):
                serving = await self._check()
        except Exception as exc:  # a failing check means "not ready", never a crash
            logger.debug("readiness check failed: %r", exc)
            serving = False
        await self._publish(serving)
        return serving

    async def _run(self) -> None:
        while not self._stopping:
            await self.check_once()
            if not self._stopping:
                await asyncio.sleep(self._interval)

    async def start(self) -> None:
        await self._publish(False)
        self._task = asyncio.create_task(self._run(), name="lmforge-health")

    async def stop(self) -> None:
        """Stop polling and report NOT_SERVING for good (graceful shutdown)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.servicer.enter_graceful_shutdown()
