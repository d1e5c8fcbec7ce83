"""The outbox stores on real databases: one suite for SQLite and PostgreSQL, then each one's own.

The shared suite runs every test against a migrated SQLite file and a migrated PostgreSQL
database, inserting rows as an application would (the sqlite3 module, or its own asyncpg
connection), so both stores keep the same contract, claims, leases and settling.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from forwarder import migrate
from forwarder.errors import ConfigError, StoreError
from forwarder.store import open_store
from forwarder.store.base import Daemon, Dead, DeadFilter, NewEvent, Retry
from forwarder.store.postgres import PostgresStore, redact_url
from forwarder.store.postgres.connection import SQL as PG_SQL
from forwarder.store.sqlite import SQLiteStore, migrate_sync
from forwarder.store.sqlite.connection import SQL as SQLITE_SQL
from forwarder.store.sqlite.writer import GAP_MIN_S, WRITE_ROWS
from tests.support.rows import insert as sqlite_insert
from tests.support.rows import purchase
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.support.pg import PgServer

from tests.support.backends import Backend, PostgresBackend

OWNER = "test-owner"


def _events(n: int, **extra: object) -> list[dict[str, object]]:
    return [{"event_id": f"e{i}", "event": "Purchase", **extra} for i in range(n)]


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresBackend]:
    """A migrated PostgreSQL store, for the PostgreSQL-only tests."""
    chosen = PostgresBackend(pg_url)
    chosen.store = await PostgresStore.open(pg_url)
    try:
        chosen.applied = await chosen.store.migrate()
        yield chosen
    finally:
        await chosen.store.close()


# --- The shared suite ------------------------------------------------------------------------


async def test_migrate_is_idempotent(backend: Backend) -> None:
    """The first migrate applies every migration, a second applies nothing; both are recorded."""
    every = [m.name for m in migrate.load(backend.dialect)]
    assert backend.applied == every
    assert await backend.store.migrate() == []
    assert await backend.store.applied_migrations() == every
    names = await backend.schema()
    assert {"tiktok_outbox", "tiktok_outbox_dedup", "tiktok_outbox_due", "forwarder_state"} <= names
    assert "forwarder_daemons" in names


async def test_defaults_of_the_contract(backend: Backend) -> None:
    """An insert naming only event_id and event gets every documented default."""
    before = int(time.time())
    await backend.insert([{"event_id": "o-1", "event": "Purchase"}])
    [row] = await backend.query(
        "SELECT event_time, payload, pixel_code, event_source, test_event_code, status, attempts,"
        " next_attempt_at, created_at FROM tiktok_outbox"
    )
    event_time, body, pixel, source, test_code, status, attempts, due, created = row
    assert isinstance(event_time, int)
    assert before <= event_time <= time.time() + 1
    assert (body, pixel, source, test_code, status, attempts, due) == (
        "{}",
        "",
        "web",
        "",
        "pending",
        0,
        0,
    )
    assert abs(created - time.time()) < 5


@pytest.mark.parametrize("pixel", [None, ""])
async def test_unique_key_holds_with_empty_pixel(backend: Backend, pixel: object) -> None:
    """The same (pixel, event, event_id) inserted twice stays one row, even with no pixel."""
    await backend.insert([{"event_id": "o-1", "event": "Purchase", "pixel_code": pixel}] * 2)
    await backend.insert([{"event_id": "o-1", "event": "Purchase"}])
    await backend.insert([{"event_id": "o-1", "event": "Purchase", "pixel_code": None}])
    await backend.insert([{"event_id": "o-1", "event": "Lead"}])
    await backend.insert([{"event_id": "o-1", "event": "Purchase", "pixel_code": "OTHER"}])
    assert await backend.statuses() == {"pending": 3}


async def test_plain_insert_of_a_duplicate_fails(backend: Backend) -> None:
    """Without ON CONFLICT the unique key raises, so an application notices a duplicate."""
    await backend.insert([{"event_id": "o-1", "event": "Purchase"}])
    with pytest.raises(backend.integrity_error):
        await backend.execute(
            "INSERT INTO tiktok_outbox (event_id, event) VALUES ('o-1', 'Purchase')"
        )


async def test_status_must_be_known(backend: Backend) -> None:
    """The status column refuses a value outside pending, inflight, sent, dead."""
    with pytest.raises(backend.integrity_error):
        await backend.execute(
            "INSERT INTO tiktok_outbox (event_id, event, status) VALUES ('x', 'y', 'gone')"
        )


async def test_claim_leases_due_rows_only(backend: Backend) -> None:
    """Claim takes pending rows that are due, marks them inflight, and skips later ones."""
    now = time.time()
    await backend.insert(
        _events(3) + [{"event_id": "later", "event": "Lead", "next_attempt_at": now + 60}]
    )
    rows = await backend.store.claim(10, OWNER, now, now + 30)
    assert sorted(str(r.event_id) for r in rows) == ["e0", "e1", "e2"]
    assert await backend.statuses() == {"inflight": 3, "pending": 1}
    assert await backend.store.claim(10, OWNER, now, now + 30) == []


async def test_claim_returns_the_row_as_written(backend: Backend) -> None:
    """A claimed row carries every column the application wrote, untouched."""
    await backend.insert(
        [
            {
                "event_id": "o-7",
                "event": "Lead",
                "event_time": 1_700_000_000,
                "payload": '{"user": {"email": "a@b.co"}}',
                "pixel_code": "PIX",
                "event_source": "crm",
                "test_event_code": "TEST1",
            }
        ]
    )
    now = time.time()
    [row] = await backend.store.claim(1, OWNER, now, now + 30)
    assert (
        row.event_id,
        row.event,
        row.event_time,
        row.payload,
        row.pixel_code,
        row.event_source,
        row.test_event_code,
        row.attempts,
    ) == ("o-7", "Lead", 1_700_000_000, '{"user": {"email": "a@b.co"}}', "PIX", "crm", "TEST1", 0)
    assert abs(row.created_at - now) < 5


async def test_claim_respects_limit_and_due_order(backend: Backend) -> None:
    """Claim never returns more rows than asked for, and takes the earliest due first."""
    now = time.time()
    await backend.insert(
        [{"event_id": f"e{i}", "event": "Purchase", "next_attempt_at": now - i} for i in range(25)]
    )
    rows = await backend.store.claim(10, OWNER, now, now + 30)
    assert sorted(str(r.event_id) for r in rows) == sorted(f"e{i}" for i in range(15, 25))


async def test_concurrent_claimers_get_disjoint_rows(backend: Backend) -> None:
    """Two stores claiming the same database at once never get the same row."""
    await backend.insert(_events(2000))
    other = await backend.open_other()
    try:
        now = time.time()
        claims = await asyncio.gather(
            *[
                s.claim(150, f"owner-{i}", now, now + 30)
                for i in range(5)
                for s in (backend.store, other)
            ]
        )
    finally:
        await other.close()
    ids = [row.id for claim in claims for row in claim]
    assert len(ids) == 1500
    assert len(set(ids)) == len(ids)


async def test_expired_leases_return_to_pending(backend: Backend) -> None:
    """A row whose lease ran out goes back to pending and can be claimed again."""
    await backend.insert(_events(2))
    now = time.time()
    await backend.store.claim(10, "dead-daemon", now, now + 5)
    assert await backend.store.rescue_expired(now + 1) == 0
    assert await backend.store.rescue_expired(now + 6) == 2
    again = await backend.store.claim(10, OWNER, now + 6, now + 36)
    assert len(again) == 2


async def test_settling_needs_the_lease(backend: Backend) -> None:
    """A daemon whose lease was rescued and re-claimed cannot overwrite the new owner's row."""
    await backend.insert(_events(1))
    store = backend.store
    now = time.time()
    [row] = await store.claim(1, "old", now, now + 1)
    await store.rescue_expired(now + 2)
    await store.claim(1, "new", now + 2, now + 32)
    assert await store.mark_sent([row.id], "old", "0", "req", now + 3) == 0
    assert await store.reschedule([Retry(row.id, now + 9)], "old", "1", "m", None, True, now) == 0
    assert await store.mark_dead([Dead(row.id, "40002", "bad")], "old", None, True, now) == 0
    assert await store.release([row.id], "old", now) == 0
    assert await store.extend_lease([row.id], "old", now + 99) == 0
    assert await store.mark_sent([row.id], "new", "0", "req", now + 3) == 1
    assert await backend.statuses() == {"sent": 1}


