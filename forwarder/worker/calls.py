"""The worker's database calls: raced against the stop, and during shutdown against a deadline.

A database that blocks (the application holding SQLite's write lock, an operator locking the
table) must not hold a stop for longer than the service manager waits. The loop's calls give
way to stop(); the writes that record TikTok's answers are retried a few times and give way to
the shutdown deadline; whatever is still running at the end is cancelled and left to the lease.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from forwarder import backoff
from forwarder.errors import StoreError

SETTLE_TRIES = 3  # attempts at writing one request's outcome before leaving it to the lease
SETTLE_RETRY_S = 0.5  # the first wait between two such attempts (then doubling)

_T = TypeVar("_T")


class Stopped(Exception):
    """stop() came while the loop waited for the database: go straight to shutdown."""


class DeadlinePassed(StoreError):
    """The shutdown deadline passed before the database answered; the lease takes over."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a call nobody waits for any more as seen."""
    if not future.cancelled():
        future.exception()


class Calls:
    """Tracks the worker's database calls, and the one clock of its shutdown."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self._running: set[asyncio.Future[Any]] = set()
        #: time.monotonic() by which shutdown ends (set by arm()).
        self.deadline: float | None = None
        self._expired = asyncio.Event()
        self._log = structlog.get_logger("forwarder.worker")

    def arm(self, after_s: float) -> None:
        """Start the shutdown's clock, once: it ends *after_s* seconds from now."""
        if self.deadline is not None:
            return
        self.deadline = time.monotonic() + after_s
        asyncio.get_running_loop().call_later(after_s, self._expired.set)

    def left_s(self) -> float:
        """Seconds until the deadline (0 once passed; the deadline must be armed)."""
        return max(0.0, (self.deadline or time.monotonic()) - time.monotonic())

    def track(self, call: asyncio.Future[Any]) -> None:
        """Count *call* among those cancelled if still running when the worker stops."""
        if not call.done():
            self._running.add(call)
            call.add_done_callback(self._running.discard)
            call.add_done_callback(_retrieve)

    async def unless_stopped(self, call: Awaitable[_T]) -> _T:
        """Await a database call of the loop, unless stop() comes first: then raise Stopped.

        The call is not cancelled (it may be a claim whose rows shutdown gives back); it ends on
        its own, and a blocked one no longer holds the loop.
        """
        task = asyncio.ensure_future(call)
        if not task.done():
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not task.done():
                self.track(task)
                raise Stopped
        return task.result()

    async def settle(self, make: Callable[[], Awaitable[_T]]) -> _T:
        """Run a write that records an answer, retried a few times; not cancelled with its
        task, so a cancelled delivery still records what TikTok said (a lost write means a
        resend once the lease expires); after stop(), waited for until the deadline only."""

        async def attempts() -> _T:
            for attempt in range(1, SETTLE_TRIES + 1):
                try:
                    return await make()
                except StoreError as error:
                    if attempt == SETTLE_TRIES:
                        raise
                    self._log.warning("settle_retry", error=str(error), attempt=attempt)
                    await asyncio.sleep(backoff.wait_s(attempt, SETTLE_RETRY_S, 2 * SETTLE_RETRY_S))
            raise AssertionError("unreachable")

        write = asyncio.ensure_future(attempts())
        self.track(write)
        if not write.done():
            expired = asyncio.ensure_future(self._expired.wait())
            try:
                await asyncio.wait({write, expired}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                expired.cancel()
            if not write.done():
                raise DeadlinePassed
        return write.result()

    def cancel_all(self) -> None:
        """Stop waiting for every call still running: a blocked PostgreSQL query is cancelled
        and its connection can be closed; what it would have written is left to the lease."""
        for call in list(self._running):
            call.cancel()
