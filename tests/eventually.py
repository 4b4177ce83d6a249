"""Wait for a condition instead of sleeping a fixed time and hoping it holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,
    interval: float = 0.01,
) -> None:
    """Return once ``condition()`` (sync or async) is true; ``TimeoutError`` after
    ``timeout`` seconds naming the condition."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{getattr(condition, '__name__', condition)!r} still false after {timeout} s"
            )
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
) -> None:
    """:func:`eventually` for code without an event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{getattr(condition, '__name__', condition)!r} still false after {timeout} s"
            )
        time.sleep(interval)
