"""The row writes of settling: back to pending, dead, or released, each one transaction guarded
by our lease, with the totals, metrics and log lines that go with them."""

from __future__ import annotations

from forwarder.outcome import Outcome
from forwarder.store.base import Dead, Retry
from forwarder.worker.shared import Shared

THROTTLE_SPREAD_S = 1.0  # rows held back by a throttle or a hold come due spread over this
LEASE_LOST_NOTE = (
    "no longer inflight under this daemon's lease: another daemon took them while this one "
    "stalled or could not reach the database (or an earlier try of this write did); left alone"
)


class Rows:
    """Writes settled rows to the store and forgets their leases."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def hold_back(
        self, ids: list[int], until: float, outcome: Outcome, now: float, reason: str
    ) -> None:
        """Return rows to pending, due again just after *until*, spread; no attempt counted."""
        rng = self.shared.rng
        retries = [Retry(i, until + rng.uniform(0, THROTTLE_SPREAD_S)) for i in ids]
        await self.reschedule(retries, outcome, False, now, reason)

    async def reschedule(
        self, retries: list[Retry], outcome: Outcome, count_attempt: bool, now: float, reason: str
    ) -> None:
        """Return rows to pending with their next attempt times and *outcome* on record."""
        await self.reschedule_as(
            retries, outcome.code, outcome.message, outcome.request_id, count_attempt, now, reason
        )

    async def reschedule_as(
        self,
        retries: list[Retry],
        code: str,
        message: str,
        request_id: str | None,
        count_attempt: bool,
        now: float,
        reason: str,
    ) -> None:
        """reschedule(), with the code and message given (rows held back before any answer)."""
        if not retries:
            return
        shared = self.shared
        changed = await shared.calls.settle(
            lambda: shared.store.reschedule(
                retries, shared.owner, code, message, request_id, count_attempt, now
            )
        )
        self._lost("reschedule", len(retries), changed)
        for retry in retries:
            shared.leased.pop(retry.row_id, None)
        shared.totals.retried += len(retries)
        shared.codes[code] += len(retries)
        shared.metrics.retried.labels(reason).inc(len(retries))

    async def dead(
        self,
        dead: list[Dead],
        request_id: str | None,
        count_attempt: bool,
        now: float,
        reason: str | None = None,
    ) -> None:
        """Dead-letter rows with their codes and reasons; one log line per reason."""
        shared = self.shared
        changed = await shared.calls.settle(
            lambda: shared.store.mark_dead(dead, shared.owner, request_id, count_attempt, now)
        )
        self._lost("dead", len(dead), changed)
        groups: dict[str, list[Dead]] = {}
        for item in dead:
            shared.leased.pop(item.row_id, None)
            groups.setdefault(reason or item.code, []).append(item)
        shared.totals.dead += len(dead)
        for label, items in groups.items():
            shared.metrics.dead.labels(label).inc(len(items))
            shared.codes[items[0].code] += len(items)
            # Up to three distinct reasons: three malformed rows are rarely malformed alike.
            details = list(dict.fromkeys(item.reason for item in items))
            shared.log.warning(
                "events_dead",
                rows=len(items),
                reason=label,
                detail=details[0],
                other_details=details[1:3],
            )

    async def release(self, ids: list[int], now: float) -> None:
        """Give leased rows back untouched (shutdown, a batch not sent)."""
        shared = self.shared
        changed = await shared.calls.settle(lambda: shared.store.release(ids, shared.owner, now))
        self._lost("release", len(ids), changed)
        for row_id in ids:
            shared.leased.pop(row_id, None)
        shared.totals.released += len(ids)

    def _lost(self, action: str, rows: int, changed: int) -> None:
        """Log the rows a write left alone: they were no longer ours."""
        if changed < rows:
            self.shared.log.warning(
                "lease_lost",
                action=action,
                rows=rows - changed,
                note=LEASE_LOST_NOTE,
            )
