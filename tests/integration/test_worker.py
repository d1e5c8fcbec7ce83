"""The worker against the fake TikTok over real loopback HTTP, on real SQLite files."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from forwarder.errors import ConfigError, StoreError
from forwarder.fake_tiktok import Scripted
from forwarder.outcome import ApiResponse
from forwarder.settings import Settings
from forwarder.startup import worker_config
from forwarder.tiktok.destination import Sender, TikTok
from forwarder.worker import PRUNE_AGAIN_S, PRUNE_BATCH
from tests.support.harness import PIXEL, TOKEN, Harness
from tests.support.rows import insert, purchase, query, statuses
from tests.support.waiting import wait_until


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def test_delivers_everything_once(harness: Harness, db_path: Path) -> None:
    """2,500 realistic events arrive once each, hashed, in requests of at most 1,000."""
    insert(db_path, [purchase(i) for i in range(2500)])
    totals = await harness.drain()
    assert totals.delivered == 2500
    assert statuses(db_path) == {"sent": 2500}
    ids = harness.fake.accepted_ids()
    assert len(ids) == len(set(ids)) == 2500
    assert harness.fake.requests == 3
    first = next(e for e in harness.fake.accepted if e["event_id"] == "order-1")
    assert first["user"]["email"] == [_sha("buyer1@example.com")]
    assert first["user"]["phone"] == [_sha("+12135550001")]
    assert first["user"]["ip"] == "203.0.113.7"
    assert first["event_source_id"] == PIXEL
    assert harness.metrics.delivered.labels("Purchase")._value.get() == 2500


class _Counting:
    """A sender that counts the events of each request body before sending it on."""

    def __init__(self, inner: Sender) -> None:
        self.inner = inner
        self.events: list[int] = []

    async def send(self, body: bytes) -> ApiResponse:
        self.events.append(body.count(b'"event_id"'))
        return await self.inner.send(body)


async def test_claims_are_sized_to_fill_a_request(harness: Harness, db_path: Path) -> None:
    """Under a byte cap that 1,000 events overflow, claims shrink to what one request carries."""
    insert(db_path, [purchase(i) for i in range(6000)])
    worker = harness.worker(max_bytes=470_000)  # a little less than 1,000 of these events
    tiktok = worker.shared.destination
    assert isinstance(tiktok, TikTok)
    counting = tiktok.sender = _Counting(tiktok.sender)
    intake, take = worker.intake, worker.intake.take
    ahead: list[int] = []  # the rows each claim made ahead asked for

    async def watched(now: float) -> bool:
        before = intake._ahead
        taken = await take(now)
        if intake._ahead is not None and intake._ahead is not before:
            ahead.append(intake._ahead_limit)
        return taken

    intake.take = watched  # type: ignore[method-assign]
    totals = await worker.run()
    assert totals.delivered == 6000
    assert statuses(db_path) == {"sent": 6000}
    full = max(counting.events)
    small = [n for n in counting.events if n < 0.9 * full]
    # Only the first two claims ask for 1,000 rows, before any event was measured: their
    # overflow and the backlog's last rows are the only small requests.
    assert len(small) <= 3, counting.events
    assert len(counting.events) <= 10, counting.events
    # A fitted claim counts as full, so the next one is still claimed while it is built.
    assert len([limit for limit in ahead if limit < 1000]) >= 2, ahead


async def test_sent_rows_record_tiktok_request_id(harness: Harness, db_path: Path) -> None:
    """A sent row keeps TikTok's request_id, code 0, one attempt and its sent time."""
    insert(db_path, [purchase(1)])
    await harness.drain()
    [(code, request_id, attempts, sent_at)] = query(
        db_path, "SELECT last_code, request_id, attempts, sent_at FROM tiktok_outbox"
    )
    assert (code, attempts) == ("0", 1)
    assert request_id and sent_at