async def test_settle_outcomes(backend: Backend) -> None:
    """Sent, rescheduled and dead rows record attempts, codes and reasons."""
    await backend.insert(_events(3))
    store = backend.store
    now = time.time()
    rows = await store.claim(3, OWNER, now, now + 30)
    a, b, c = (r.id for r in rows)
    assert await store.mark_sent([a], OWNER, "0", "req-a", now) == 1
    assert (
        await store.reschedule(
            [Retry(b, now + 42)], OWNER, "50000", "System error", "req-b", True, now
        )
        == 1
    )
    assert await store.mark_dead([Dead(c, "40002", "bad field")], OWNER, "req-c", True, now) == 1
    got = {
        r[0]: r[1:]
        for r in await backend.query(
            "SELECT id, status, attempts, last_code, last_error, request_id, next_attempt_at,"
            " lease_owner FROM tiktok_outbox"
        )
    }
    assert got[a] == ("sent", 1, "0", None, "req-a", 0, None)
    assert got[b] == ("pending", 1, "50000", "System error", "req-b", now + 42, None)
    assert got[c] == ("dead", 1, "40002", "bad field", "req-c", 0, None)


async def test_settling_many_rows_at_once(backend: Backend) -> None:
    """Each row keeps its own next attempt time, code and reason when settled together."""
    await backend.insert(_events(6))
    store = backend.store
    now = time.time()
    ids = sorted(r.id for r in await store.claim(6, OWNER, now, now + 30))
    retries = [Retry(i, now + n) for n, i in enumerate(ids[:3], start=10)]
    assert await store.reschedule(retries, OWNER, "held", "m", None, False, now) == 3
    dead = [Dead(i, f"c{n}", f"reason {n}") for n, i in enumerate(ids[3:])]
    assert await store.mark_dead(dead, OWNER, None, False, now) == 3
    got = sorted(
        await backend.query(
            "SELECT id, status, attempts, next_attempt_at, last_code, last_error FROM tiktok_outbox"
        )
    )
    assert [r[3] for r in got[:3]] == [now + 10, now + 11, now + 12]
    assert [r[4:] for r in got[3:]] == [("c0", "reason 0"), ("c1", "reason 1"), ("c2", "reason 2")]
    assert {r[2] for r in got} == {0}


