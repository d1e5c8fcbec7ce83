"""The Destination protocol: TikTok's implementation, and the worker driving another platform."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import orjson

from forwarder.backoff import BackoffPolicy
from forwarder.destination import OVERSIZE, Batch, Built, Destination, Item, Refused, Route
from forwarder.errors import TransportError
from forwarder.events import OutboxRow
from forwarder.metrics import Metrics
from forwarder.outcome import ApiResponse, Outcome, Verdict
from forwarder.pacing import Pacer
from forwarder.store.sqlite import SQLiteStore
from forwarder.tiktok.build import BuildOptions
from forwarder.tiktok.destination import TikTok
from forwarder.worker import Worker, WorkerConfig

from .conftest import insert
from .helpers import purchase, query, statuses

NOW = 1_760_000_000.0
OPTIONS = BuildOptions(
    default_pixel="PIXEL",
    phone_region=None,
    consent_default="granted",
    max_age_s=7 * 86400,
    test_event_code="TEST1",
)


class Answers:
    """A sender that records each body and answers from a list (or raises what it holds)."""

    def __init__(self, *answers: ApiResponse | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[bytes] = []

    async def send(self, body: bytes) -> ApiResponse:
        """Record *body*; answer with the next answer."""
        self.bodies.append(body)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def row(i: int, payload: str = '{"user": {"email": "A@B.example"}}') -> OutboxRow:
    """A claimed row as the store gives it."""
    return OutboxRow(i, f"e{i}", "Purchase", int(NOW) - 60, payload, None, None, None, 0, NOW)


def test_tiktok_builds_an_item_whose_bytes_are_its_event() -> None:
    """build() serialises the event once: the bytes sent are exactly the built event."""
    tiktok = TikTok(Answers(), OPTIONS)
    item = tiktok.build(row(1), NOW)
    assert isinstance(item, Item)
    assert orjson.loads(item.data) == item.built.event
    assert item.built.route == Route("web", "PIXEL", "TEST1")


def test_tiktok_refuses_a_broken_row_with_its_reason() -> None:
    """A row TikTok would refuse comes back as Refused naming the field, not as an item."""
    refused = TikTok(Answers(), OPTIONS).build(row(2, payload="[1, 2]"), NOW)
    assert isinstance(refused, Refused)
    assert refused.reason.startswith("[malformed/")


def test_tiktok_refuses_what_no_request_can_carry() -> None:
    """An event larger than FORWARDER_BATCH_MAX_BYTES is refused as oversize; the rest batch."""
    tiktok = TikTok(Answers(), OPTIONS, max_bytes=2_000)
    big = '{"properties": {"description": "' + "x" * 3_000 + '"}}'
    items = [tiktok.build(row(1), NOW), tiktok.build(row(2, big), NOW)]
    assert all(isinstance(item, Item) for item in items)
    batches, refused = tiktok.batches([i for i in items if isinstance(i, Item)])
    assert [b.row_ids() for b in batches] == [[1]]
    assert [(r.row_id, r.code) for r in refused] == [(2, OVERSIZE)]
    assert "FORWARDER_BATCH_MAX_BYTES=2000" in refused[0].reason


async def test_tiktok_send_reads_the_code_not_the_status() -> None:
    """An HTTP 200 carrying TikTok's rate-limit code is a throttle, sent as TikTok's envelope."""
    sender = Answers(ApiResponse(200, b'{"code": 40100, "message": "too many"}', None))
    tiktok = TikTok(sender, OPTIONS, clock=lambda: NOW)
    item = tiktok.build(row(1), NOW)
    assert isinstance(item, Item)
    batches, _ = tiktok.batches([item])
    outcome = await tiktok.send(batches[0])
    assert outcome.verdict is Verdict.THROTTLE
    sent = orjson.loads(sender.bodies[0])
    assert (sent["event_source_id"], sent["test_event_code"]) == ("PIXEL", "TEST1")
    assert [event["event_id"] for event in sent["data"]] == ["e1"]


async def test_tiktok_send_turns_no_answer_into_a_retry() -> None:
    """A timeout does not escape send(): it is an outcome the worker retries."""
    tiktok = TikTok(Answers(TransportError("timeout", "no answer in 5 s")), OPTIONS)
    item = tiktok.build(row(1), NOW)
    assert isinstance(item, Item)
    outcome = await tiktok.send(tiktok.batches([item])[0][0])
    assert (outcome.verdict, outcome.code) == (Verdict.RETRY, "timeout")


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