async def test_malformed_rows_die_with_reasons_and_others_flow(
    harness: Harness, db_path: Path
) -> None:
    """Bad rows end dead with a stored code and reason; the good ones are delivered."""
    insert(
        db_path,
        [purchase(i) for i in range(10)]
        + [
            {"event_id": "bad-json", "event": "Purchase", "payload": "not json"},
            {"event_id": "bad-list", "event": "Purchase", "payload": "[1, 2]"},
            {
                "event_id": "bad-value",
                "event": "Purchase",
                "payload": '{"properties": {"value": "x"}}',
            },
            {"event_id": "no-name", "event": "", "payload": "{}"},
            {"event_id": "typo", "event": "Lead", "payload": '{"user": {"emial": "a@b.c"}}'},
        ],
    )
    totals = await harness.drain()
    assert totals.delivered == 10
    dead = dict(query(db_path, "SELECT event_id, last_code FROM tiktok_outbox WHERE status='dead'"))
    assert dead == dict.fromkeys(
        ["bad-json", "bad-list", "bad-value", "no-name", "typo"], "malformed"
    )
    reasons = [
        r for (r,) in query(db_path, "SELECT last_error FROM tiktok_outbox WHERE status='dead'")
    ]
    assert all(reasons) and not any("a@b.c" in r for r in reasons)


@pytest.mark.parametrize("names_index", [True, False])
async def test_poison_event_is_isolated(harness: Harness, db_path: Path, names_index: bool) -> None:
    """One event TikTok rejects among 500 is dead-lettered alone; the other 499 arrive once."""
    insert(db_path, [purchase(i) for i in range(500)])
    harness.fake.poison.add("order-123")
    harness.fake.poison_names_index = names_index
    totals = await harness.drain()
    assert statuses(db_path) == {"sent": 499, "dead": 1}
    [(event_id, code, reason)] = query(
        db_path, "SELECT event_id, last_code, last_error FROM tiktok_outbox WHERE status='dead'"
    )
    assert (event_id, code) == ("order-123", "40002")
    assert "poison" in reason
    ids = harness.fake.accepted_ids()
    assert len(ids) == len(set(ids)) == 499
    assert totals.dead == 1
    if names_index:
        assert harness.fake.requests == 2
    else:
        assert harness.fake.requests <= 2 * 9 + 1


async def test_whole_request_rejection_is_not_bisected(harness: Harness, db_path: Path) -> None:
    """A 40002 naming a top-level field, for a row's own pixel, kills those rows unsplit."""
    insert(db_path, [{**purchase(i), "pixel_code": "TYPO-PIXEL"} for i in range(50)])
    harness.fake.script(
        Scripted(code=40002, message="Invalid value for event_source_id: not a valid string.")
    )
    await harness.drain()
    assert statuses(db_path) == {"dead": 50}
    assert harness.fake.requests == 1


async def test_bad_default_pixel_pauses_instead_of_killing(harness: Harness, db_path: Path) -> None:
    """The same rejection for the configured default pixel is a configuration fault: pause."""
    insert(db_path, [purchase(i) for i in range(50)])
    harness.fake.script(
        Scripted(code=40002, message="Invalid value for event_source_id: not a valid string.")
    )
    totals = await harness.drain()
    assert totals.paused_reason == "config_40002"
    assert statuses(db_path) == {"pending": 50}
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox") == [(0,)]
    harness.clock.advance(5)
    await harness.drain()
    assert statuses(db_path) == {"sent": 50}


@pytest.mark.parametrize(
    "answer, code",
    [
        (Scripted(code=50000, message="System error"), "50000"),
        (Scripted(http_status=502, body=b"<html>Bad Gateway</html>"), "http_502"),
        (Scripted(http_status=503, body=b""), "http_503"),
        (Scripted(http_status=200, body=b'{"code": 0, "mess'), "bad_body"),
        (Scripted(drop=True), "connection"),
    ],
)
async def test_transient_failures_retry_later(
    harness: Harness, db_path: Path, answer: Scripted, code: str
) -> None:
    """A transient failure counts an attempt, backs off, and delivers once due again."""
    insert(db_path, [purchase(i) for i in range(20)])
    harness.fake.script(answer)
    totals = await harness.drain()
    assert totals.delivered == 0
    rows = query(db_path, "SELECT status, attempts, last_code, next_attempt_at FROM tiktok_outbox")
    assert {(s, a, c) for s, a, c, _ in rows} == {("pending", 1, code)}
    assert all(harness.clock.now < due <= harness.clock.now + 1.0 for *_, due in rows)
    harness.clock.advance(2.0)
    totals = await harness.drain()
    assert totals.delivered == 20
    assert statuses(db_path) == {"sent": 20}


