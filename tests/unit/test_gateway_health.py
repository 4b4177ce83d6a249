"""HealthMonitor's polling loop."""

from __future__ import annotations

import asyncio

from gateway.fake_backend import FakeBackend
from gateway.health import HealthMonitor


async def test_stop_returns_when_cancelled_just_as_a_readiness_check_finishes() -> None:
    # The fake answers readiness at once, so stop() often lands while a check has just
    # finished: asyncio.wait_for on Python 3.11 swallowed that cancellation and stop() hung.
    for _ in range(20):
        monitor = HealthMonitor(FakeBackend(), [], ["svc"], interval=0.0)
        await monitor.start()
        await asyncio.sleep(0.005)
        async with asyncio.timeout(2.0):
            await monitor.stop()


async def test_monitor_reports_serving_once_backend_and_models_are_ready() -> None:
    backend = FakeBackend()
    monitor = HealthMonitor(backend, [], ["svc"], interval=0.01)
    await monitor.start()
    assert await monitor.check_once() is True
    assert monitor.serving
    backend.server_ready = False
    assert await monitor.check_once() is False
    assert not monitor.serving
    await monitor.stop()