async def test_mark_sent_replaces_payloads(backend: Backend) -> None:
    """Payloads given to mark_sent replace the stored ones (raw identifiers scrubbed)."""
    await backend.insert(_events(2, payload='{"user": {"email": "raw@example.com"}}'))
    now = time.time()
    ids = sorted(r.id for r in await backend.store.claim(2, OWNER, now, now + 30))
    changed = await backend.store.mark_sent(ids, OWNER, "0", "r", now, payloads=["{}", '{"a":1}'])
    assert changed == 2
    assert sorted(await backend.query("SELECT id, payload FROM tiktok_outbox")) == [
        (ids[0], "{}"),
        (ids[1], '{"a":1}'),
    ]


@pytest.mark.parametrize("scrub", [False, True])
async def test_mark_sent_keeps_notes_as_last_error(backend: Backend, scrub: bool) -> None:
    """A note given for a row (what was sent with a warning) becomes its last_error; the other
    rows' last_error is cleared."""
    await backend.insert(_events(3))
    now = time.time()
    ids = sorted(r.id for r in await backend.store.claim(3, OWNER, now, now + 30))
    await backend.store.reschedule(
        [Retry(i, now) for i in ids], OWNER, "50000", "old failure", None, True, now
    )
    ids = sorted(r.id for r in await backend.store.claim(3, OWNER, now + 1, now + 30))
    payloads = ["{}"] * 3 if scrub else None
    notes = {ids[1]: "user.phone dropped: not a valid number"}
    assert await backend.store.mark_sent(ids, OWNER, "0", "r", now + 1, payloads, notes) == 3
    rows = await backend.query("SELECT id, status, last_error FROM tiktok_outbox ORDER BY id")
    assert rows == [
        (ids[0], "sent", None),
        (ids[1], "sent", "user.phone dropped: not a valid number"),
        (ids[2], "sent", None),
    ]


@pytest.mark.parametrize("scrub", [False, True])
@pytest.mark.parametrize("request_id", ["r-1", None])
async def test_mark_sent_retried_counts_rows_an_earlier_try_marked(
    backend: Backend, scrub: bool, request_id: str | None
) -> None:
    """A settle retried after part of it committed counts every row once, attempts once."""
    await backend.insert(_events(3))
    store = backend.store
    now = time.time()
    ids = sorted(r.id for r in await store.claim(3, OWNER, now, now + 30))
    payloads = ['{"n":1}', '{"n":2}', '{"n":3}'] if scrub else None
    # The first try's first transaction committed two rows, then the try failed.
    first = payloads and payloads[:2]
    assert await store.mark_sent(ids[:2], OWNER, "0", request_id, now, first) == 2
    assert await store.mark_sent(ids, OWNER, "0", request_id, now, payloads) == 3
    got = await backend.query("SELECT status, attempts, payload FROM tiktok_outbox ORDER BY id")
    assert [(status, attempts) for status, attempts, _ in got] == [("sent", 1)] * 3
    if payloads:
        assert [body for *_, body in got] == payloads
    # Another settle (another request, time or code) finds nothing of its own to mark.
    assert await store.mark_sent(ids, OWNER, "0", "r-2", now, payloads) == 0
    assert await store.mark_sent(ids, OWNER, "0", request_id, now + 1, payloads) == 0
    assert await store.mark_sent(ids, OWNER, "20001", request_id, now, payloads) == 0


async def test_release_counts_no_attempt(backend: Backend) -> None:
    """Released rows go back to pending untouched."""
    await backend.insert(_events(2))
    now = time.time()
    rows = await backend.store.claim(2, OWNER, now, now + 30)
    assert await backend.store.release([r.id for r in rows], OWNER, now) == 2
    again = await backend.store.claim(2, OWNER, now, now + 30)
    assert [r.attempts for r in again] == [0, 0]


async def test_extend_lease_keeps_rows_from_rescue(backend: Backend) -> None:
    """A pushed lease keeps a row inflight past its first expiry."""
    await backend.insert(_events(1))
    now = time.time()
    [row] = await backend.store.claim(1, OWNER, now, now + 5)
    assert await backend.store.extend_lease([row.id], OWNER, now + 60) == 1
    assert await backend.store.rescue_expired(now + 10) == 0
    assert await backend.statuses() == {"inflight": 1}


async def test_next_due_at(backend: Backend) -> None:
    """next_due_at is the earliest pending next_attempt_at, or None with nothing pending."""
    assert await backend.store.next_due_at() is None
    await backend.insert(
        [
            {"event_id": "a", "event": "Lead", "next_attempt_at": 2000.5},
            {"event_id": "b", "event": "Lead", "next_attempt_at": 1000.25},
        ]
    )
    assert await backend.store.next_due_at() == 1000.25


async def test_insert_reports_duplicates(backend: Backend) -> None:
    """insert returns the same row id and new=False for a duplicate, with NULL and '' pixels."""
    store = backend.store
    first = await store.insert(NewEvent(event_id="o-9", event="Purchase"))
    second = await store.insert(NewEvent(event_id="o-9", event="Purchase"))
    assert first[1] is True
    assert second == (first[0], False)
    await backend.insert([{"event_id": "o-10", "event": "Lead", "pixel_code": None}])
    [(existing,)] = await backend.query("SELECT id FROM tiktok_outbox WHERE event_id = 'o-10'")
    assert await store.insert(NewEvent(event_id="o-10", event="Lead")) == (existing, False)