async def test_timeout_is_retried(harness: Harness, db_path: Path) -> None:
    """An answer slower than the request timeout is a retry with code timeout."""
    harness.timeout_s = 0.2
    insert(db_path, [purchase(1)])
    harness.fake.script(Scripted(delay_s=1.0))
    await harness.drain()
    assert query(db_path, "SELECT status, last_code FROM tiktok_outbox") == [("pending", "timeout")]


async def test_retry_after_is_honoured(harness: Harness, db_path: Path) -> None:
    """A 503 with Retry-After holds the rows back at least that long."""
    insert(db_path, [purchase(1)])
    harness.fake.script(Scripted(http_status=503, body=b"", retry_after="120"))
    await harness.drain()
    [(due,)] = query(db_path, "SELECT next_attempt_at FROM tiktok_outbox")
    assert due >= harness.clock.now + 120


async def test_rate_limit_slows_the_destination_and_counts_no_attempt(
    harness: Harness, db_path: Path
) -> None:
    """40100 pauses the destination, halves concurrency, and costs the events no attempt."""
    insert(db_path, [purchase(i) for i in range(10)])
    harness.fake.script(
        Scripted(code=40100, message="Too many requests. Please retry in some time.")
    )
    await harness.drain()
    rows = query(db_path, "SELECT status, attempts, last_code, next_attempt_at FROM tiktok_outbox")
    assert {(s, a, c) for s, a, c, _ in rows} == {("pending", 0, "40100")}
    assert harness.pacer.limit == 2
    assert all(due >= harness.pacer.throttled_until for *_, due in rows)
    harness.clock.advance(10)
    await harness.drain()
    assert statuses(db_path) == {"sent": 10}


async def test_credentials_pause_then_resume(harness: Harness, db_path: Path) -> None:
    """40105 pauses delivery, dead-letters nothing, counts no attempt; a good probe resumes it."""
    insert(db_path, [purchase(i) for i in range(30)])
    harness.fake.token = "rotated"
    totals = await harness.drain()
    assert totals.paused_reason == "40105"
    assert statuses(db_path) == {"pending": 30}
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox") == [(0,)]
    state = await harness.store.summary(harness.clock.now)
    assert state.state["destination"]["paused"] is True
    assert harness.metrics.paused.labels("40105")._value.get() == 1
    harness.fake.token = TOKEN
    harness.clock.advance(5)
    totals = await harness.drain()
    assert totals.paused_reason is None
    assert statuses(db_path) == {"sent": 30}
    state = await harness.store.summary(harness.clock.now)
    assert state.state["destination"]["paused"] is False
    assert harness.metrics.paused.labels("40105")._value.get() == 0


async def test_unknown_code_confined_to_one_event_dies_after_spread_retries(
    harness: Harness, db_path: Path
) -> None:
    """A code forwarder does not know, answered only to the requests carrying one event while
    the others are accepted, dead-letters that event alone at its fifth attempt, the last ones
    at least FORWARDER_UNKNOWN_CODE_MIN_DELAY apart (all five fitted in seconds before);
    delivery never pauses."""
    insert(db_path, [{**purchase(0), "event_id": "order-bad"}])
    harness.fake.poison.add("order-bad")
    harness.fake.poison_code = 47777
    harness.fake.poison_names_index = False
    failures: list[float] = []  # when each attempt of the bad event failed
    for round_ in range(60):
        insert(db_path, [purchase(100 * round_ + i) for i in range(3)])
        totals = await harness.drain(max_events=1)
        assert totals.paused_reason is None
        [(status, attempts, due)] = query(
            db_path,
            "SELECT status, attempts, next_attempt_at FROM tiktok_outbox"
            " WHERE event_id = 'order-bad'",
        )
        if attempts > len(failures):
            failures.append(harness.clock.now)
            if status == "pending" and attempts >= 3:  # the first two retries are quick
                assert due >= harness.clock.now + 60.0, "retried sooner than the floor"
        if status == "dead":
            break
        harness.clock.advance(20.0)
    assert len(failures) == 5
    assert failures[-1] - failures[2] >= 2 * 60.0
    [(code, reason)] = query(
        db_path, "SELECT last_code, last_error FROM tiktok_outbox WHERE status = 'dead'"
    )
    assert code == "47777"
    assert "47777" in reason and "rejected by the fake" in reason
    assert statuses(db_path) == {"sent": 3 * (round_ + 1), "dead": 1}
    assert harness.metrics.dead.labels("unknown_code")._value.get() == 1


