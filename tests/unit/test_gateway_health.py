"""HealthMonitor's polling loop."""

from __future__ import annotations

import asyncio

from gateway.health import HealthMonitor
from tests.eventually import eventually


class Readiness:
    """A readiness check the test flips; counts how often it ran."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.ready


async def test_stop_returns_when_cancelled_just_as_a_readiness_check_finishes() -> None:
    # The check answers at once, so stop() often lands while a check has just finished:
    # asyncio.wait_for on Python 3.11 swallowed that cancellation and stop() hung.
    for _ in range(20):
        monitor = HealthMonitor(Readiness(), ["svc"], interval=0.0)
        await monitor.start()
        await asyncio.sleep(0.005)
        async with asyncio.timeout(2.0):
            await monitor.stop()


async def test_monitor_reports_serving_once_the_check_passes_and_follows_it() -> None:
    check = Readiness()
    monitor = HealthMonitor(check, ["svc"], interval=0.01)
    await monitor.start()
    assert await monitor.check_once() is True
    assert monitor.serving
    check.ready = False
    assert await monitor.check_once() is False
    assert not monitor.serving
    await monitor.stop()


async def test_the_poll_loop_keeps_checking_by_itself() -> None:
    check = Readiness(ready=False)
    transitions: list[bool] = []
    monitor = HealthMonitor(check, ["svc"], interval=0.01, on_change=transitions.append)
    await monitor.start()
    await eventually(lambda: check.calls >= 3)
    check.ready = True
    await eventually(lambda: monitor.serving, timeout=2.0)
    await monitor.stop()
    assert check.calls >= 3
    assert transitions[-1] is True and False in transitions


async def test_a_failing_check_means_not_serving_not_a_crash() -> None:
    async def broken() -> bool:
        raise RuntimeError("backend exploded")

    monitor = HealthMonitor(broken, ["svc"], interval=0.01)
    await monitor.start()
    assert await monitor.check_once() is False
    await monitor.stop()
