"""The worker: its loop and lifecycle, composing upkeep, intake, delivery and settling.

Each pass of the loop runs the upkeep tasks that are due, then claims what the free request
slots can carry; with nothing to do it sleeps until a delivery ends, a row is announced, the
pacer allows a request, or stop() is called. Every claimed row leaves ``inflight`` exactly once:
sent, rescheduled, dead, or released (or, past the shutdown deadline, left to its lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

import structlog

from forwarder import backoff
from forwarder.destination import Destination
from forwarder.errors import StoreError, StoreLost
from forwarder.holds import Holds
from forwarder.metrics import Metrics
from forwarder.pacing import PROBE_INITIAL_S, Pacer
from forwarder.store.base import OutboxStore
from forwarder.worker.calls import DeadlinePassed, Stopped
from forwarder.worker.config import Totals, WorkerConfig
from forwarder.worker.delivery import Delivery
from forwarder.worker.intake import Intake
from forwarder.worker.liveness import LEFT_LEASED, this_daemon
from forwarder.worker.rows import Rows
from forwarder.worker.runtime import tuned_interpreter
from forwarder.worker.settle import Settler
from forwarder.worker.shared import Shared
from forwarder.worker.upkeep import Upkeep

STORE_RETRY_S = 0.2  # the first wait after the database failed the loop (then doubling)
STORE_RETRY_MAX_S = 30.0  # the longest wait between attempts to reach a failing database
DRAIN_STORE_FAILURES = 5  # a drain run gives up after this many database failures in a row
# After the shutdown grace (FORWARDER_SHUTDOWN_GRACE), this long for the cancelled requests to
# end, the claims under way to return and every lease to be given back. Whatever the database
# has not done by then is left to the lease, so a blocked database cannot hold up a stop.
SHUTDOWN_FINISH_S = 5.0


class Worker:
    """Deliver the outbox until stopped (or, with *drain*, until nothing is due)."""

    def __init__(
        self,
        store: OutboxStore,
        destination: Destination,
        config: WorkerConfig,
        pacer: Pacer,
        metrics: Metrics,
        *,
        owner: str,
        drain: bool = False,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.shared = Shared(
            store=store,
            destination=destination,
            config=config,
            pacer=pacer,
            metrics=metrics,
            owner=owner,
            clock=clock,
            rng=rng or random.Random(),
            log=structlog.get_logger("forwarder.worker"),
            holds=Holds(PROBE_INITIAL_S, pacer.probe_max_s),
        )
        self.drain = drain
        #: Wall-clock time of the loop's last pass; /healthz reads it.
        self.last_tick = 0.0
        self.settler = Settler(self.shared, Rows(self.shared))
        self.delivery = Delivery(self.shared, self.settler)
        self.intake = Intake(self.shared, self.delivery, self.settler)
        self.upkeep = Upkeep(self.shared, this_daemon(owner))
        metrics.concurrency_limit.set(pacer.limit)

    @property
    def config(self) -> WorkerConfig:
        """What the worker was configured with."""
        return self.shared.config

    @property
    def totals(self) -> Totals:
        """What this run did, in events."""
        return self.shared.totals

    @property
    def holds(self) -> Holds:
        """The pixels held back while TikTok refuses them."""
        return self.shared.holds

    @property
    def paused_message(self) -> str | None:
        """TikTok's (or our) message for the current pause, for /readyz."""
        return self.settler.paused_message

    @property
    def stop_deadline(self) -> float | None:
        """time.monotonic() by which shutdown ends, once stop() was called."""
        return self.shared.calls.deadline

    def stop(self) -> None:
        """Stop claiming; in-flight requests finish within the grace period."""
        shared = self.shared
        first = not shared.stopping.is_set()
        # Set first: this runs in a signal callback, and a log write can fail (a closed pipe).
        shared.stopping.set()
        shared.wake.set()
        shared.calls.arm(shared.config.shutdown_grace_s + SHUTDOWN_FINISH_S)
        if first:
            with contextlib.suppress(OSError):
                shared.log.info("worker_stopping", in_flight=shared.pacer.in_flight)

    def probe_now(self) -> None:
        """Probe a paused destination, and every held pixel, at once instead of at the next
        probe time (the token was just reloaded): the next due row goes out as the probe."""
        shared = self.shared
        now = shared.clock()
        if shared.pacer.paused and shared.pacer.probe_at > now:
            shared.pacer.probe_at = now
        shared.holds.probe_now(now)
        shared.wake.set()

    async def run(self) -> Totals:
        """Run the loop until stop() (or, draining, until nothing is due); then shut down."""
        with tuned_interpreter():
            shared = self.shared
            shared.log.info("worker_started", owner=shared.owner, drain=self.drain)
            try:
                await self._loop()
            finally:
                await self._shutdown()
            shared.totals.paused_reason = shared.pacer.paused_reason
            return shared.totals

    async def _loop(self) -> None:
        shared, failures = self.shared, 0
        while not shared.stopping.is_set():
            self.last_tick = shared.clock()
            # Cleared before looking, so a delivery ending (or a row arriving) while we look
            # wakes the next sleep.
            shared.wake.clear()
            shared.store.new_rows.clear()
            try:
                progressed = await self.tick()
                failures = 0
            except Stopped:
                return
            except StoreLost as error:
                # The file went away or is read-only: only a restart can help.
                shared.log.error("store_lost", error=str(error))
                raise
            except Exception as error:  # the loop never dies on data or a flaky database
                failures += 1
                if self.drain and failures >= DRAIN_STORE_FAILURES:
                    raise
                await self._after_failure(error, failures)
                continue
            if progressed:
                continue
            if self.drain and not self.delivery.tasks:
                return
            await self.sleep(shared.pacer.wait_s(shared.clock(), shared.config.poll_interval_s))

    async def tick(self) -> bool:
        """One pass: the upkeep that is due, then a claim; return whether rows were taken."""
        now = self.shared.clock()
        await self.upkeep.run_due(now)
        return await self.intake.take(now)

    async def _after_failure(self, error: Exception, failures: int) -> None:
        """Log a failed pass and wait before the next, doubling per failure in a row."""
        shared = self.shared
        wait = backoff.wait_s(failures, STORE_RETRY_S, STORE_RETRY_MAX_S)
        if isinstance(error, StoreError):
            shared.log.error("store_failed", error=str(error), retry_in_s=round(wait, 2))
        else:
            shared.log.exception(
                "loop_failed", error=type(error).__name__, retry_in_s=round(wait, 2)
            )
        # Only stop() cuts this wait short: a delivery ending on the same failing store would
        # otherwise bring the next failure, and a doubled wait, at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shared.stopping.wait(), wait)

    async def sleep(self, seconds: float) -> None:
        """Wait until *seconds* pass, a delivery ends, a row arrives, or stop() is called."""
        shared = self.shared
        if seconds <= 0 or shared.stopping.is_set():
            return
        waits = {
            asyncio.ensure_future(shared.wake.wait()),
            asyncio.ensure_future(shared.store.new_rows.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _shutdown(self) -> None:
        """Let in-flight requests finish within the grace period, then give back every lease;
        all of it by the deadline, leaving the rest to the lease."""
        shared = self.shared
        shared.stopping.set()
        shared.wake.set()
        shared.calls.arm(shared.config.shutdown_grace_s + SHUTDOWN_FINISH_S)
        await self.delivery.wait(shared.calls.left_s() - SHUTDOWN_FINISH_S)
        await self.intake.wait(shared.calls.left_s())
        if shared.leased:
            await self._release_all()
        await self.upkeep.liveness.stop(holding=bool(shared.leased) or self.intake.claiming)
        shared.calls.cancel_all()
        totals = shared.totals
        shared.log.info(
            "worker_stopped", delivered=totals.delivered, dead=totals.dead, retried=totals.retried
        )

    async def _release_all(self) -> None:
        shared = self.shared
        ids = list(shared.leased)
        try:
            await self.settler.rows.release(ids, shared.clock())
            shared.log.info("leases_released", rows=len(ids))
        except DeadlinePassed:
            shared.log.warning(
                "shutdown_leases_left",
                rows=len(ids),
                note=f"the database did not answer in time: {LEFT_LEASED}",
            )
        except StoreError as error:
            shared.log.error(
                "release_failed",
                rows=len(ids),
                error=str(error),
                note=LEFT_LEASED,
            )