async def test_unknown_code_storm_pauses_and_dead_letters_nothing(
    harness: Harness, db_path: Path
) -> None:
    """A never-seen code answered to every request pauses delivery as storm_49999 after three
    answers, probes with one event counting no attempt however long it lasts, and delivers
    everything once TikTok accepts again (the backlog was dead within seconds before)."""
    insert(db_path, [purchase(i) for i in range(30)])
    harness.fake.script(Scripted(code=49999, message="Something new", forever=True))
    totals = await harness.drain(max_events=5)
    assert totals.paused_reason == "storm_49999"
    storm = harness.fake.answers[49999]
    assert 3 <= storm <= 3 + 4 - 1  # the three of the storm, and the other slots' requests
    assert statuses(db_path) == {"pending": 30}
    # The two answers before the storm counted an attempt; the pause counts none.
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox") == [(1,)]
    assert harness.metrics.paused.labels("storm_unknown")._value.get() == 1
    state = (await harness.store.summary(harness.clock.now)).state["destination"]
    assert (state["paused"], state["reason"]) == (True, "storm_49999")
    for _ in range(12):  # twelve probe intervals, the last ones a minute each
        harness.clock.advance(61.0)
        totals = await harness.drain(max_events=5)
        assert totals.paused_reason == "storm_49999"
    assert harness.fake.answers[49999] == storm + 12  # one probe each
    assert statuses(db_path) == {"pending": 30}
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox") == [(1,)]
    harness.fake.clear_script()
    harness.clock.advance(121.0)  # past the probe and every retry of the first answers
    totals = await harness.drain(max_events=5)
    assert totals.paused_reason is None
    assert statuses(db_path) == {"sent": 30}
    assert harness.metrics.paused.labels("storm_unknown")._value.get() == 0
    state = (await harness.store.summary(harness.clock.now)).state["destination"]
    assert state["paused"] is False


@pytest.mark.parametrize(
    ("answer", "reason", "label"),
    [
        (Scripted(http_status=503, body=b"", forever=True), "storm_http_503", "storm_http_503"),
        (Scripted(code=51010, message="rpc timeout", forever=True), "storm_51010", "storm_other"),
        (Scripted(drop=True, forever=True), "storm_connection", "storm_connection"),
    ],
    ids=["http_503", "51010", "connection"],
)
async def test_an_outage_of_every_request_pauses(
    harness: Harness, db_path: Path, answer: Scripted, reason: str, label: str
) -> None:
    """TikTok's own failures answered to every request pause and probe too, instead of sending
    the whole backlog again and again; the pause's label stays in a closed set."""
    insert(db_path, [purchase(i) for i in range(30)])
    harness.fake.script(answer)
    totals = await harness.drain(max_events=5)
    assert totals.paused_reason == reason
    assert harness.metrics.paused.labels(label)._value.get() == 1
    assert 3 <= harness.fake.requests <= 3 + 4 - 1  # the storm, and requests in flight by then
    assert statuses(db_path) == {"pending": 30}
    harness.fake.clear_script()
    harness.clock.advance(700.0)
    totals = await harness.drain(max_events=5)
    assert totals.paused_reason is None
    assert statuses(db_path) == {"sent": 30}


async def test_an_unknown_code_storm_on_one_request_is_recognised_at_once(
    harness: Harness, db_path: Path
) -> None:
    """When one request carries the whole backlog, its first retries are quick, so three
    answers of a never-seen code pause delivery within seconds, not after minutes of floors."""
    insert(db_path, [purchase(i) for i in range(30)])
    harness.fake.script(Scripted(code=49999, message="Something new", forever=True))
    for _ in range(3):
        totals = await harness.drain()
        harness.clock.advance(2.0)  # the ordinary backoff of the first two retries: 1 s, 2 s
    assert totals.paused_reason == "storm_49999"
    assert harness.fake.answers[49999] == 3
    assert query(db_path, "SELECT min(attempts), max(attempts) FROM tiktok_outbox") == [(2, 2)]
    assert statuses(db_path) == {"pending": 30}


