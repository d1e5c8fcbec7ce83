"""Waiting without sleeping: a bounded poll, and a clock the test moves by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class ManualClock:
    """A wall clock the test moves by hand, so retries come due without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0, what: str = ""
) -> None:
    """Poll *condition* until it holds; fail after *timeout* seconds (a bound, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.02)