async def test_summary(backend: Backend) -> None:
    """The summary counts rows by status, the lag, failing codes and recorded state."""
    await backend.insert(_events(4))
    store = backend.store
    now = time.time()
    rows = await store.claim(2, OWNER, now, now + 30)
    await store.mark_dead([Dead(rows[0].id, "40002", "bad")], OWNER, None, True, now)
    await store.mark_sent([rows[1].id], OWNER, "0", None, now)
    await store.set_state("destination", {"paused": True, "reason": "40105"}, now)
    summary = await store.summary(now + 10)
    assert summary.counts == {"pending": 2, "inflight": 0, "sent": 1, "dead": 1}
    assert summary.oldest_pending_age_s is not None and summary.oldest_pending_age_s >= 9
    assert summary.next_due_in_s == 0
    assert summary.recent_codes == {"40002": 1}
    assert summary.state["destination"] == {"paused": True, "reason": "40105"}


async def test_state_is_shared_between_stores(backend: Backend) -> None:
    """A state key one daemon records is what another daemon reads back (get_state)."""
    other = await backend.open_other()
    try:
        now = time.time()
        assert await other.get_state("throttle") is None
        await backend.store.set_state("throttle", {"until": now + 5, "code": "40100"}, now)
        await backend.store.set_state("throttle", {"until": now + 9, "code": "40100"}, now + 1)
        got = await other.get_state("throttle")
    finally:
        await other.close()
    assert got == {"until": now + 9, "code": "40100"}


async def _dead_letters(backend: Backend, n: int) -> list[int]:
    """Insert *n* rows and dead-letter them with codes c0, c1, c0, c1, ..."""
    await backend.insert(_events(n))
    now = time.time()
    ids = sorted(r.id for r in await backend.store.claim(n, OWNER, now, now + 30))
    dead = [Dead(i, f"c{k % 2}", f"reason {k}") for k, i in enumerate(ids)]
    await backend.store.mark_dead(dead, OWNER, "req-d", True, now)
    return ids


async def test_dead_rows_filters(backend: Backend) -> None:
    """dead_rows lists dead rows oldest first, filtered by code, event, time, ids and limit."""
    ids = await _dead_letters(backend, 5)
    store = backend.store
    assert [r.id for r in await store.dead_rows(DeadFilter())] == ids
    assert [r.id for r in await store.dead_rows(DeadFilter(codes=("c1",)))] == ids[1::2]
    assert await store.dead_rows(DeadFilter(events=("Lead",))) == []
    assert await store.dead_rows(DeadFilter(since=time.time() + 60)) == []
    assert [r.id for r in await store.dead_rows(DeadFilter(ids=(ids[4], ids[0])))] == [
        ids[0],
        ids[4],
    ]
    [first] = await store.dead_rows(DeadFilter(limit=1))
    assert (first.id, first.status, first.last_code, first.last_error, first.attempts) == (
        ids[0],
        "dead",
        "c0",
        "reason 0",
        1,
    )


async def test_replay_dead_records_and_requeues(backend: Backend) -> None:
    """replay_dead returns matching dead rows to pending in batches and keeps their failure."""
    ids = await _dead_letters(backend, 7)
    now = time.time()
    assert await backend.store.replay_dead(DeadFilter(codes=("c0",)), now, batch=2) == 4
    assert await backend.statuses() == {"pending": 4, "dead": 3}
    [(row, replays)] = await backend.store.find("e0")
    assert (row.id, row.status, row.attempts) == (ids[0], "pending", 0)
    assert [(r.attempts, r.last_code, r.last_error, r.request_id) for r in replays] == [
        (1, "c0", "reason 0", "req-d")
    ]
    assert replays[0].replayed_at == now
    assert await backend.store.replay_dead(DeadFilter(limit=2), now) == 2
    assert await backend.statuses() == {"pending": 6, "dead": 1}


async def test_purge_dead_deletes_in_batches(backend: Backend) -> None:
    """purge_dead deletes only matching dead rows, batch by batch, up to the limit."""
    await _dead_letters(backend, 5)
    await backend.insert([{"event_id": "alive", "event": "Lead"}])
    assert await backend.store.purge_dead(DeadFilter(limit=3), batch=2) == 3
    assert await backend.store.purge_dead(DeadFilter(), batch=1) == 2
    assert await backend.statuses() == {"pending": 1}


async def test_find_every_row_of_an_event_id(backend: Backend) -> None:
    """find returns every row with the event_id, whatever its pixel or event name."""
    await backend.insert(
        [
            {"event_id": "x", "event": "Purchase"},
            {"event_id": "x", "event": "Lead", "pixel_code": "P2"},
            {"event_id": "y", "event": "Purchase"},
        ]
    )
    found = await backend.store.find("x")
    assert [(row.event, row.pixel_code, replays) for row, replays in found] == [
        ("Purchase", "", []),
        ("Lead", "P2", []),
    ]
    assert await backend.store.find("nothing") == []


async def test_prune_sent_is_bounded(backend: Backend) -> None:
    """prune_sent deletes at most its limit of rows sent before the cut-off, nothing else."""
    await backend.insert(_events(5))
    store = backend.store
    now = time.time()
    ids = sorted(r.id for r in await store.claim(5, OWNER, now, now + 30))
    await store.mark_sent(ids[:3], OWNER, "0", None, now - 100)
    await store.mark_sent(ids[3:4], OWNER, "0", None, now)
    assert await store.prune_sent(now - 10, 2) == 2
    assert await store.prune_sent(now - 10, 2) == 1
    assert await store.prune_sent(now - 10, 2) == 0
    assert await backend.statuses() == {"sent": 1, "inflight": 1}


async def test_ping(backend: Backend) -> None:
    """ping answers on a migrated database."""
    await backend.store.ping()


