"""The Destination protocol: the worker drives another platform through it, on real SQLite."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import orjson

from forwarder.backoff import BackoffPolicy
from forwarder.destination import Batch, Built, Destination, Item, Refused, Route
from forwarder.events import OutboxRow
from forwarder.metrics import Metrics
from forwarder.outcome import Outcome, Verdict
from forwarder.pacing import Pacer
from forwarder.store.sqlite import SQLiteStore
from forwarder.worker import Worker, WorkerConfig
from tests.support.rows import insert, purchase, query, statuses


class Ledger:
    """A second platform in a dozen lines: events are the row's name and id, all accepted."""

    name = "Ledger"
    default_pixel = "ledger"
    default_test_code: str | None = None

    def __init__(self) -> None:
        self.sent: list[list[int]] = []

    def build(self, row: OutboxRow, now: float) -> Item | Refused:
        """Refuse rows whose event is not a Purchase; keep the others as they are."""
        if row.event != "Purchase":
            return Refused(row.id, "malformed", "[malformed/value] only purchases", "value")
        event = {"event": row.event, "event_id": row.event_id}
        built = Built(row.id, Route("ledger", "ledger", None), event, frozenset(), (), now)
        return Item(built, orjson.dumps(event))

    def batches(self, items: Sequence[Item]) -> tuple[list[Batch], list[Refused]]:
        """Two events per request."""
        groups = [tuple(items[i : i + 2]) for i in range(0, len(items), 2)]
        return [Batch(group[0].built.route, group) for group in groups], []

    def fitting(self, items: Sequence[Item]) -> int:
        """Two events per request, whatever their size."""
        return 2

    def stored(self, item: Item) -> str:
        """Keep the event as sent."""
        return item.data.decode()

    async def send(self, batch: Batch) -> Outcome:
        """Accept everything."""
        self.sent.append(batch.row_ids())
        return Outcome(Verdict.ACCEPTED, "0", "OK", None)


async def test_the_worker_delivers_through_any_destination(
    store: SQLiteStore, db_path: Path
) -> None:
    """The worker drains the outbox through a non-TikTok destination, knowing nothing of it."""
    insert(db_path, [purchase(i) for i in range(5)])
    insert(db_path, [{"event_id": "view-1", "event": "ViewContent", "payload": "{}"}])
    ledger = Ledger()
    destination: Destination = ledger  # structural: no base class needed
    config = WorkerConfig(
        backoff=BackoffPolicy(initial_s=1.0, cap_s=60.0, retry_after_cap_s=60.0),
        poll_interval_s=0.02,
    )
    pacer = Pacer(
        max_limit=1, throttle_max_s=60, probe_max_s=60, retry_after_max_s=60, rng=random.Random(1)
    )
    worker = Worker(store, destination, config, pacer, Metrics(), owner="test", drain=True)
    totals = await worker.run()
    assert (totals.delivered, totals.dead) == (5, 1)
    assert sorted(i for ids in ledger.sent for i in ids) == [1, 2, 3, 4, 5]
    assert all(len(ids) <= 2 for ids in ledger.sent)
    assert statuses(db_path) == {"sent": 5, "dead": 1}
    kept = query(db_path, "SELECT payload FROM tiktok_outbox WHERE id = 1")[0][0]
    assert orjson.loads(kept) == {"event": "Purchase", "event_id": "order-0"}
    reason = query(db_path, "SELECT last_error FROM tiktok_outbox WHERE status = 'dead'")[0][0]
    assert "only purchases" in reason
