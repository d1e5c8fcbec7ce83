"""The delivery loop: claim due rows, build and batch them, send, classify, settle.

The worker sees the store and the sender only through their interfaces. Every claimed row
leaves ``inflight`` exactly once, through one of: sent, rescheduled, dead, or released.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import sys
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from prometheus_client import Histogram

from forwarder import backoff, payload
from forwarder.batching import Batch, Item, make_batches
from forwarder.classify import ApiResponse, Outcome, Verdict, classify, classify_transport
from forwarder.errors import StoreError, StoreLost, TransportError
from forwarder.events import OutboxRow
from forwarder.holds import Holds, Scope, scope
from forwarder.metrics import Metrics, code_label, event_label, pause_label
from forwarder.pacing import PROBE_INITIAL_S, STORM_PREFIX, Pacer
from forwarder.store.base import Dead, OutboxStore, Retry

PRUNE_EVERY_S = 60.0  # how often sent rows past the retention are deleted
# Rows deleted per turn of the loop, which waits for them: while an application shares the SQLite
# file, 5,000 took 110-160 ms (200 per transaction, each followed by a pause for the application),
# a stall of every delivery once a second while a backlog of old rows was pruned. 1,000 rows
# every 0.2 s delete as many a second in stalls a fifth as long.
PRUNE_BATCH = 1000
PRUNE_AGAIN_S = 0.2  # after a full batch: more rows are waiting
SHARED_STATE_EVERY_S = 1.0  # how often a throttle another daemon recorded is read
SUMMARY_EVERY_S = 60.0  # how often an info line sums up delivery, while there is any
STORE_RETRY_MAX_S = 30.0  # the longest wait between attempts to reach a failing database
SETTLE_TRIES = 3  # attempts at writing one request's outcome before leaving it to the lease
# After the shutdown grace (FORWARDER_SHUTDOWN_GRACE), this long for the cancelled requests to
# end, the claims under way to return and every lease to be given back. Whatever the database
# has not done by then is left to the lease, so a blocked database cannot hold up a stop.
SHUTDOWN_FINISH_S = 5.0
DRAIN_STORE_FAILURES = 5  # a drain run gives up after this many database failures in a row
THROTTLE_SPREAD_S = 1.0  # rows held back by a throttle come due spread over this window
PREFETCH_BATCHES = 1  # batches claimed and built ahead of a free request slot
BUILD_SLICE = 100  # events built between two turns of the event loop
# Requests answered but whose outcome is still waiting to be written, beyond which the loop
# claims nothing more until some are written. Sharing the SQLite file with an application, each
# write leaves the lock free for 2-5 ms after it; answers of small requests (1,000 events a
# second arriving a few at a time) then came faster than they could be written, the queue of
# writes grew without bound, and the heartbeat queued behind it stopped the loop for a second
# every 15 s. Waiting instead lets the next claim take more rows at once. The bound is twice the
# requests allowed in flight (FORWARDER_CONCURRENCY), and at least this.
SETTLE_BACKLOG_MIN = 8
# While a worker runs, the young generation is collected after this many net allocations
# instead of CPython's 700. A claim of 1,000 events allocates some 15,000 objects that live
# until their request is answered: at 700 the collector ran some twenty times per request,
# promoting every in-flight event to the older generations, and took a quarter of a drain's
# CPU. Garbage without cycles is freed at once either way; this only delays finding cycles.
GC_YOUNG_THRESHOLD = 50_000
# While a worker runs, a thread waiting for the GIL asks for it after this long instead of
# CPython's 5 ms. The database thread needs the GIL back after every SQLite statement (its C
# code runs without it); while the loop builds events, each such wait took up to 5 ms, which
# made a 10 ms settle take 45 ms and kept a claim made ahead from finishing in time.
SWITCH_INTERVAL_S = 0.0005
STORM_HINT = (
    "TikTok accepted none of the last requests: nothing is dead-lettered; one event probes at "
    "a growing interval and delivery resumes once TikTok accepts it"
)


_T = TypeVar("_T")


class _Stopped(Exception):
    """stop() came while the loop waited for the database: go straight to shutdown."""


class _DeadlinePassed(StoreError):
    """The shutdown deadline passed before the database answered; the lease takes over."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a database call nobody waits for any more as seen."""
    if not future.cancelled():
        future.exception()


def observe_all(histogram: Histogram, seconds: list[float]) -> None:
    """``histogram.observe(max(0.0, s))`` for each of *seconds*, one lock per bucket touched.

    Observing a thousand latencies one by one took a few percent of a drain's CPU. This counts
    them per bucket as Histogram.observe would (the first bucket whose bound is at least the
    value) and adds the counts and the sum through the same values; a prometheus_client without
    those internals gets the plain loop.
    """
    clamped = [value if value > 0.0 else 0.0 for value in seconds]  # max(0.0, value)
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if (
        getattr(histogram, "_labelnames", True)
        or bounds is None
        or buckets is None
        or total is None
        or len(bounds) != len(buckets)
    ):
        for value in clamped:
            histogram.observe(value)
        return
    counts = Counter([bisect_left(bounds, value) for value in clamped])
    total.inc(sum(clamped))
    for index, count in counts.items():
        buckets[index].inc(count)