def test_storm_threshold_below_the_unknown_code_attempts() -> None:
    """A storm threshold not below the unknown code's attempts is refused at start-up: one
    request carrying the whole backlog would be dead before three answers paused delivery."""
    settings = Settings(**{"FORWARDER_STORM_ANSWERS": 5})
    with pytest.raises(ConfigError, match="FORWARDER_STORM_ANSWERS must be smaller"):
        worker_config(settings)
    ok = Settings(**{"FORWARDER_STORM_ANSWERS": 4})
    assert worker_config(ok).storm_answers == 4


# The families: permission, authorisation and configuration codes of the SDK (S2).
PAUSING = [40003, 40007, 40103, 40106, 40118, 40131, 40300, 40309, 41000, 41001, 41002, 70001]


@pytest.mark.parametrize("code", PAUSING)
async def test_permission_and_configuration_families_pause(
    harness: Harness, db_path: Path, code: int
) -> None:
    """A permission, authorisation or configuration code answered to every request pauses at
    the first answer like 40105: nothing dead, no attempt counted, all sent once it clears."""
    insert(db_path, [purchase(i) for i in range(30)])
    harness.fake.script(Scripted(code=code, message="Not in whitelist", forever=True))
    for _ in range(5):
        totals = await harness.drain(max_events=5)
        assert totals.paused_reason == str(code)
        assert statuses(db_path) == {"pending": 30}
        harness.clock.advance(61.0)
    assert query(db_path, "SELECT max(attempts), min(last_code) FROM tiktok_outbox") == [
        (0, str(code))
    ]
    assert harness.metrics.paused.labels(str(code))._value.get() == 1
    harness.fake.clear_script()
    totals = await harness.drain(max_events=5)
    assert totals.paused_reason is None
    assert statuses(db_path) == {"sent": 30}
    assert harness.metrics.paused.labels(str(code))._value.get() == 0


async def test_ambiguous_codes_pause_after_a_few(harness: Harness, db_path: Path) -> None:
    """40102 answers retry, then pause the destination instead of dead-lettering."""
    insert(db_path, [purchase(1)])
    harness.fake.script(Scripted(code=40102, message="Requests made too frequently", times=3))
    for _ in range(3):
        totals = await harness.drain(ambiguous_code_max_answers=3)
        harness.clock.advance(600)
    assert totals.paused_reason == "ambiguous_40102"
    assert statuses(db_path) == {"pending": 1}


async def test_consent_and_test_events(harness: Harness, db_path: Path) -> None:
    """Denied consent strips hashed identifiers; test events travel in their own request."""
    denied = {"consent": {"ad_user_data": "denied", "ad_personalization": "denied"}}
    rows = [purchase(1, **denied), purchase(2)]
    rows.append({**purchase(3), "test_event_code": "TEST42"})
    insert(db_path, rows)
    await harness.drain()
    by_id = {e["event_id"]: e for e in harness.fake.accepted}
    assert "email" not in by_id["order-1"]["user"]
    assert by_id["order-1"]["limited_data_use"] is True
    assert "email" in by_id["order-2"]["user"]
    assert by_id["order-3"]["test_event_code"] == "TEST42"
    assert by_id["order-2"].get("test_event_code") is None
    assert harness.fake.requests == 2


async def test_stop_mid_flight_loses_nothing(harness: Harness, db_path: Path) -> None:
    """stop() during a slow request lets it finish and releases the rest: nothing inflight."""
    harness.fake.latency_s = 0.3
    insert(db_path, [purchase(i) for i in range(5000)])
    worker = harness.worker(drain=False, max_events=500)
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: harness.fake.requests >= 1, what="a request in flight")
    worker.stop()
    totals = await asyncio.wait_for(task, 10)
    counts = statuses(db_path)
    assert "inflight" not in counts
    assert counts.get("sent", 0) == totals.delivered == len(harness.fake.accepted)
    assert counts.get("sent", 0) + counts.get("pending", 0) == 5000
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox WHERE status='pending'") in (
        [(0,)],
        [(None,)],
    )