# --- Daemons' records and the rescue of a dead daemon's rows (issue 20) ----------------------

BOOT = "0b6f3c1e-boot"
NS = "pid:[4026531836]"


def _daemon(owner: str, pid: int = 4242, boot: str | None = BOOT, ns: str | None = NS) -> Daemon:
    return Daemon(owner, "host-a", pid, boot, ns)


async def _silence(backend: Backend, owner: str, seconds: float) -> None:
    """Make *owner*'s last heartbeat *seconds* older, as if it stopped beating then."""
    await backend.execute(
        f"UPDATE forwarder_daemons SET heartbeat_at = heartbeat_at - {seconds}"
        f" WHERE owner = '{owner}'"
    )


async def test_heartbeat_needs_a_running_record(backend: Backend) -> None:
    """A registered daemon beats; once marked stopped it must register again to beat."""
    store, now = backend.store, time.time()
    assert not await store.heartbeat("ghost", now)
    await store.register_daemon(_daemon(OWNER), now)
    assert await store.heartbeat(OWNER, now + 1)
    [(heartbeat_at, stopped_at)] = await backend.query(
        "SELECT heartbeat_at, stopped_at FROM forwarder_daemons"
    )
    assert abs(heartbeat_at - (now + 1)) < 2 and stopped_at is None
    await store.daemon_stopped(OWNER, now + 2)
    assert not await store.heartbeat(OWNER, now + 3)
    await store.register_daemon(_daemon(OWNER), now + 3)
    assert await store.heartbeat(OWNER, now + 4)
    assert await backend.query("SELECT count(*) FROM forwarder_daemons") == [(1,)]


async def test_rows_of_a_silent_daemon_are_rescued(backend: Backend) -> None:
    """The rows of a daemon silent for longer than the bound return to pending at once, its
    record is marked found dead by the rescuer, and a live daemon's rows stay leased."""
    await backend.insert(_events(5))
    store, now = backend.store, time.time()
    await store.register_daemon(_daemon("dead"), now)
    await store.register_daemon(_daemon("alive"), now)
    await store.register_daemon(_daemon(OWNER), now)
    await store.claim(3, "dead", now, now + 600)
    await store.claim(2, "alive", now, now + 600)
    assert await store.silent_daemons(OWNER, time.time(), 5.0) == []
    await _silence(backend, "dead", 30)
    [silent] = await store.silent_daemons(OWNER, time.time(), 5.0)
    assert silent.owner == "dead" and 29 < silent.silent_s < 40
    assert await store.silent_daemons("dead", time.time(), 5.0) == []  # never itself
    assert await store.rescue_owner("dead", OWNER, time.time(), 5.0) == 3
    assert await backend.statuses() == {"pending": 3, "inflight": 2}
    stopped = await backend.query(
        "SELECT owner, stopped_by FROM forwarder_daemons WHERE stopped_at IS NOT NULL"
    )
    assert stopped == [("dead", OWNER)]
    assert await store.silent_daemons(OWNER, time.time(), 5.0) == []
    assert not await store.heartbeat("dead", time.time())  # it learns it was found dead


async def test_a_daemon_beating_again_keeps_its_rows(backend: Backend) -> None:
    """The heartbeat rule re-checks the heartbeat as it rescues: a daemon that beat since it
    was seen silent keeps its rows and its record."""
    await backend.insert(_events(2))
    store, now = backend.store, time.time()
    await store.register_daemon(_daemon("stalled"), now)
    await store.claim(2, "stalled", now, now + 600)
    await _silence(backend, "stalled", 30)
    assert [d.owner for d in await store.silent_daemons(OWNER, time.time(), 5.0)] == ["stalled"]
    assert await store.heartbeat("stalled", time.time())
    assert await store.rescue_owner("stalled", OWNER, time.time(), 5.0) == 0
    assert await backend.statuses() == {"inflight": 2}
    assert await store.heartbeat("stalled", time.time())


async def test_stopped_daemons_are_not_rescued(backend: Backend) -> None:
    """A daemon that stopped cleanly is never taken for a silent one, however old its beat."""
    store, now = backend.store, time.time()
    await store.register_daemon(_daemon("gone"), now)
    await store.daemon_stopped("gone", now)
    await _silence(backend, "gone", 3600)
    assert await store.silent_daemons(OWNER, time.time(), 5.0) == []
    assert await store.daemons_here(_daemon(OWNER)) == []


async def test_daemons_here_share_the_boot_and_pid_namespace(backend: Backend) -> None:
    """Only records of this boot and PID namespace are offered for the pid check, never this
    daemon's own; without a boot id or namespace, none."""
    store, now = backend.store, time.time()
    here = _daemon("here", pid=11)
    for daemon in (
        here,
        _daemon("rebooted", boot="another-boot"),
        _daemon("container", ns="pid:[4026532001]"),
        _daemon("unknown", boot=None, ns=None),
        _daemon(OWNER, pid=12),
    ):
        await store.register_daemon(daemon, now)
    assert await store.daemons_here(_daemon(OWNER, pid=12)) == [here]
    assert await store.daemons_here(_daemon(OWNER, boot=None)) == []


async def test_rescue_at_a_restart_takes_every_row_of_the_owner(backend: Backend) -> None:
    """Without a silence bound (the restart rule: the process is known gone) every row of the
    owner returns to pending, however fresh its last heartbeat, and only its rows."""
    await backend.insert(_events(1500))
    store, now = backend.store, time.time()
    await store.register_daemon(_daemon("crashed"), now)
    await store.claim(1200, "crashed", now, now + 600)
    await store.claim(300, "other", now, now + 600)
    assert await store.rescue_owner("crashed", OWNER, now) == 1200
    assert await backend.statuses() == {"pending": 1200, "inflight": 300}
    assert await store.rescue_owner("unrecorded", OWNER, now) == 0


