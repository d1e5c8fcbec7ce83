"""Upkeep: the small periodic tasks the loop runs between claims, each when it is due.

- start (once, before the first claim): register this daemon, rescue the rows of earlier ones
  whose process is gone (liveness.py);
- extend leases: of the rows this worker still holds, long before the lease runs out;
- rescue: return the rows of daemons whose heartbeat stopped, every heartbeat interval, and the
  rows whose lease expired, every quarter lease, to pending (liveness.py);
- prune: delete sent rows past the retention, a batch per turn (and, hourly, old records of
  daemons);
- shared throttle: honour a rate-limit pause another daemon on the same token recorded;
- summary: one info line a minute on what was delivered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from forwarder.store.base import Daemon
from forwarder.worker.liveness import DAEMONS_PRUNE_EVERY_S, Liveness
from forwarder.worker.shared import Shared

PRUNE_EVERY_S = 60.0  # how often sent rows past the retention are deleted
# Rows deleted per turn of the loop, which waits for them: while an application shares the SQLite
# file, larger turns stalled every delivery while a backlog of old rows was pruned; this many
# every PRUNE_AGAIN_S delete as many a second in short stalls.
PRUNE_BATCH = 1000
PRUNE_AGAIN_S = 0.2  # after a full batch: more rows are waiting
SHARED_STATE_EVERY_S = 1.0  # how often a throttle another daemon recorded is read
SUMMARY_EVERY_S = 60.0  # how often an info line sums up delivery, while there is any


@dataclass
class Periodic:
    """A named task due every *every_s* seconds (the first time at once)."""

    name: str
    every_s: float
    run: Callable[[float], Awaitable[float | None]]  # returns a sooner next interval, or None
    next_at: float = 0.0

    async def run_if_due(self, now: float) -> None:
        """Run the task if it is due, and plan its next run."""
        if now < self.next_at:
            return
        self.next_at = now + self.every_s
        sooner = await self.run(now)
        if sooner is not None:
            self.next_at = now + sooner


class Upkeep:
    """Owns the periodic tasks' schedules and what they carry between runs."""

    def __init__(self, shared: Shared, daemon: Daemon) -> None:
        self.shared = shared
        self.liveness = Liveness(shared, daemon)
        quarter_lease = shared.config.lease_s / 4
        self.tasks = (
            Periodic("extend_leases", quarter_lease, self._extend_leases),
            Periodic("rescue_silent", shared.config.heartbeat_s, self.liveness.rescue_silent),
            Periodic("rescue_expired", quarter_lease, self.liveness.rescue_expired),
            Periodic("prune", PRUNE_EVERY_S, self._prune),
            Periodic("prune_daemons", DAEMONS_PRUNE_EVERY_S, self.liveness.prune),
            Periodic("summary", SUMMARY_EVERY_S, self._summarise),
            Periodic("shared_throttle", SHARED_STATE_EVERY_S, self._shared_throttle),
        )
        self._pruned = 0  # rows pruned since the last sent_rows_pruned line
        self._summarised = False  # the first summary only sets the baseline
        self._summary_from = (0, 0, 0)  # totals (delivered, retried, dead) at the last summary

    async def run_due(self, now: float) -> None:
        """Start this daemon's liveness if not yet done, then run every task that is due."""
        if not self.liveness.started:
            await self.liveness.start(now)
        for task in self.tasks:
            await task.run_if_due(now)

    async def _extend_leases(self, now: float) -> None:
        # Rows waiting for a slot or for a bisection step are still ours: extend their leases
        # long before they run out, so no daemon (this one included) rescues them.
        shared = self.shared
        if shared.leased:
            until = now + shared.config.lease_s
            await shared.calls.unless_stopped(
                shared.store.extend_lease(list(shared.leased), shared.owner, until)
            )

    async def _prune(self, now: float) -> float | None:
        shared = self.shared
        before = now - shared.config.retention_s
        pruned = await shared.calls.unless_stopped(shared.store.prune_sent(before, PRUNE_BATCH))
        # One line per catch-up (or per 100 batches of a long one), not one per batch.
        self._pruned += pruned
        if self._pruned and (pruned < PRUNE_BATCH or self._pruned >= 100 * PRUNE_BATCH):
            shared.log.info("sent_rows_pruned", rows=self._pruned)
            self._pruned = 0
        # A full batch means more is waiting: come back soon, between claims.
        return PRUNE_AGAIN_S if pruned == PRUNE_BATCH else None

    async def _shared_throttle(self, now: float) -> None:
        """Honour a rate-limit pause another daemon sharing this token recorded."""
        shared = self.shared
        state = await shared.calls.unless_stopped(shared.store.get_state("throttle"))
        if not state or state.get("owner") == shared.owner:
            return
        until = state.get("until")
        if isinstance(until, (int, float)) and until > max(now, shared.pacer.throttled_until):
            shared.pacer.throttled_until = float(until)
            shared.log.info("shared_throttle", resume_in_s=round(until - now, 2))

    async def _summarise(self, now: float) -> None:
        """Log what was delivered since the last summary, if anything was."""
        shared, totals = self.shared, self.shared.totals
        current = (totals.delivered, totals.retried, totals.dead)
        delivered, retried, dead = (a - b for a, b in zip(current, self._summary_from, strict=True))
        self._summary_from = current
        codes, shared.codes = shared.codes, Counter()
        first, self._summarised = not self._summarised, True
        if first or not (delivered or retried or dead):
            return
        shared.log.info(
            "delivery_summary",
            window_s=SUMMARY_EVERY_S,
            delivered=delivered,
            retried=retried,
            dead=dead,
            codes=dict(codes.most_common()),
        )