class _Saved:
    """The interpreter settings to restore once the last running worker stops (runs may
    overlap)."""

    running = 0
    gc_threshold: tuple[int, int, int] = gc.get_threshold()
    switch_interval = sys.getswitchinterval()


@contextlib.contextmanager
def _tuned_interpreter() -> Iterator[None]:
    """GC_YOUNG_THRESHOLD and SWITCH_INTERVAL_S while a worker runs."""
    if _Saved.running == 0:
        _Saved.gc_threshold = gc.get_threshold()
        _Saved.switch_interval = sys.getswitchinterval()
        young, *older = _Saved.gc_threshold
        gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), *older)
        sys.setswitchinterval(min(_Saved.switch_interval, SWITCH_INTERVAL_S))
    _Saved.running += 1
    try:
        yield
    finally:
        _Saved.running -= 1
        if _Saved.running == 0:
            gc.set_threshold(*_Saved.gc_threshold)
            sys.setswitchinterval(_Saved.switch_interval)


class Sender(Protocol):
    """Sends one request body to TikTok (forwarder.tiktok.TikTokClient)."""

    async def send(self, body: bytes) -> ApiResponse:
        """POST *body*; raise TransportError when no answer came."""
        ...


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the worker needs from the settings."""

    build: payload.BuildOptions
    backoff: backoff.BackoffPolicy
    max_events: int = 1000
    max_bytes: int = 1_000_000
    poll_interval_s: float = 0.2
    lease_s: float = 60.0
    shutdown_grace_s: float = 10.0
    unknown_code_max_attempts: int = 5
    unknown_code_min_delay_s: float = 60.0  # the floor of an unknown code's retry delay
    ambiguous_code_max_answers: int = 3
    storm_answers: int = 3  # failed answers in a row that pause delivery (the storm rule)
    retention_s: float = 7 * 86400.0
    scrub: bool = True  # replace a sent row's payload by what was sent (hashed identifiers)


@dataclass
class Totals:
    """What one run did, in events."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    rescued: int = 0
    requests: int = 0
    paused_reason: str | None = None