async def test_stop_gives_back_the_rows_claimed_ahead(
    harness: Harness, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows claimed ahead while a batch was built, when stop() comes before they go out, are
    given back at shutdown with the rest: none left inflight, no attempt counted."""
    insert(db_path, [purchase(i) for i in range(400)])
    worker = harness.worker(drain=False, max_events=150)
    real_claim = harness.store.claim
    claimed: list[int] = []

    async def claim(*args: Any) -> Any:
        if len(claimed) == 1:  # the claim made ahead: it starts while the first batch is built
            worker.stop()
        rows = await real_claim(*args)
        claimed.append(len(rows))
        return rows

    monkeypatch.setattr(harness.store, "claim", claim)
    await asyncio.wait_for(worker.run(), 10)
    assert claimed == [150, 150]
    assert statuses(db_path) == {"pending": 400}
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox WHERE status='pending'") == [
        (0,)
    ]


async def test_rows_claimed_ahead_are_not_rescued_by_their_own_daemon(
    harness: Harness, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows claimed ahead stay ours through a store outage longer than the lease: the
    heartbeat keeps them, our own rescue does not hand them to the next claim, none is sent
    twice."""
    insert(db_path, [purchase(i) for i in range(300)])
    worker = harness.worker(drain=False, max_events=100)
    assert await worker.tick()  # batch A out, batch B claimed ahead
    await asyncio.gather(*worker.delivery.tasks)
    real_rescue = harness.store.rescue_expired

    async def down(now: float) -> int:
        raise StoreError("SQLite failed to rescue leases: database is locked")

    monkeypatch.setattr(harness.store, "rescue_expired", down)
    for _ in range(5):  # the loop tries again every few seconds while the database is down
        harness.clock.advance(15.0)
        with pytest.raises(StoreError):
            await worker.tick()
    monkeypatch.setattr(harness.store, "rescue_expired", real_rescue)
    harness.clock.advance(15.0)  # the database is back by the next try
    worker.drain = True
    await asyncio.wait_for(worker.run(), 20)
    ids = harness.fake.accepted_ids()
    assert statuses(db_path) == {"sent": 300}
    assert len(ids) == len(set(ids)) == 300, f"{len(ids) - len(set(ids))} events sent twice"


async def test_expired_leases_are_rescued_and_delivered(harness: Harness, db_path: Path) -> None:
    """Rows a dead daemon left inflight are rescued once the lease expires, then delivered."""
    insert(db_path, [purchase(i) for i in range(7)])
    now = harness.clock.now
    await harness.store.claim(7, "killed-daemon", now, now + 30)
    totals = await harness.drain()
    assert totals.delivered == 0
    harness.clock.advance(31)
    totals = await harness.drain()
    assert totals.rescued == 7 and totals.delivered == 7
    assert statuses(db_path) == {"sent": 7}


async def test_too_old_events_are_dead(harness: Harness, db_path: Path) -> None:
    """An event older than the maximum age is dead with code too_old, not sent."""
    insert(db_path, [{**purchase(1), "event_time": int(harness.clock.now) - 8 * 86400}])
    await harness.drain()
    assert query(db_path, "SELECT status, last_code FROM tiktok_outbox") == [("dead", "too_old")]
    assert harness.fake.requests == 0


async def test_claims_wait_while_answers_wait_to_be_written(
    harness: Harness, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While settle_backlog_max answers wait for the database, the loop claims nothing more
    (the writes queued without bound before, and stalled the loop behind them); then it goes on."""
    insert(db_path, [purchase(i) for i in range(100)])
    gate = asyncio.Event()
    waiting = 0
    real_mark_sent = harness.store.mark_sent

    async def slow_mark_sent(*args: Any, **kwargs: Any) -> int:
        nonlocal waiting
        waiting += 1
        await gate.wait()
        return await real_mark_sent(*args, **kwargs)

    monkeypatch.setattr(harness.store, "mark_sent", slow_mark_sent)
    worker = harness.worker(max_events=5)
    bound = worker.intake.settle_backlog_max
    assert bound == 8  # twice the harness's 4 requests in flight
    slept_when_full = asyncio.Event()
    real_sleep = worker.sleep

    async def sleep(seconds: float) -> None:
        if waiting >= bound:
            slept_when_full.set()
        await real_sleep(seconds)

    monkeypatch.setattr(worker, "sleep", sleep)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(slept_when_full.wait(), 10)
    # Without the bound all 20 requests of 5 went out. Batches claimed before the backlog
    # filled (in flight, waiting for a slot, or claimed ahead: 4 at most) may still follow.
    assert bound <= harness.fake.requests <= bound + 4
    assert statuses(db_path)["pending"] > 0
    gate.set()
    totals = await asyncio.wait_for(run, 30)
    assert totals.delivered == 100
    assert statuses(db_path) == {"sent": 100}


async def test_old_sent_rows_are_pruned_a_batch_per_turn(
    harness: Harness, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog of sent rows past the retention goes PRUNE_BATCH rows per turn of the loop,
    the next turn PRUNE_AGAIN_S later, and is reported in one log line once caught up."""
    old = harness.clock.now - 8 * 86400
    insert(db_path, [purchase(i) for i in range(2 * PRUNE_BATCH + 10)])
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE tiktok_outbox SET status = 'sent', sent_at = ?", (old,))
    conn.close()
    limits: list[int] = []
    real_prune = harness.store.prune_sent

    async def prune_sent(before: float, limit: int) -> int:
        limits.append(limit)
        return await real_prune(before, limit)

    monkeypatch.setattr(harness.store, "prune_sent", prune_sent)
    worker = harness.worker(drain=False, retention_s=7 * 86400)
    with capture_logs() as logs:
        run = asyncio.create_task(worker.run())
        try:
            for turn in range(1, 4):
                await wait_until(lambda turn=turn: len(limits) == turn, 10, f"prune {turn}")
                harness.clock.advance(PRUNE_AGAIN_S)
            await wait_until(lambda: not query(db_path, "SELECT id FROM tiktok_outbox"), 10)
        finally:
            worker.stop()
            await asyncio.wait_for(run, 10)
    assert limits == [PRUNE_BATCH] * 3
    pruned = [entry["rows"] for entry in logs if entry["event"] == "sent_rows_pruned"]
    assert pruned == [2 * PRUNE_BATCH + 10]


async def test_a_summary_line_a_minute_while_delivering(harness: Harness, db_path: Path) -> None:
    """At info level the worker logs delivered, retried and dead events by code each minute."""
    worker = harness.worker(drain=False)
    with capture_logs() as logs:
        task = asyncio.create_task(worker.run())
        try:
            insert(db_path, [purchase(i) for i in range(3)])
            await wait_until(lambda: statuses(db_path) == {"sent": 3}, 20, "sent")
            assert not [log for log in logs if log["event"] == "delivery_summary"]
            harness.clock.advance(61)
            await wait_until(
                lambda: any(log["event"] == "delivery_summary" for log in logs), 20, "summary"
            )
        finally:
            worker.stop()
            await task
    [summary] = [log for log in logs if log["event"] == "delivery_summary"]
    assert summary["log_level"] == "info"
    assert (summary["delivered"], summary["retried"], summary["dead"]) == (3, 0, 0)
    assert summary["codes"] == {"0": 3}


async def test_dead_rows_are_logged_per_reason(harness: Harness, db_path: Path) -> None:
    """One too_old and one malformed row give two events_dead lines, one row each."""
    old = {**purchase(1), "event_time": int(time.time()) - 30 * 86400}
    insert(db_path, [old, {**purchase(2), "payload": "not json"}])
    with capture_logs() as logs:
        await harness.drain()
    dead = {log["reason"]: log["rows"] for log in logs if log["event"] == "events_dead"}
    assert dead == {"too_old": 1, "malformed": 1}


async def test_warnings_of_a_claim_are_one_log_line(harness: Harness, db_path: Path) -> None:
    """Fifty events sent with the same warning log one event_warnings line, not fifty."""
    insert(
        db_path, [purchase(i, user={"email": f"b{i}@x.example", "phone": "12"}) for i in range(50)]
    )
    with capture_logs() as logs:
        totals = await harness.drain()
    assert totals.delivered == 50
    lines = [log for log in logs if log["event"] == "event_warnings"]
    assert len(lines) == 1
    assert lines[0]["events"] == 50
    assert len(lines[0]["row_ids"]) == 10
    assert lines[0]["warnings"] == ["user.phone dropped: not a valid phone number for region US"]
    kept = query(db_path, "SELECT DISTINCT last_error FROM tiktok_outbox")
    assert kept == [("user.phone dropped: not a valid phone number for region US",)]