async def test_prune_daemons_deletes_only_long_silent_records(backend: Backend) -> None:
    """Records silent for longer than the bound are deleted; others stay."""
    store, now = backend.store, time.time()
    await store.register_daemon(_daemon("old"), now)
    await store.register_daemon(_daemon("recent"), now)
    await _silence(backend, "old", 2 * 86400)
    assert await store.prune_daemons(time.time(), 86400) == 1
    assert await backend.query("SELECT owner FROM forwarder_daemons") == [("recent",)]


# --- SQLite only -----------------------------------------------------------------------------


async def test_sqlite_concurrent_migrations_apply_once(db_path: Path) -> None:
    """Two daemons migrating the same new file at once apply each migration exactly once."""
    results = await asyncio.gather(
        asyncio.to_thread(migrate_sync, db_path), asyncio.to_thread(migrate_sync, db_path)
    )
    every = [m.name for m in migrate.load("sqlite")]
    assert sorted(results, key=len) == [[], every]


def test_sqlite_wal_mode_is_set(db_path: Path) -> None:
    """The migrated file is in WAL mode so application inserts and claims coexist."""
    migrate_sync(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_sqlite_claim_uses_the_partial_index(store: SQLiteStore, db_path: Path) -> None:
    """The claim's subquery reads the due index, not the whole table of sent rows."""
    conn = sqlite3.connect(db_path)
    plan = " ".join(
        str(r[-1])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM tiktok_outbox WHERE status = 'pending'"
            " AND next_attempt_at <= 1 ORDER BY next_attempt_at LIMIT 10"
        )
    )
    conn.close()
    assert "tiktok_outbox_due" in plan


async def test_sqlite_rescue_by_owner_uses_the_lease_index(
    store: SQLiteStore, db_path: Path
) -> None:
    """The rescue of a dead daemon's rows reads the partial index of leased rows, not the
    whole table of sent rows (no index on lease_owner is needed)."""
    conn = sqlite3.connect(db_path)
    params = {"owner": "x", "rescuer": OWNER, "now": 1.0, "before": None, "limit": 10}
    plan = " ".join(
        str(r[-1])
        for sql in (SQLITE_SQL["rescue_owner"], SQLITE_SQL["found_dead"])
        for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)
    )
    conn.close()
    assert "tiktok_outbox_lease" in plan
    assert "SCAN tiktok_outbox " not in f"{plan} "


async def test_sqlite_writer_gives_way_once_an_application_writes(
    store: SQLiteStore, db_path: Path
) -> None:
    """Alone on the file the daemon settles 1,000 rows in one statement without pauses; once
    another connection has committed, in short transactions with the lock left free between."""
    sqlite_insert(db_path, [purchase(i) for i in range(2000)])
    now = time.time()
    rows = await store.claim(1000, "me", now, now + 60)
    writes: list[str] = []
    store._writer._conn.set_trace_callback(writes.append)

    def updates() -> int:
        return sum(sql.lstrip().startswith("UPDATE") for sql in writes)

    assert await store.mark_sent([r.id for r in rows], "me", "0", "req", now) == 1000
    assert updates() == 1
    assert store._writer.gave_way_s == 0

    sqlite_insert(db_path, [purchase(2000)])  # the application commits
    writes.clear()
    rows = await store.claim(1000, "me", now, now + 60)
    assert len(rows) == 1000
    assert updates() == 1000 // WRITE_ROWS  # the claim's leases
    writes.clear()
    assert await store.mark_sent([r.id for r in rows], "me", "0", "req", now) == 1000
    assert updates() == 1000 // WRITE_ROWS
    assert not any(sql.strip() == "BEGIN IMMEDIATE" for sql in writes)
    assert store._writer.gave_way_s >= 2 * 1000 // WRITE_ROWS * GAP_MIN_S


# --- PostgreSQL only -------------------------------------------------------------------------


async def test_pg_on_conflict_from_psql_with_null_pixel(
    pg: PostgresBackend, pg_server: PgServer
) -> None:
    """psql's INSERT ... ON CONFLICT DO NOTHING keeps one row whether pixel_code is NULL or ''."""
    await pg_server.psql(
        pg.url,
        """
        INSERT INTO tiktok_outbox (event_id, event, pixel_code) VALUES ('o-1', 'Purchase', NULL)
            ON CONFLICT DO NOTHING;
        INSERT INTO tiktok_outbox (event_id, event, pixel_code) VALUES ('o-1', 'Purchase', NULL)
            ON CONFLICT DO NOTHING;
        INSERT INTO tiktok_outbox (event_id, event) VALUES ('o-1', 'Purchase')
            ON CONFLICT DO NOTHING;
        INSERT INTO tiktok_outbox (event_id, event, pixel_code) VALUES ('o-1', 'Purchase', '')
            ON CONFLICT ((coalesce(pixel_code, '')), event, event_id) DO NOTHING;
        INSERT INTO tiktok_outbox (event_id, event, payload)
            VALUES ('o-2', 'Lead', '{"user": {"email": "a@b.co"}}') ON CONFLICT DO NOTHING;
        """,
    )
    rows = await pg.query("SELECT event_id, pixel_code, payload FROM tiktok_outbox ORDER BY id")
    assert rows == [("o-1", None, "{}"), ("o-2", "", '{"user": {"email": "a@b.co"}}')]


