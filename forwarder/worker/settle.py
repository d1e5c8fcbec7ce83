"""Settling: apply the decision on one answer to the destination's state and to the rows.

The verdict passes through the destination's state first (repeated ambiguous answers and the
storm rule turn retries into a pause); decide() says what happens to each row; this module
writes it: the pacer and the held pixels, the rows in the store (each write one transaction,
guarded by our lease), the published state `forwarder status` reads, metrics and logs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from forwarder import decide
from forwarder.destination import Batch
from forwarder.metrics import Metrics, event_label, pause_label
from forwarder.outcome import Outcome, Verdict
from forwarder.pacing import STORM_PREFIX
from forwarder.store.base import Dead, Retry
from forwarder.worker.rows import Rows
from forwarder.worker.shared import Shared

STORM_HINT = (
    "TikTok accepted none of the last requests: nothing is dead-lettered; one event probes at "
    "a growing interval and delivery resumes once TikTok accepts it"
)
CONFIG_HINT = "check TIKTOK_PIXEL_CODE and TIKTOK_TEST_EVENT_CODE"


class Settler:
    """Writes what each answer means; owns the published pause state."""

    def __init__(self, shared: Shared, rows: Rows) -> None:
        self.shared = shared
        self.rows = rows
        config = shared.config
        self.policy = decide.Policy(
            default_source=shared.destination.default_pixel,
            default_test_code=shared.destination.default_test_code,
            backoff=config.backoff,
            storm_answers=config.storm_answers,
            unknown_code_max_attempts=config.unknown_code_max_attempts,
            unknown_code_min_delay_s=config.unknown_code_min_delay_s,
        )
        self._was_paused: str | None = shared.pacer.paused_reason  # what was last published
        # A previous run may have left "paused" on record: the first answer publishes anew.
        self._published = False
        #: TikTok's (or our) message for the current pause; /readyz shows it with the reason.
        self.paused_message: str | None = None

    async def settle(self, batch: Batch, outcome: Outcome, queue: list[Batch]) -> None:
        """Write the outcome of one request to its rows; queue what a rejection resends."""
        shared, now = self.shared, self.shared.clock()
        log = shared.log.bind(
            request_id=outcome.request_id,
            code=outcome.code,
            events=len(batch.items),
            pixel=batch.route.pixel,
        )
        decision = decide.decide(
            outcome, self._judged(outcome, now), self._request(batch), self.policy, shared.rng
        )
        action = decision.action
        if action is decide.Action.SENT:
            await self._sent(batch, outcome, now, log)
        elif action is decide.Action.THROTTLE:
            await self._throttled(batch, outcome, now, log)
        elif action is decide.Action.PAUSE:
            await self._paused(batch, outcome, decision.pause_reason, now, log)
        elif action is decide.Action.HOLD:
            await self._held(batch, outcome, now, log)
        elif action is decide.Action.RETRY:
            await self._retried(batch, outcome, decision, now, log)
        else:
            await self._rejected(batch, outcome, decision, queue, now, log)

    def _judged(self, outcome: Outcome, now: float) -> Verdict:
        """The verdict as the destination's state makes it: ambiguous answers retry until
        there are too many in a row; retries pause once every request fails (the storm rule)."""
        pacer, config = self.shared.pacer, self.shared.config
        verdict = outcome.verdict
        if verdict is Verdict.AMBIGUOUS:
            paused = pacer.on_ambiguous(now, outcome.code, config.ambiguous_code_max_answers)
            verdict = Verdict.PAUSE if paused else Verdict.RETRY
        if verdict is Verdict.RETRY and pacer.on_failure(
            now, outcome.code, config.storm_answers, outcome.retry_after_s
        ):
            verdict = Verdict.PAUSE
        return verdict

    def _request(self, batch: Batch) -> decide.Request:
        leased = self.shared.leased
        attempts = []
        for row_id in batch.row_ids():
            row = leased.get(row_id)
            attempts.append(row.attempts if row else 0)
        route = batch.route
        return decide.Request(route.pixel, route.test_event_code, tuple(attempts))

    async def _sent(self, batch: Batch, outcome: Outcome, now: float, log: Any) -> None:
        shared, items, ids = self.shared, batch.items, batch.row_ids()
        # Keep what was sent (hashed identifiers), not the raw e-mail addresses and phones.
        scrubbed = (
            [shared.destination.stored(item) for item in items] if shared.config.scrub else None
        )
        # What was sent with a warning (an identifier dropped, a field not carried over) stays
        # on the row, so "why did this match worse" has an answer in the outbox itself.
        notes = {
            item.built.row_id: "; ".join(item.built.warnings)
            for item in items
            if item.built.warnings
        }
        changed = await shared.calls.settle(
            lambda: shared.store.mark_sent(
                ids, shared.owner, outcome.code, outcome.request_id, now, scrubbed, notes
            )
        )
        if changed != len(items):
            # Our lease ran out and the rows were claimed again: they will be sent again and
            # TikTok deduplicates them by event_id. Worth knowing; nothing is lost.
            log.warning("lease_lost", action="sent", rows=len(items) - changed)
        for row_id in ids:
            shared.leased.pop(row_id, None)
        count_sent(shared.metrics, batch, now)
        shared.totals.delivered += len(items)
        shared.codes[outcome.code] += len(items)
        if outcome.code != "0":
            log.warning("tiktok_accepted_with_code", message=outcome.message)
        resumed = shared.pacer.on_accepted()
        if resumed:
            log.info("destination_resumed")
        released = shared.holds.release(batch.route.pixel) is not None
        if released:
            log.info("pixel_released", held_pixels=len(shared.holds.held))
        if resumed or released or not self._published:
            await self.publish(now, outcome, holds_changed=released)
        shared.metrics.concurrency_limit.set(shared.pacer.limit)

    async def _throttled(self, batch: Batch, outcome: Outcome, now: float, log: Any) -> None:
        shared = self.shared
        until = shared.pacer.on_throttle(now, outcome.retry_after_s)
        shared.metrics.concurrency_limit.set(shared.pacer.limit)
        log.warning(
            "tiktok_throttled",
            message=outcome.message,
            resume_in_s=round(until - now, 2),
            concurrency_limit=shared.pacer.limit,
        )
        # Daemons sharing the token share TikTok's rate limit: tell them to hold back too.
        state = {"until": until, "owner": shared.owner, "code": outcome.code}
        await shared.calls.settle(lambda: shared.store.set_state("throttle", state, now))
        await self.rows.hold_back(batch.row_ids(), until, outcome, now, "throttle")

    async def _paused(
        self, batch: Batch, outcome: Outcome, reason: str | None, now: float, log: Any
    ) -> None:
        """Hold the rows for the next probe: no attempt counted, nothing dead-lettered."""
        pacer = self.shared.pacer
        probe_at = pacer.probe_at if reason is None else pacer.on_pause(now, reason)
        await self.publish(now, outcome)
        paused = pacer.paused_reason or outcome.code
        extra: dict[str, Any] = {}
        if paused.startswith(STORM_PREFIX):
            extra = {"failed_in_a_row": pacer.failure_streak, "hint": STORM_HINT}
        elif paused.startswith("config_"):
            extra = {"hint": CONFIG_HINT}
        log.error(
            "destination_paused",
            reason=paused,
            message=outcome.message,
            next_probe_in_s=round(probe_at - now, 2),
            **extra,
        )
        retries = [Retry(i, probe_at) for i in batch.row_ids()]
        await self.rows.reschedule(retries, outcome, False, now, "pause")

    async def _held(self, batch: Batch, outcome: Outcome, now: float, log: Any) -> None:
        """TikTok refused a row's own pixel: hold that pixel back, count no attempt."""
        holds, pixel = self.shared.holds, batch.route.pixel
        new = pixel not in holds.held
        hold = holds.hold(pixel, now, outcome.code, outcome.message)
        log.error(
            "pixel_held",
            message=outcome.message,
            next_probe_in_s=round(hold.probe_at - now, 2),
            held_pixels=len(holds.held),
            note="the default pixel and other pixels keep flowing",
        )
        await self.rows.hold_back(batch.row_ids(), hold.probe_at, outcome, now, "held")
        if new:
            await self.publish(now, outcome, holds_changed=True)

    async def _retried(
        self, batch: Batch, outcome: Outcome, decision: decide.Decision, now: float, log: Any
    ) -> None:
        ids = batch.row_ids()
        retries = [Retry(ids[position], now + delay) for position, delay in decision.retry_in]
        log.warning(
            "tiktok_retry", message=outcome.message, retrying=len(retries), dead=len(decision.dead)
        )
        await self.rows.reschedule(retries, outcome, True, now, "retry")
        await self._kill(ids, outcome, decision, now)

    async def _rejected(
        self,
        batch: Batch,
        outcome: Outcome,
        decision: decide.Decision,
        queue: list[Batch],
        now: float,
        log: Any,
    ) -> None:
        """Dead-letter only the events TikTok refused; queue the rest to resend."""
        shared, ids = self.shared, batch.row_ids()
        rest = [batch.subset(positions) for positions in decision.resend]
        log.warning(
            "tiktok_rejected",
            message=outcome.message,
            dead=len(decision.dead),
            resending=sum(len(part.items) for part in rest),
        )
        await self._kill(ids, outcome, decision, now)
        if rest:
            again = [row_id for part in rest for row_id in part.row_ids()]
            until = now + shared.config.lease_s
            await shared.calls.settle(lambda: shared.store.extend_lease(again, shared.owner, until))
            queue.extend(rest)

    async def _kill(
        self, ids: list[int], outcome: Outcome, decision: decide.Decision, now: float
    ) -> None:
        if decision.dead:
            dead = [
                Dead(ids[position], outcome.code, decision.dead_reason)
                for position in decision.dead
            ]
            await self.rows.dead(dead, outcome.request_id, True, now, decision.dead_label)

    async def publish(self, now: float, outcome: Outcome, *, holds_changed: bool = False) -> None:
        """Publish a pause, a resume or a change of the held pixels: metrics and the state
        `forwarder status` reads."""
        shared = self.shared
        reason = shared.pacer.paused_reason
        if reason == self._was_paused and self._published and not holds_changed:
            return
        if reason != self._was_paused or not self._published:
            self.paused_message = outcome.message if reason else None
        self._published = True
        shared.metrics.pixels_held.set(len(shared.holds.held))
        if self._was_paused is not None:
            shared.metrics.paused.labels(pause_label(self._was_paused)).set(0)
        if reason is not None:
            shared.metrics.paused.labels(pause_label(reason)).set(1)
        self._was_paused = reason
        state = {
            "paused": reason is not None,
            "reason": reason,
            "message": self.paused_message,
            "since": shared.pacer.paused_since if reason else None,
            "owner": shared.owner,
            "held_pixels": shared.holds.state(),
        }
        await shared.calls.settle(lambda: shared.store.set_state("destination", state, now))


def count_sent(metrics: Metrics, batch: Batch, now: float) -> None:
    """Metrics of delivered events, counted per label once per request: this runs tens of
    thousands of times a second, and events share their match-key sets."""
    items = batch.items
    events = Counter([item.built.event["event"] for item in items])
    key_sets = Counter([item.built.match_keys for item in items])
    keys: Counter[str] = Counter()
    for key_set, count in key_sets.items():
        for key in key_set:
            keys[key] += count
    metrics.observe_latencies([now - item.built.created_at for item in items])
    for name, count in events.items():
        metrics.delivered.labels(event_label(name)).inc(count)
    for key, count in keys.items():
        metrics.match_keys.labels(key).inc(count)
    # The destination labels what a converted event was sent without from a closed set.
    dropped = Counter(label for item in items for label in item.built.dropped)
    for label, count in dropped.items():
        metrics.converted_dropped.labels(label).inc(count)