class Worker:
    """Deliver the outbox to TikTok until stopped (or, with *drain*, until nothing is due)."""

    def __init__(
        self,
        store: OutboxStore,
        sender: Sender,
        config: WorkerConfig,
        pacer: Pacer,
        metrics: Metrics,
        *,
        owner: str,
        drain: bool = False,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.config = config
        self.pacer = pacer
        self.metrics = metrics
        self.owner = owner
        self.drain = drain
        self.clock = clock
        self.rng = rng or random.Random()
        self.totals = Totals()
        #: Wall-clock time of the loop's last pass; /healthz reads it.
        self.last_tick = 0.0
        self._log = structlog.get_logger("forwarder.worker")
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()  # the loop: a task finished, or stop()
        self._slot_freed = asyncio.Condition()  # batches waiting for a request slot
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued = 0  # batches waiting for a free request slot
        self._claim_ahead: asyncio.Future[list[OutboxRow]] | None = None  # the next claim
        self._claims: set[asyncio.Future[list[OutboxRow]]] = set()  # claims not yet returned
        self._calls: set[asyncio.Future[Any]] = set()  # database calls not yet returned
        #: time.monotonic() by which shutdown ends (set by stop(), or when a drain ends).
        self.stop_deadline: float | None = None
        self._expired = asyncio.Event()  # the deadline has passed
        #: Answered requests waiting for their outcome to be written, at which claims wait.
        self.settle_backlog_max = max(SETTLE_BACKLOG_MIN, 2 * pacer.max_limit)
        self._leased: dict[int, OutboxRow] = {}
        self._next_rescue = 0.0
        self._next_heartbeat = 0.0
        self._next_prune = 0.0
        self._pruned = 0  # rows pruned since the last sent_rows_pruned line
        self._next_shared = 0.0
        self._next_summary = 0.0
        self._summary_from = (0, 0, 0)  # totals (delivered, retried, dead) at the last summary
        self._codes: Counter[str] = Counter()  # events per answer code since the last summary
        self._was_paused: str | None = pacer.paused_reason  # what was last published
        #: TikTok's (or our) message for the current pause; /readyz shows it with the reason.
        self.paused_message: str | None = None
        #: Pixels a row names itself whose rows wait while TikTok refuses them (holds.py).
        self.holds = Holds(PROBE_INITIAL_S, pacer.probe_max_s)
        # A previous run may have left "paused" on record: the first answer publishes anew.
        self._state_published = False
        metrics.concurrency_limit.set(pacer.limit)

    def stop(self) -> None:
        """Stop claiming; in-flight requests finish within the grace period."""
        first = not self._stopping.is_set()
        # Set first: this runs in a signal callback, and a log write can fail (a closed pipe).
        self._stopping.set()
        self._wake.set()
        self._arm_deadline()
        if first:
            with contextlib.suppress(OSError):
                self._log.info("worker_stopping", in_flight=self.pacer.in_flight)

    def _arm_deadline(self) -> None:
        """Start the one clock of the shutdown: the grace, then SHUTDOWN_FINISH_S."""
        if self.stop_deadline is not None:
            return
        after_s = self.config.shutdown_grace_s + SHUTDOWN_FINISH_S
        self.stop_deadline = time.monotonic() + after_s
        asyncio.get_running_loop().call_later(after_s, self._expired.set)

    def probe_now(self) -> None:
        """Probe a paused destination at once instead of at its next probe time (the token
        was just reloaded): the next due row goes out as the probe."""
        now = self.clock()
        if self.pacer.paused and self.pacer.probe_at > now:
            self.pacer.probe_at = now
        self.holds.probe_now(now)
        self._wake.set()

    async def run(self) -> Totals:
        """Run the loop until stop() (or, draining, until nothing is due); then shut down."""
        with _tuned_interpreter():
            return await self._run()

    async def _run(self) -> Totals:
        self._log.info("worker_started", owner=self.owner, drain=self.drain)
        failures = 0
        try:
            while not self._stopping.is_set():
                self.last_tick = self.clock()
                # Cleared before looking, so a task finishing (or a row arriving) while we look
                # wakes the next sleep.
                self._wake.clear()
                self.store.new_rows.clear()
                try:
                    progressed = await self._tick()
                    failures = 0
                except _Stopped:
                    break
                except StoreLost as error:
                    # The file went away or is read-only: only a restart can help.
                    self._log.error("store_lost", error=str(error))
                    raise
                except Exception as error:  # the loop never dies on data or a flaky database
                    failures += 1
                    wait = min(STORE_RETRY_MAX_S, 0.1 * 2 ** min(failures, 10))
                    if isinstance(error, StoreError):
                        self._log.error("store_failed", error=str(error), retry_in_s=round(wait, 2))
                    else:
                        self._log.exception(
                            "loop_failed", error=type(error).__name__, retry_in_s=round(wait, 2)
                        )
                    if self.drain and failures >= DRAIN_STORE_FAILURES:
                        raise
                    # Only stop() cuts this wait short: a task finishing on the same failing
                    # store would otherwise bring the next failure, and a doubled wait, at once.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), wait)
                    continue
                if progressed:
                    continue
                if self.drain and not self._tasks:
                    break
                await self._sleep(self.pacer.wait_s(self.clock(), self.config.poll_interval_s))
        finally:
            await self._shutdown()
        self.totals.paused_reason = self.pacer.paused_reason
        return self.totals

    async def _tick(self) -> bool:
        """Keep our leases, rescue expired ones, prune, then claim what free slots can carry."""
        now = self.clock()
        if now >= self._next_heartbeat:
            # Rows waiting for a slot or for a bisection step are still ours: extend their
            # leases long before they run out, so no daemon (this one included) rescues them.
            self._next_heartbeat = now + self.config.lease_s / 4
            if self._leased:
                await self._unless_stopped(
                    self.store.extend_lease(
                        list(self._leased), self.owner, now + self.config.lease_s
                    )
                )
        if now >= self._next_rescue:
            self._next_rescue = now + self.config.lease_s / 4
            rescued = await self._unless_stopped(self.store.rescue_expired(now))
            if rescued:
                self.totals.rescued += rescued
                self.metrics.rescued.inc(rescued)
                self._log.warning("leases_rescued", rows=rescued)
        if now >= self._next_prune:
            pruned = await self._unless_stopped(
                self.store.prune_sent(now - self.config.retention_s, PRUNE_BATCH)
            )
            # A full batch means more is waiting: come back soon, between claims.
            self._next_prune = now + (PRUNE_AGAIN_S if pruned == PRUNE_BATCH else PRUNE_EVERY_S)
            # One line per catch-up (or per 100 batches of a long one), not one per batch.
            self._pruned += pruned
            if self._pruned and (pruned < PRUNE_BATCH or self._pruned >= 100 * PRUNE_BATCH):
                self._log.info("sent_rows_pruned", rows=self._pruned)
                self._pruned = 0
        if now >= self._next_summary:
            self._summarise(now)
        if now >= self._next_shared:
            self._next_shared = now + SHARED_STATE_EVERY_S
            await self._unless_stopped(self._read_shared_throttle(now))
        # While the destination takes requests, one batch more than the free slots is claimed
        # and built ahead: the slot a finishing request frees then goes to a batch that is ready
        # instead of waiting for a claim and the build of a thousand events.
        ahead = 0 if self.pacer.paused or now < self.pacer.throttled_until else PREFETCH_BATCHES
        free = self.pacer.slots(now) + ahead - self._queued
        # One request's worth per statement, however many slots are free: the loop comes
        # straight back for more, and the application's inserts wait for SQLite's write lock
        # one short statement at a time, not one claim of several thousand rows.
        limit = 1 if self.pacer.paused else self.config.max_events
        claimed_ahead = self._claim_ahead
        # Answered requests whose outcome waits to be written (or whose rejected part waits
        # for a slot): past the bound, nothing more is claimed until some are written.
        settling = len(self._tasks) - self._queued - self.pacer.in_flight
        backlogged = settling >= self.settle_backlog_max
        if claimed_ahead is None and backlogged:
            return False  # a task ending wakes the loop
        if claimed_ahead is not None:
            # Claimed while the last batch was built, when a slot was free for it: its rows
            # are ours and go out whatever the slots are now (they wait for one if need be).
            try:
                # Not cancelled with this task, nor by stop(): the claim still ends, and
                # shutdown gives back what it leased.
                rows = await self._unless_stopped(claimed_ahead)
            finally:
                if claimed_ahead.done():
                    self._claim_ahead = None
        elif free <= 0:
            return False
        else:
            rows = await self._unless_stopped(self._claim(limit, now))
        if not rows:
            return False
        if (
            free > 1
            and len(rows) == self.config.max_events
            and not backlogged
            and not self._stopping.is_set()
        ):
            # Another full request fits: the database claims it while this one is built, so
            # the loop goes from one build to the next instead of waiting for each claim.
            self._claim_ahead = self._claim(limit, now)
        await self._dispatch(rows, now)
        return True

    def _summarise(self, now: float) -> None:
        """Log what was delivered since the last summary, if anything was (one line a minute)."""
        first = self._next_summary == 0.0
        self._next_summary = now + SUMMARY_EVERY_S
        totals = self.totals
        current = (totals.delivered, totals.retried, totals.dead)
        delivered, retried, dead = (a - b for a, b in zip(current, self._summary_from, strict=True))
        self._summary_from = current
        codes, self._codes = self._codes, Counter()
        if first or not (delivered or retried or dead):
            return
        self._log.info(
            "delivery_summary",
            window_s=SUMMARY_EVERY_S,
            delivered=delivered,
            retried=retried,
            dead=dead,
            codes=dict(codes.most_common()),
        )

    def _claim(self, limit: int, now: float) -> asyncio.Future[list[OutboxRow]]:
        """Start a claim: its rows are ours from the moment it returns (_hold_claimed), and
        shutdown waits for it, within the deadline, to give them back."""
        claim = asyncio.ensure_future(
            self.store.claim(limit, self.owner, now, now + self.config.lease_s)
        )
        claim.add_done_callback(self._hold_claimed)
        self._claims.add(claim)
        claim.add_done_callback(self._claims.discard)
        self._track(claim)
        return claim

    def _track(self, call: asyncio.Future[Any]) -> None:
        """Count *call* among the database calls shutdown cancels if still running at the end."""
        if not call.done():
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
            call.add_done_callback(_retrieve)

    async def _unless_stopped(self, call: Awaitable[_T]) -> _T:
        """Await a database call of the loop, unless stop() comes first: then raise _Stopped.

        The call is not cancelled (it may be a claim whose rows shutdown gives back); it ends
        on its own, and a blocked one no longer holds the loop.
        """
        task = asyncio.ensure_future(call)
        if not task.done():
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not task.done():
                self._track(task)
                raise _Stopped
        return task.result()

    async def _await_claims(self, within_s: float) -> None:
        """Wait for the claims under way, so shutdown gives back what they leased."""
        claims = set(self._claims)
        if not claims:
            return
        done, late = await asyncio.wait(claims, timeout=within_s)
        for claim in done:
            if not claim.cancelled() and (error := claim.exception()):
                # A failed claim holds no row: nothing to give back.
                self._log.warning(
                    "claim_failed_at_shutdown", error=f"{type(error).__name__}: {error}"
                )
        if late:
            self._log.warning(
                "shutdown_claims_left",
                claims=len(late),
                note="rows they lease return to pending when the lease expires (FORWARDER_LEASE)",
            )

    def _hold_claimed(self, claim: asyncio.Future[list[OutboxRow]]) -> None:
        """Count the rows of a claim made ahead as ours as soon as it returns: if the tick that
        takes them fails for longer than a lease, the heartbeat keeps them, and our own
        rescue does not hand them to the next claim while this one still holds them."""
        if not claim.cancelled() and claim.exception() is None:
            for row in claim.result():
                self._leased[row.id] = row

    async def _read_shared_throttle(self, now: float) -> None:
        """Honour a rate-limit pause another daemon sharing this token recorded."""
        state = await self.store.get_state("throttle")
        if not state or state.get("owner") == self.owner:
            return
        until = state.get("until")
        if isinstance(until, (int, float)) and until > max(now, self.pacer.throttled_until):
            self.pacer.throttled_until = float(until)
            self._log.info("shared_throttle", resume_in_s=round(until - now, 2))

    async def _dispatch(self, rows: Sequence[OutboxRow], now: float) -> None:
        """Build events, dead-letter the refused ones, and start a task per batch."""
        for row in rows:
            self._leased[row.id] = row
        items: list[Item] = []
        dead: list[Dead] = []
        for index, row in enumerate(rows):
            if index and not index % BUILD_SLICE:
                # Building a thousand events takes tens of milliseconds: let the answers and
                # the database results that came in meanwhile through, or the database thread
                # would wait for this loop instead of working alongside it.
                await asyncio.sleep(0)
            try:
                result = payload.build(row, self.config.build, now)
                if isinstance(result, payload.Refused):
                    dead.append(Dead(result.row_id, result.code, result.reason))
                    continue
                items.append(Item.of(result))
            except Exception as error:  # one unreadable row must not stop the others
                reason = f"the row could not be turned into a TikTok event ({type(error).__name__})"
                dead.append(Dead(row.id, "malformed", reason))
                continue
            if result.warnings:
                self._log.warning("event_warnings", row_id=row.id, warnings=list(result.warnings))
        batches, oversize = make_batches(items, self.config.max_events, self.config.max_bytes)
        dead.extend(
            Dead(
                item.built.row_id,
                "oversize",
                f"the event is {len(item.data)} bytes, more than one request may carry "
                f"(FORWARDER_BATCH_MAX_BYTES={self.config.max_bytes})",
            )
            for item in oversize
        )
        if dead:
            await self._dead(dead, None, count_attempt=False, now=now)
        for batch in batches:
            self._queued += 1
            task = asyncio.create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self._log.error("delivery_task_failed", error=f"{type(error).__name__}: {error}")

    async def _sleep(self, seconds: float) -> None:
        """Wait until *seconds* pass, a task finishes, a row arrives, or stop() is called."""
        if seconds <= 0 or self._stopping.is_set():
            return
        waits = {
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.store.new_rows.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _deliver(self, batch: Batch) -> None:
        """Send *batch*, then every sub-batch a rejection leaves to resend."""
        queue = [batch]
        queued = True
        try:
            while queue:
                current = queue.pop()
                allowed = await self._through_holds(current)
                if allowed is None or not await self._acquire(allowed):
                    continue
                current = allowed
                if queued:
                    queued, self._queued = False, self._queued - 1
                outcome = await self._send(current)
                await self._settle(current, outcome, queue)
        except Exception:
            # The outcome could not be written: stop extending these leases, so the rows
            # return to pending when they lapse and are sent again (TikTok deduplicates).
            # Cancellation (shutdown) is not caught here: shutdown releases the rows at once.
            for pending in [current, *queue]:
                for row_id in pending.row_ids():
                    self._leased.pop(row_id, None)
            raise
        finally:
            if queued:
                self._queued -= 1

    async def _through_holds(self, batch: Batch) -> Batch | None:
        """What of *batch* may go out: all of it, unless its pixel is held. Then one event as
        the pixel's probe when one is due, and the rest back to pending until the next."""
        pixel = batch.destination.pixel
        hold = self.holds.held.get(pixel)
        if hold is None:
            return batch
        now = self.clock()
        probe = self.holds.take_probe(pixel, now)
        send, back = (batch.items[:1], batch.items[1:]) if probe else ((), batch.items)
        retries = [
            Retry(item.built.row_id, hold.probe_at + self.rng.uniform(0, THROTTLE_SPREAD_S))
            for item in back
        ]
        await self._reschedule(retries, hold.code, hold.message, None, False, now, "held")
        return Batch(batch.destination, send) if send else None

    async def _acquire(self, batch: Batch) -> bool:
        """Take a request slot; on stop, throttle or pause give the rows back instead."""
        async with self._slot_freed:
            while True:
                now = self.clock()
                if self._stopping.is_set():
                    held = False
                    break
                if self.pacer.slots(now) > 0:
                    self.pacer.started()
                    self.metrics.in_flight.set(self.pacer.in_flight)
                    return True
                if self.pacer.paused or now < self.pacer.throttled_until:
                    held = True
                    break
                # Every slot is busy: wait for a request to finish (or a throttle to end).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._slot_freed.wait(), timeout=self.config.poll_interval_s
                    )
        if not held:
            await self._release(batch.row_ids(), now)
            return False
        at = self.pacer.resume_at(now)
        retries = [Retry(i, at + self.rng.uniform(0, THROTTLE_SPREAD_S)) for i in batch.row_ids()]
        message = "held back while the destination is paused or throttled"
        await self._reschedule(retries, "held", message, None, False, now, "held")
        return False

    async def _send(self, batch: Batch) -> Outcome:
        """POST one batch and classify TikTok's answer."""
        started = time.perf_counter()
        self.metrics.batch_events.observe(len(batch.items))
        try:
            response = await self.sender.send(batch.body())
            outcome = classify(response, self.clock())
        except TransportError as error:
            outcome = classify_transport(error)
        finally:
            self.pacer.finished()
            self.metrics.in_flight.set(self.pacer.in_flight)
            self._wake.set()
            async with self._slot_freed:
                self._slot_freed.notify_all()
        self.totals.requests += 1
        self.metrics.request_seconds.observe(time.perf_counter() - started)
        self.metrics.responses.labels(code_label(outcome.code), outcome.verdict.value).inc()
        return outcome

    async def _settle(self, batch: Batch, outcome: Outcome, queue: list[Batch]) -> None:
        """Write the outcome of one request to its rows, in one transaction."""
        now = self.clock()
        ids = batch.row_ids()
        log = self._log.bind(
            request_id=outcome.request_id,
            code=outcome.code,
            events=len(ids),
            pixel=batch.destination.pixel,
        )
        verdict = outcome.verdict
        if verdict is Verdict.AMBIGUOUS:
            if self.pacer.on_ambiguous(now, outcome.code, self.config.ambiguous_code_max_answers):
                verdict = Verdict.PAUSE
            else:
                verdict = Verdict.RETRY
        if verdict is Verdict.RETRY and self.pacer.on_failure(
            now, outcome.code, self.config.storm_answers, outcome.retry_after_s
        ):
            verdict = Verdict.PAUSE  # the storm rule: TikTok fails every request, not these
        if verdict is Verdict.ACCEPTED:
            await self._accepted(batch, outcome, now, log)
        elif verdict is Verdict.THROTTLE:
            until = self.pacer.on_throttle(now, outcome.retry_after_s)
            self.metrics.concurrency_limit.set(self.pacer.limit)
            log.warning(
                "tiktok_throttled",
                message=outcome.message,
                resume_in_s=round(until - now, 2),
                concurrency_limit=self.pacer.limit,
            )
            # Daemons sharing the token share TikTok's rate limit: tell them to hold back too.
            shared = {"until": until, "owner": self.owner, "code": outcome.code}
            await self._store_call(lambda: self.store.set_state("throttle", shared, now))
            retries = [Retry(i, until + self.rng.uniform(0, THROTTLE_SPREAD_S)) for i in ids]
            await self._reschedule(
                retries, outcome.code, outcome.message, outcome.request_id, False, now, "throttle"
            )
        elif verdict is Verdict.PAUSE and self._scope(batch, outcome) is Scope.PIXEL:
            await self._hold(batch, outcome, now, log)
        elif verdict is Verdict.PAUSE:
            await self._paused(batch, outcome, now, log)
        elif verdict is Verdict.RETRY:
            await self._retry(batch, outcome, now, log)
        else:
            await self._rejected(batch, outcome, queue, now, log)

    async def _paused(self, batch: Batch, outcome: Outcome, now: float, log: Any) -> None:
        """Hold the rows for the next probe: no attempt counted, nothing dead-lettered."""
        # A credential or configuration code pauses here; on_ambiguous or on_failure (the storm
        # rule) have already paused for the other verdicts.
        if outcome.verdict is Verdict.PAUSE:
            probe_at = self.pacer.on_pause(now, outcome.code)
        else:
            probe_at = self.pacer.probe_at
        await self._paused_changed(now, outcome)
        reason = self.pacer.paused_reason or outcome.code
        storm: dict[str, Any] = {}
        if reason.startswith(STORM_PREFIX):
            storm = {"failed_in_a_row": self.pacer.failure_streak, "hint": STORM_HINT}
        log.error(
            "destination_paused",
            reason=reason,
            message=outcome.message,
            next_probe_in_s=round(probe_at - now, 2),
            **storm,
        )
        retries = [Retry(i, probe_at) for i in batch.row_ids()]
        await self._reschedule(
            retries, outcome.code, outcome.message, outcome.request_id, False, now, "pause"
        )

    def _scope(self, batch: Batch, outcome: Outcome) -> Scope:
        destination, build = batch.destination, self.config.build
        return scope(
            outcome,
            destination.pixel,
            destination.test_event_code,
            build.default_pixel,
            build.test_event_code,
        )

    async def _hold(self, batch: Batch, outcome: Outcome, now: float, log: Any) -> None:
        """TikTok refused a row's own pixel: hold that pixel back, count no attempt."""
        pixel = batch.destination.pixel
        new = pixel not in self.holds.held
        hold = self.holds.hold(pixel, now, outcome.code, outcome.message)
        log.error(
            "pixel_held",
            message=outcome.message,
            next_probe_in_s=round(hold.probe_at - now, 2),
            held_pixels=len(self.holds.held),
            note="the default pixel and other pixels keep flowing",
        )
        retries = [
            Retry(i, hold.probe_at + self.rng.uniform(0, THROTTLE_SPREAD_S))
            for i in batch.row_ids()
        ]
        await self._reschedule(
            retries, outcome.code, outcome.message, outcome.request_id, False, now, "held"
        )
        if new:
            await self._paused_changed(now, outcome, holds_changed=True)

    async def _accepted(self, batch: Batch, outcome: Outcome, now: float, log: Any) -> None:
        items = batch.items
        ids = batch.row_ids()
        # Keep what was sent (hashed identifiers), not the raw e-mail addresses and phones.
        scrubbed = [item.stored() for item in items] if self.config.scrub else None
        changed = await self._store_call(
            lambda: self.store.mark_sent(
                ids, self.owner, outcome.code, outcome.request_id, now, scrubbed
            )
        )
        if changed != len(items):
            # Our lease ran out and the rows were claimed again: they will be sent again and
            # TikTok deduplicates them by event_id. Worth knowing; nothing is lost.
            log.warning("lease_lost", rows=len(items) - changed)
        leased = self._leased
        for row_id in ids:
            leased.pop(row_id, None)
        # Count per label once per request, not per event: this runs tens of thousands of
        # times a second. Events share their match-key sets (payload.build reuses them), so
        # those are counted as sets first.
        events = Counter([item.built.event["event"] for item in items])
        key_sets = Counter([item.built.match_keys for item in items])
        keys: Counter[str] = Counter()
        for key_set, count in key_sets.items():
            for key in key_set:
                keys[key] += count
        observe_all(self.metrics.latency_seconds, [now - item.built.created_at for item in items])
        for name, count in events.items():
            self.metrics.delivered.labels(event_label(name)).inc(count)
        for key, count in keys.items():
            self.metrics.match_keys.labels(key).inc(count)
        self.totals.delivered += len(batch.items)
        self._codes[outcome.code] += len(batch.items)
        if outcome.code != "0":
            log.warning("tiktok_accepted_with_code", message=outcome.message)
        else:
            log.debug("batch_delivered")
        resumed = self.pacer.on_accepted()
        if resumed:
            log.info("destination_resumed")
        released = self.holds.release(batch.destination.pixel) is not None
        if released:
            log.info("pixel_released", held_pixels=len(self.holds.held))
        if resumed or released or not self._state_published:
            await self._paused_changed(now, outcome, holds_changed=released)
        self.metrics.concurrency_limit.set(self.pacer.limit)

    async def _retry(self, batch: Batch, outcome: Outcome, now: float, log: Any) -> None:
        """Back the rows off, counting an attempt; dead-letter those an unknown code exhausted.

        Fewer than FORWARDER_STORM_ANSWERS requests failed since TikTok last accepted one (else
        the storm rule had paused), so an unknown code may be these events' own: from their
        FORWARDER_STORM_ANSWERS-th attempt on they are retried at least
        FORWARDER_UNKNOWN_CODE_MIN_DELAY apart, and dead-lettered at the
        FORWARDER_UNKNOWN_CODE_MAX_ATTEMPTS-th.
        """
        config = self.config
        retries: list[Retry] = []
        dead: list[Dead] = []
        for item in batch.items:
            row = self._leased.get(item.built.row_id)
            attempt = (row.attempts if row else 0) + 1
            if not outcome.bounded or attempt < config.storm_answers:
                # The first retries are quick, so that a storm is recognised in seconds even
                # when one request carries the whole backlog (and a one-off answer costs little).
                delay = backoff.delay_s(attempt, config.backoff, self.rng, outcome.retry_after_s)
            elif attempt < config.unknown_code_max_attempts:
                delay = backoff.floored_delay_s(
                    attempt,
                    config.backoff,
                    self.rng,
                    outcome.retry_after_s,
                    config.unknown_code_min_delay_s,
                )
            else:
                reason = (
                    f"TikTok answered code {outcome.code}, which forwarder does not know, "
                    f"to attempt {attempt} of this event: {outcome.message}"
                )
                dead.append(Dead(item.built.row_id, outcome.code, reason))
                continue
            retries.append(Retry(item.built.row_id, now + delay))
        log.warning("tiktok_retry", message=outcome.message, retrying=len(retries), dead=len(dead))
        await self._reschedule(
            retries, outcome.code, outcome.message, outcome.request_id, True, now, "retry"
        )
        if dead:
            await self._dead(
                dead, outcome.request_id, count_attempt=True, now=now, reason="unknown_code"
            )

    async def _rejected(
        self, batch: Batch, outcome: Outcome, queue: list[Batch], now: float, log: Any
    ) -> None:
        """Dead-letter only the events TikTok refused; queue the rest to resend."""
        if outcome.whole_request and self._scope(batch, outcome) is Scope.DESTINATION:
            # TikTok refuses the request's own fields for the configured pixel or test code, or
            # the token: a configuration fault, not the events'. Pause, lose nothing. (A row's
            # own pixel or test code refused is those rows' fault: they are dead below.)
            probe_at = self.pacer.on_pause(now, f"config_{outcome.code}")
            await self._paused_changed(now, outcome)
            log.error(
                "destination_paused",
                reason=self.pacer.paused_reason,
                message=outcome.message,
                next_probe_in_s=round(probe_at - now, 2),
                hint="check TIKTOK_PIXEL_CODE and TIKTOK_TEST_EVENT_CODE",
            )
            retries = [Retry(i, probe_at) for i in batch.row_ids()]
            await self._reschedule(
                retries, outcome.code, outcome.message, outcome.request_id, False, now, "pause"
            )
            return
        reason = f"TikTok rejected the event (code {outcome.code}): {outcome.message}"
        index = outcome.bad_index
        if outcome.whole_request or len(batch.items) == 1:
            bad, rest = list(batch.items), []
        elif index is not None and 0 <= index < len(batch.items):
            bad, rest = [batch.items[index]], [batch.without(index)]
        else:
            bad, rest = [], list(batch.halves())
        log.warning(
            "tiktok_rejected",
            message=outcome.message,
            dead=len(bad),
            resending=sum(len(b.items) for b in rest),
        )
        if bad:
            dead = [Dead(item.built.row_id, outcome.code, reason) for item in bad]
            await self._dead(
                dead, outcome.request_id, count_attempt=True, now=now, reason="rejected"
            )
        if rest:
            ids = [i for b in rest for i in b.row_ids()]
            await self._store_call(
                lambda: self.store.extend_lease(ids, self.owner, now + self.config.lease_s)
            )
            queue.extend(rest)

    async def _paused_changed(
        self, now: float, outcome: Outcome, *, holds_changed: bool = False
    ) -> None:
        """Publish a pause, a resume or a change of the held pixels: metrics and the state
        `forwarder status` reads."""
        reason = self.pacer.paused_reason
        if reason == self._was_paused and self._state_published and not holds_changed:
            return
        if reason != self._was_paused or not self._state_published:
            self.paused_message = outcome.message if reason else None
        self._state_published = True
        self.metrics.pixels_held.set(len(self.holds.held))
        if self._was_paused is not None:
            self.metrics.paused.labels(pause_label(self._was_paused)).set(0)
        if reason is not None:
            self.metrics.paused.labels(pause_label(reason)).set(1)
        self._was_paused = reason
        state = {
            "paused": reason is not None,
            "reason": reason,
            "message": self.paused_message,
            "since": self.pacer.paused_since if reason else None,
            "owner": self.owner,
            "held_pixels": self.holds.state(),
        }
        await self._store_call(lambda: self.store.set_state("destination", state, now))

    async def _reschedule(
        self,
        retries: list[Retry],
        code: str,
        message: str,
        request_id: str | None,
        count_attempt: bool,
        now: float,
        reason: str,
    ) -> None:
        if not retries:
            return
        await self._store_call(
            lambda: self.store.reschedule(
                retries, self.owner, code, message, request_id, count_attempt, now
            )
        )
        for retry in retries:
            self._leased.pop(retry.row_id, None)
        self.totals.retried += len(retries)
        self._codes[code] += len(retries)
        self.metrics.retried.labels(reason).inc(len(retries))

    async def _dead(
        self,
        dead: list[Dead],
        request_id: str | None,
        *,
        count_attempt: bool,
        now: float,
        reason: str | None = None,
    ) -> None:
        await self._store_call(
            lambda: self.store.mark_dead(dead, self.owner, request_id, count_attempt, now)
        )
        groups: dict[str, list[Dead]] = {}
        for item in dead:
            self._leased.pop(item.row_id, None)
            groups.setdefault(reason or item.code, []).append(item)
        self.totals.dead += len(dead)
        # One line per reason: rows refused for different reasons must not be counted as one.
        for label, items in groups.items():
            self.metrics.dead.labels(label).inc(len(items))
            self._codes[items[0].code] += len(items)
            # Up to three distinct reasons: three malformed rows are rarely malformed alike.
            details = list(dict.fromkeys(item.reason for item in items))
            self._log.warning(
                "events_dead",
                rows=len(items),
                reason=label,
                detail=details[0],
                other_details=details[1:3],
            )

    async def _release(self, ids: list[int], now: float) -> None:
        await self._store_call(lambda: self.store.release(ids, self.owner, now))
        for row_id in ids:
            self._leased.pop(row_id, None)
        self.totals.released += len(ids)

    async def _store_call(self, make: Callable[[], Awaitable[_T]]) -> _T:
        """Run a settling write, retried a few times; not cancelled with its task, so a
        cancelled task still records what TikTok said (a lost write means a resend once the
        lease expires); after stop(), waited for no longer than the shutdown deadline."""

        async def attempts() -> _T:
            for attempt in range(1, SETTLE_TRIES + 1):
                try:
                    return await make()
                except StoreError as error:
                    if attempt == SETTLE_TRIES:
                        raise
                    self._log.warning("settle_retry", error=str(error), attempt=attempt)
                    await asyncio.sleep(0.25 * 2**attempt)
            raise AssertionError("unreachable")

        write = asyncio.ensure_future(attempts())
        self._track(write)
        if not write.done():
            expired = asyncio.ensure_future(self._expired.wait())
            try:
                await asyncio.wait({write, expired}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                expired.cancel()
            if not write.done():
                raise _DeadlinePassed
        return write.result()

    async def _shutdown(self) -> None:
        """Let in-flight requests finish within the grace period, then give back every lease;
        all of it by the deadline (stop_deadline), leaving the rest to the lease."""
        self._stopping.set()
        self._wake.set()
        self._arm_deadline()
        deadline = self.stop_deadline or time.monotonic()

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self._tasks:
            grace = left() - SHUTDOWN_FINISH_S
            _, late = await asyncio.wait(set(self._tasks), timeout=max(0.0, grace))
            for task in late:
                task.cancel()
            if late:
                self._log.warning("shutdown_cancelled_requests", requests=len(late))
                await asyncio.wait(late, timeout=left())
        self._claim_ahead = None
        await self._await_claims(left())
        if self._leased:
            ids = list(self._leased)
            try:
                await self._release(ids, self.clock())
                self._log.info("leases_released", rows=len(ids))
            except _DeadlinePassed:
                self._log.warning(
                    "shutdown_leases_left",
                    rows=len(ids),
                    note="the database did not answer in time: the rows return to pending "
                    "when their lease expires (FORWARDER_LEASE)",
                )
            except StoreError as error:
                self._log.error(
                    "release_failed",
                    rows=len(ids),
                    error=str(error),
                    note="the rows return to pending when their lease expires",
                )
        # What the database has not done by now is left to the lease: stop waiting for it, so
        # a blocked PostgreSQL query is cancelled and its connection can be closed.
        for call in list(self._calls):
            call.cancel()
        self._log.info(
            "worker_stopped",
            delivered=self.totals.delivered,
            dead=self.totals.dead,
            retried=self.totals.retried,
        )