async def test_pg_skip_locked_claimers_are_disjoint(pg: PostgresBackend) -> None:
    """Many claims racing from three pools get disjoint rows, and none waits on another's lock."""
    await pg.insert(_events(3000))
    stores = [pg.store, await pg.open_other(), await pg.open_other()]
    locker = await asyncpg.connect(pg.url)
    try:
        # An application (or a daemon mid-claim) holds 100 due rows locked: claims skip them.
        await locker.execute("BEGIN")
        locked = await locker.fetch("SELECT id FROM tiktok_outbox ORDER BY id LIMIT 100 FOR UPDATE")
        now = time.time()
        claims = await asyncio.wait_for(
            asyncio.gather(
                *[s.claim(100, f"owner-{k}", now, now + 30) for k in range(10) for s in stores]
            ),
            10,
        )
        await locker.execute("ROLLBACK")
    finally:
        await locker.close()
        for other in stores[1:]:
            await other.close()
    ids = [row.id for claim in claims for row in claim]
    assert len(ids) == len(set(ids)) == 2900
    assert not {r[0] for r in locked} & set(ids)


async def test_pg_concurrent_migrations_apply_once(pg_url: str) -> None:
    """Five daemons migrating one new database at once: the advisory lock applies it once."""
    stores = [await PostgresStore.open(pg_url) for _ in range(5)]
    try:
        results = await asyncio.gather(*[s.migrate() for s in stores])
    finally:
        for store in stores:
            await store.close()
    every = [m.name for m in migrate.load("postgresql")]
    assert sorted(results, key=len) == [[], [], [], [], every]


async def test_pg_schema_matches_the_contract(pg: PostgresBackend) -> None:
    """Partial indexes as on SQLite, a statement-level insert trigger, text payloads, autovacuum."""
    indexes = dict(
        await pg.query("SELECT indexname, indexdef FROM pg_indexes WHERE tablename='tiktok_outbox'")
    )
    assert "WHERE (status = 'pending'::text)" in indexes["tiktok_outbox_due"]
    assert "WHERE (status = 'inflight'::text)" in indexes["tiktok_outbox_lease"]
    assert "WHERE (status = 'dead'::text)" in indexes["tiktok_outbox_dead"]
    assert "WHERE (status = 'sent'::text)" in indexes["tiktok_outbox_sent"]
    assert "UNIQUE" in indexes["tiktok_outbox_dedup"]
    [(tgtype,)] = await pg.query(
        "SELECT tgtype FROM pg_trigger WHERE tgname = 'tiktok_outbox_notify'"
    )
    assert tgtype & 1 == 0, "the trigger must be FOR EACH STATEMENT"
    types = dict(
        await pg.query(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'tiktok_outbox'"
        )
    )
    assert types["payload"] == "text"
    assert types["event_time"] == "bigint"
    assert types["next_attempt_at"] == "double precision"
    [(options,)] = await pg.query("SELECT reloptions FROM pg_class WHERE relname = 'tiktok_outbox'")
    assert "autovacuum_vacuum_scale_factor=0.02" in options


async def test_pg_claim_can_use_the_partial_index(pg: PostgresBackend) -> None:
    """The claim's row lookup is answerable from the due index (no scan of sent rows)."""
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetch(
            "EXPLAIN SELECT id FROM tiktok_outbox WHERE status = 'pending'"
            " AND next_attempt_at <= 1 ORDER BY next_attempt_at LIMIT 10 FOR UPDATE SKIP LOCKED"
        )
    finally:
        await conn.close()
    assert "tiktok_outbox_due" in " ".join(row[0] for row in plan)


async def test_pg_notify_sets_new_rows(pg: PostgresBackend) -> None:
    """An application's insert wakes a listening store through the trigger's NOTIFY."""
    store = pg.store
    now = time.time()
    assert await store.claim(10, OWNER, now, now + 30) == []  # the first claim starts LISTEN
    store.new_rows.clear()
    await pg.insert(_events(3))
    await wait_until(store.new_rows.is_set, 10, "new_rows set by NOTIFY")
    assert len(await store.claim(10, OWNER, now, now + 30)) == 3


