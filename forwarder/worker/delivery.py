"""Delivery: one task per request; a request slot from the pacer, the send, what the answer means.

A batch waits for a slot while the destination takes requests; a pause or a throttle sends its
rows back to pending instead, and a stop gives them back. A rejected part of a request comes
back as smaller batches, sent by the same task one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from forwarder.destination import Batch
from forwarder.metrics import code_label
from forwarder.outcome import Outcome
from forwarder.store.base import Retry
from forwarder.worker.rows import THROTTLE_SPREAD_S
from forwarder.worker.settle import Settler
from forwarder.worker.shared import Shared

HELD_MESSAGE = "held back while the destination is paused or throttled"


class Delivery:
    """Owns the delivery tasks, the request slots and the count of batches waiting for one."""

    def __init__(self, shared: Shared, settler: Settler) -> None:
        self.shared = shared
        self.settler = settler
        #: Every delivery task not yet ended (sending, waiting for a slot, or settling).
        self.tasks: set[asyncio.Task[None]] = set()
        #: Batches waiting for their first request slot.
        self.queued = 0
        self._slot_freed = asyncio.Condition()

    def start(self, batch: Batch) -> None:
        """Deliver *batch* in a task of its own."""
        self.queued += 1
        task = asyncio.create_task(self._deliver(batch))
        self.tasks.add(task)
        task.add_done_callback(self._ended)

    def settling(self) -> int:
        """Answered requests whose outcome waits to be written (or whose rejected part waits
        for a slot)."""
        return len(self.tasks) - self.queued - self.shared.pacer.in_flight

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.shared.wake.set()
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self.shared.log.error("delivery_task_failed", error=f"{type(error).__name__}: {error}")

    async def _deliver(self, batch: Batch) -> None:
        """Send *batch*, then every sub-batch a rejection leaves to resend."""
        queue = [batch]
        queued = True
        current = batch
        try:
            while queue:
                current = queue.pop()
                allowed = await self._through_holds(current)
                if allowed is None or not await self._acquire(allowed):
                    continue
                current = allowed
                if queued:
                    queued, self.queued = False, self.queued - 1
                outcome = await self._send(current)
                await self.settler.settle(current, outcome, queue)
        except Exception:
            # The outcome could not be written: stop extending these leases, so the rows
            # return to pending when they lapse and are sent again (TikTok deduplicates).
            # Cancellation (shutdown) is not caught here: shutdown releases the rows at once.
            for pending in [current, *queue]:
                for row_id in pending.row_ids():
                    self.shared.leased.pop(row_id, None)
            raise
        finally:
            if queued:
                self.queued -= 1

    async def _through_holds(self, batch: Batch) -> Batch | None:
        """What of *batch* may go out: all of it, unless its pixel is held. Then one event as
        the pixel's probe when one is due, and the rest back to pending until the next."""
        shared, pixel = self.shared, batch.route.pixel
        hold = shared.holds.held.get(pixel)
        if hold is None:
            return batch
        now = shared.clock()
        probe = shared.holds.take_probe(pixel, now)
        send, back = (batch.items[:1], batch.items[1:]) if probe else ((), batch.items)
        retries = [
            Retry(item.built.row_id, hold.probe_at + shared.rng.uniform(0, THROTTLE_SPREAD_S))
            for item in back
        ]
        await self.settler.rows.reschedule_as(
            retries, hold.code, hold.message, None, False, now, "held"
        )
        return Batch(batch.route, send) if send else None

    async def _acquire(self, batch: Batch) -> bool:
        """Take a request slot; on stop, throttle or pause give the rows back instead."""
        shared, pacer = self.shared, self.shared.pacer
        async with self._slot_freed:
            while True:
                now = shared.clock()
                if shared.stopping.is_set():
                    held = False
                    break
                if pacer.slots(now) > 0:
                    pacer.started()
                    shared.metrics.in_flight.set(pacer.in_flight)
                    return True
                if pacer.paused or now < pacer.throttled_until:
                    held = True
                    break
                # Every slot is busy: wait for a request to finish (or a throttle to end).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._slot_freed.wait(), timeout=shared.config.poll_interval_s
                    )
        if not held:
            await self.settler.rows.release(batch.row_ids(), now)
            return False
        at = pacer.resume_at(now)
        retries = [Retry(i, at + shared.rng.uniform(0, THROTTLE_SPREAD_S)) for i in batch.row_ids()]
        await self.settler.rows.reschedule_as(
            retries, "held", HELD_MESSAGE, None, False, now, "held"
        )
        return False

    async def _send(self, batch: Batch) -> Outcome:
        """Send one batch through the destination, which says what the answer means."""
        shared = self.shared
        started = time.perf_counter()
        shared.metrics.batch_events.observe(len(batch.items))
        try:
            outcome = await shared.destination.send(batch)
        finally:
            shared.pacer.finished()
            shared.metrics.in_flight.set(shared.pacer.in_flight)
            shared.wake.set()
            async with self._slot_freed:
                self._slot_freed.notify_all()
        shared.totals.requests += 1
        shared.metrics.request_seconds.observe(time.perf_counter() - started)
        shared.metrics.responses.labels(code_label(outcome.code), outcome.verdict.value).inc()
        return outcome

    async def wait(self, within_s: float) -> None:
        """Let the delivery tasks end within *within_s*; cancel the rest and wait for them
        within what is left of the shutdown."""
        if not self.tasks:
            return
        _, late = await asyncio.wait(set(self.tasks), timeout=max(0.0, within_s))
        for task in late:
            task.cancel()
        if late:
            self.shared.log.warning("shutdown_cancelled_requests", requests=len(late))
            await asyncio.wait(late, timeout=self.shared.calls.left_s())
