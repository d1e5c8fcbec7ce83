"""Intake: claim due rows under a lease, build them into events, batch them, hand them over.

While the destination takes requests, one batch more than the free slots is claimed and built
ahead: the slot a finishing request frees then goes to a batch that is ready, instead of waiting
for a claim and the build of a thousand events. A claim asks for as many rows as the last claim's
events say one request carries (the destination's byte cap as much as its count), so a backlog
goes out in full requests rather than each claim's overflow in a small one of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from forwarder.destination import MALFORMED, Item, Refused
from forwarder.events import OutboxRow
from forwarder.store.base import Dead
from forwarder.worker.delivery import Delivery
from forwarder.worker.liveness import LEFT_LEASED
from forwarder.worker.settle import Settler
from forwarder.worker.shared import Shared

PREFETCH_BATCHES = 1  # batches claimed and built ahead of a free request slot
BUILD_SLICE = 100  # events built between two turns of the event loop
WARNED_LISTED = 10  # row ids and distinct warnings an event_warnings line lists at most
# Requests answered but whose outcome is still waiting to be written, beyond which nothing more
# is claimed until some are written. Sharing the SQLite file with an application, each write
# leaves the lock free for a moment after it; answers of small requests then came faster than
# they could be written, the queue of writes grew without bound, and the lease extension queued
# behind it stalled the loop. Waiting instead lets the next claim take more rows at once. The
# bound is twice the requests allowed in flight (FORWARDER_CONCURRENCY), and at least this.
SETTLE_BACKLOG_MIN = 8

Claim = asyncio.Future[list[OutboxRow]]


class Intake:
    """Owns the claims under way (one of them made ahead) and the building of events."""

    def __init__(self, shared: Shared, delivery: Delivery, settler: Settler) -> None:
        self.shared = shared
        self.delivery = delivery
        self.settler = settler
        self._ahead: Claim | None = None  # the next claim, made while a batch was built
        self._claims: set[Claim] = set()  # claims not yet returned
        self._ahead_limit = 0  # the rows the claim made ahead asked for
        #: Rows per claim: what one request carries, as the last claim's events measured it.
        self.fit = shared.config.max_events
        #: Answered requests waiting for their outcome to be written, at which claims wait.
        self.settle_backlog_max = max(SETTLE_BACKLOG_MIN, 2 * shared.pacer.max_limit)

    @property
    def claiming(self) -> bool:
        """Whether a claim is still under way (what it leases is ours until given back)."""
        return bool(self._claims)

    async def take(self, now: float) -> bool:
        """Claim what the free request slots can carry, build it and hand it to delivery;
        return whether any row was taken."""
        shared, pacer = self.shared, self.shared.pacer
        ahead = 0 if pacer.paused or now < pacer.throttled_until else PREFETCH_BATCHES
        free = pacer.slots(now) + ahead - self.delivery.queued
        # One request's worth per statement, however many slots are free: the loop comes
        # straight back for more, and the application's inserts wait for SQLite's write lock
        # one short statement at a time, not one claim of several thousand rows.
        limit = 1 if pacer.paused else self.fit
        asked, claimed_ahead = limit, self._ahead
        backlogged = self.delivery.settling() >= self.settle_backlog_max
        if claimed_ahead is None and backlogged:
            return False  # a delivery ending wakes the loop
        if claimed_ahead is not None:
            # Claimed while the last batch was built, when a slot was free for it: its rows
            # are ours and go out whatever the slots are now (they wait for one if need be).
            asked = self._ahead_limit
            try:
                rows = await shared.calls.unless_stopped(claimed_ahead)
            finally:
                if claimed_ahead.done():
                    self._ahead = None
        elif free <= 0:
            return False
        else:
            rows = await shared.calls.unless_stopped(self._claim(limit, now))
        if not rows:
            return False
        full = len(rows) >= asked
        if free > 1 and full and not backlogged and not shared.stopping.is_set():
            # Another full request fits: the database claims it while this one is built, so
            # the loop goes from one build to the next instead of waiting for each claim.
            self._ahead, self._ahead_limit = self._claim(limit, now), limit
        await self._build(rows, now)
        return True

    def _claim(self, limit: int, now: float) -> Claim:
        """Start a claim: its rows are ours from the moment it returns, and shutdown waits for
        it, within the deadline, to give them back."""
        shared = self.shared
        claim = asyncio.ensure_future(
            shared.store.claim(limit, shared.owner, now, now + shared.config.lease_s)
        )
        claim.add_done_callback(self._hold_claimed)
        self._claims.add(claim)
        claim.add_done_callback(self._claims.discard)
        shared.calls.track(claim)
        return claim

    def _hold_claimed(self, claim: Claim) -> None:
        """Count a claim's rows as ours as soon as it returns: if the loop fails for longer
        than a lease before it takes them, their leases are extended, and our own rescue does not
        hand them to the next claim while this one still holds them."""
        if not claim.cancelled() and claim.exception() is None:
            for row in claim.result():
                self.shared.leased[row.id] = row

    async def wait(self, within_s: float) -> None:
        """Wait for the claims under way (shutdown), so what they leased is given back."""
        self._ahead = None
        claims = set(self._claims)
        if not claims:
            return
        done, late = await asyncio.wait(claims, timeout=within_s)
        for claim in done:
            if not claim.cancelled() and (error := claim.exception()):
                # A failed claim holds no row: nothing to give back.
                self.shared.log.warning(
                    "claim_failed_at_shutdown", error=f"{type(error).__name__}: {error}"
                )
        if late:
            self.shared.log.warning(
                "shutdown_claims_left",
                claims=len(late),
                note=f"the rows they lease: {LEFT_LEASED}",
            )

    def _log_warnings(self, warned: dict[int, tuple[str, ...]]) -> None:
        """One line per claim, not per event: a backlog of converted rows would otherwise log a
        line per event for the same expected note (each sent row keeps its own in last_error)."""
        distinct = dict.fromkeys(w for warnings in warned.values() for w in warnings)
        self.shared.log.warning(
            "event_warnings",
            events=len(warned),
            row_ids=list(warned)[:WARNED_LISTED],
            warnings=list(distinct)[:WARNED_LISTED],
            more_warnings=max(0, len(distinct) - WARNED_LISTED),
        )

    async def _build(self, rows: Sequence[OutboxRow], now: float) -> None:
        """Build events, dead-letter the refused ones, and start a delivery per batch."""
        shared, destination = self.shared, self.shared.destination
        for row in rows:
            shared.leased[row.id] = row
        items: list[Item] = []
        dead: list[Dead] = []
        warned: dict[int, tuple[str, ...]] = {}
        for index, row in enumerate(rows):
            if index and not index % BUILD_SLICE:
                # Building a thousand events takes tens of milliseconds: let the answers and
                # the database results that came in meanwhile through, or the database thread
                # would wait for this loop instead of working alongside it.
                await asyncio.sleep(0)
            try:
                result = destination.build(row, now)
            except Exception as error:  # one unreadable row must not stop the others
                reason = (
                    f"the row could not be turned into a {destination.name} event "
                    f"({type(error).__name__})"
                )
                dead.append(Dead(row.id, MALFORMED, reason))
                continue
            if isinstance(result, Refused):
                dead.append(Dead(result.row_id, result.code, result.reason))
                continue
            items.append(result)
            if result.built.warnings:
                warned[row.id] = result.built.warnings
        if warned:
            self._log_warnings(warned)
        if items:
            self.fit = min(shared.config.max_events, destination.fitting(items))
        batches, oversize = destination.batches(items)
        dead.extend(Dead(refused.row_id, refused.code, refused.reason) for refused in oversize)
        if dead:
            await self.settler.rows.dead(dead, None, False, now)
        for batch in batches:
            self.delivery.start(batch)