async def test_pg_poll_only_never_listens(pg: PostgresBackend) -> None:
    """A poll_only store opens no LISTEN connection and never sets new_rows, yet claims."""
    poll_only = await open_store(pg.url, poll_only=True)
    try:
        now = time.time()
        await pg.store.claim(1, OWNER, now, now + 30)  # a listening witness
        assert await poll_only.claim(1, OWNER, now, now + 30) == []
        pg.store.new_rows.clear()
        await pg.insert(_events(2))
        await wait_until(pg.store.new_rows.is_set, 10, "the witness heard NOTIFY")
        assert not poll_only.new_rows.is_set()
        assert len(await poll_only.claim(5, OWNER, now, now + 30)) == 2
        listening = await pg.query(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert listening == [(1,)]  # the witness's connection only
        assert isinstance(poll_only, PostgresStore) and poll_only._listener is None
    finally:
        await poll_only.close()


async def test_pg_rescue_never_overwrites_a_settling_row(pg: PostgresBackend) -> None:
    """A rescue racing the owner's settle skips the row it holds; the row ends sent."""
    await pg.insert(_events(1))
    now = time.time()
    [row] = await pg.store.claim(1, "slow-daemon", now, now + 1)
    owner = await asyncpg.connect(pg.url)
    try:
        # The live daemon's mark_sent is mid-transaction, its lease already past.
        await owner.execute("BEGIN")
        settled = await owner.execute(
            "UPDATE tiktok_outbox SET status = 'sent', lease_owner = NULL"
            " WHERE id = $1 AND status = 'inflight' AND lease_owner = 'slow-daemon'",
            row.id,
        )
        assert settled == "UPDATE 1"
        assert await asyncio.wait_for(pg.store.rescue_expired(now + 5), 5) == 0
        await owner.execute("COMMIT")
    finally:
        await owner.close()
    assert await pg.store.rescue_expired(now + 5) == 0
    assert await pg.statuses() == {"sent": 1}


async def test_pg_rescue_by_owner_can_use_the_lease_index(pg: PostgresBackend) -> None:
    """The rescue of a dead daemon's rows is answerable from the index of leased rows."""
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute("SET enable_seqscan = off")
        plans = [
            await conn.fetch(f"EXPLAIN {PG_SQL[name]}", "x", 5.0, *extra)
            for name, extra in (("rescue_owner", (1.0,)), ("found_dead", (OWNER,)))
        ]
    finally:
        await conn.close()
    for plan in plans:
        assert "tiktok_outbox_lease" in " ".join(row[0] for row in plan)


async def test_pg_silent_daemon_rescue_never_takes_a_settling_row(pg: PostgresBackend) -> None:
    """The heartbeat rule skips the row a silent daemon is settling, and marks it found dead
    only once it holds no row."""
    await pg.insert(_events(2))
    store, now = pg.store, time.time()
    await store.register_daemon(_daemon("slow"), now)
    first, _ = sorted(await store.claim(2, "slow", now, now + 600), key=lambda row: row.id)
    await _silence(pg, "slow", 30)
    owner = await asyncpg.connect(pg.url)
    try:
        await owner.execute("BEGIN")
        settled = await owner.execute(
            "UPDATE tiktok_outbox SET status = 'sent', lease_owner = NULL"
            " WHERE id = $1 AND status = 'inflight' AND lease_owner = 'slow'",
            first.id,
        )
        assert settled == "UPDATE 1"
        rescue = store.rescue_owner("slow", OWNER, time.time(), 5.0)
        assert await asyncio.wait_for(rescue, 5) == 1
        assert await pg.query("SELECT stopped_at FROM forwarder_daemons") == [(None,)]
        await owner.execute("COMMIT")
    finally:
        await owner.close()
    assert await store.rescue_owner("slow", OWNER, time.time(), 5.0) == 0
    assert await pg.statuses() == {"sent": 1, "pending": 1}
    assert await pg.query("SELECT stopped_by FROM forwarder_daemons") == [(OWNER,)]


async def test_pg_heartbeats_follow_the_server_clock(pg: PostgresBackend) -> None:
    """Daemons whose clocks are hours off record and judge heartbeats by the server's clock,
    so a skewed host neither looks dead nor finds live daemons dead."""
    store, hours = pg.store, 3 * 3600.0
    await store.register_daemon(_daemon("behind"), time.time() - hours)
    assert await store.heartbeat("behind", time.time() - hours)
    assert await store.silent_daemons(OWNER, time.time() + hours, 5.0) == []
    [(beat,)] = await pg.query("SELECT heartbeat_at FROM forwarder_daemons")
    assert abs(beat - time.time()) < 60


async def test_pg_recovers_after_a_server_restart(pg: PostgresBackend, pg_server: PgServer) -> None:
    """After pg_ctl restart every call fails at most as StoreError, then works, LISTEN included."""
    if not pg_server.can_restart:
        pytest.skip("FORWARDER_TEST_POSTGRES_URL names a server the tests do not own")
    store = pg.store
    now = time.time()
    await store.claim(1, OWNER, now, now + 30)
    await pg_server.restart()
    failures = 0

    async def claim_works() -> bool:
        nonlocal failures
        try:
            await store.claim(1, OWNER, now, now + 30)
        except StoreError:
            failures += 1
            return False
        return True

    await wait_until(claim_works, 30, "a claim after the restart")
    assert failures <= 3
    store.new_rows.clear()
    await pg.insert(_events(1))
    await wait_until(store.new_rows.is_set, 10, "NOTIFY heard on the new LISTEN connection")


async def test_pg_errors_never_show_the_password(pg_server: PgServer) -> None:
    """A connection failure names the server but never the password, in any URL form."""
    port = pg_server.url.rsplit(":", 1)[1].split("/")[0]
    for url in (
        f"postgresql://forwarder:s3cr%23t-pw@127.0.0.1:{port}/nowhere",
        f"postgresql://forwarder@127.0.0.1:{port}/nowhere?password=s3cr%23t-pw",
        "postgresql://forwarder:s3cr%23t-pw@127.0.0.1:1/nowhere",
    ):
        with pytest.raises(StoreError) as failed:
            await PostgresStore.open(url, connect_timeout_s=5)
        message = str(failed.value)
        assert "s3cr" not in message and "***" in message, message
    assert redact_url("postgresql://u:p%40ss@h:5/d?password=x&sslmode=require") == (
        "postgresql://u:***@h:5/d?password=***&sslmode=require"
    )


async def test_pg_bad_url_is_a_config_error() -> None:
    """A URL asyncpg cannot parse is a ConfigError, without the password in it."""
    with pytest.raises(ConfigError) as failed:
        await open_store("postgresql://u:hunter2@host:notaport/db")
    assert "hunter2" not in str(failed.value)
