"""The SQLite outbox store on real files: the contract, claims, leases and settling."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from forwarder.store.base import Dead, NewEvent, Retry
from forwarder.store.sqlite import SQLiteStore, migrate_sync

from .conftest import insert, rows_by_status

OWNER = "test-owner"


def _events(n: int, **extra: object) -> list[dict[str, object]]:
    return [{"event_id": f"e{i}", "event": "Purchase", **extra} for i in range(n)]


def test_migrate_is_idempotent(db_path: Path) -> None:
    """A second migrate applies nothing and keeps the schema."""
    assert migrate_sync(db_path) == ["0001_outbox", "0002_operations"]
    assert migrate_sync(db_path) == []
    conn = sqlite3.connect(db_path)
    names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"tiktok_outbox", "tiktok_outbox_dedup", "tiktok_outbox_due", "forwarder_state"} <= names


async def test_concurrent_migrations_apply_once(db_path: Path) -> None:
    """Two daemons migrating the same new file at once apply each migration exactly once."""
    results = await asyncio.gather(
        asyncio.to_thread(migrate_sync, db_path), asyncio.to_thread(migrate_sync, db_path)
    )
    assert sorted(results, key=len) == [[], ["0001_outbox", "0002_operations"]]


def test_wal_mode_is_set(db_path: Path) -> None:
    """The migrated file is in WAL mode so application inserts and claims coexist."""
    migrate_sync(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_defaults_of_the_contract(store: SQLiteStore, db_path: Path) -> None:
    """An insert naming only event_id and event gets every documented default."""
    before = int(time.time())
    insert(db_path, [{"event_id": "o-1", "event": "Purchase"}])
    conn = sqlite3.connect(db_path)
    row = conn.execute(
        "SELECT event_time, payload, pixel_code, event_source, test_event_code, status, attempts,"
        " next_attempt_at, created_at FROM tiktok_outbox"
    ).fetchone()
    conn.close()
    event_time, body, pixel, source, test_code, status, attempts, due, created = row
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
async def test_unique_key_holds_with_empty_pixel(
    store: SQLiteStore, db_path: Path, pixel: object
) -> None:
    """The same (pixel, event, event_id) inserted twice stays one row, even with no pixel."""
    insert(db_path, [{"event_id": "o-1", "event": "Purchase", "pixel_code": pixel}] * 2)
    insert(db_path, [{"event_id": "o-1", "event": "Purchase"}])
    insert(db_path, [{"event_id": "o-1", "event": "Purchase", "pixel_code": None}])
    insert(db_path, [{"event_id": "o-1", "event": "Lead"}])
    insert(db_path, [{"event_id": "o-1", "event": "Purchase", "pixel_code": "OTHER"}])
    assert rows_by_status(db_path) == {"pending": 3}


async def test_plain_insert_of_a_duplicate_fails(store: SQLiteStore, db_path: Path) -> None:
    """Without ON CONFLICT the unique key raises, so an application notices a duplicate."""
    insert(db_path, [{"event_id": "o-1", "event": "Purchase"}])
    conn = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO tiktok_outbox (event_id, event) VALUES ('o-1', 'Purchase')")
    conn.close()


async def test_status_must_be_known(store: SQLiteStore, db_path: Path) -> None:
    """The status column refuses a value outside pending, inflight, sent, dead."""
    conn = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO tiktok_outbox (event_id, event, status) VALUES ('x', 'y', 'gone')"
        )
    conn.close()


async def test_claim_leases_due_rows_only(store: SQLiteStore, db_path: Path) -> None:
    """Claim takes pending rows that are due, marks them inflight, and skips later ones."""
    now = time.time()
    insert(
        db_path, _events(3) + [{"event_id": "later", "event": "Lead", "next_attempt_at": now + 60}]
    )
    rows = await store.claim(10, OWNER, now, now + 30)
    assert sorted(r.event_id for r in rows) == ["e0", "e1", "e2"]
    assert rows_by_status(db_path) == {"inflight": 3, "pending": 1}
    assert await store.claim(10, OWNER, now, now + 30) == []


async def test_claim_respects_limit(store: SQLiteStore, db_path: Path) -> None:
    """Claim never returns more rows than asked for."""
    insert(db_path, _events(25))
    now = time.time()
    assert len(await store.claim(10, OWNER, now, now + 30)) == 10


async def test_concurrent_claimers_get_disjoint_rows(db_path: Path, store: SQLiteStore) -> None:
    """Two stores claiming the same file at once never get the same row."""
    insert(db_path, _events(2000))
    other = await SQLiteStore.open(db_path)
    try:
        now = time.time()
        claims = await asyncio.gather(
            *[s.claim(150, f"owner-{i}", now, now + 30) for i in range(5) for s in (store, other)]
        )
    finally:
        await other.close()
    ids = [row.id for claim in claims for row in claim]
    assert len(ids) == 1500
    assert len(set(ids)) == len(ids)


async def test_expired_leases_return_to_pending(store: SQLiteStore, db_path: Path) -> None:
    """A row whose lease ran out goes back to pending and can be claimed again."""
    insert(db_path, _events(2))
    now = time.time()
    await store.claim(10, "dead-daemon", now, now + 5)
    assert await store.rescue_expired(now + 1) == 0
    assert await store.rescue_expired(now + 6) == 2
    again = await store.claim(10, OWNER, now + 6, now + 36)
    assert len(again) == 2


async def test_settling_needs_the_lease(store: SQLiteStore, db_path: Path) -> None:
    """A daemon whose lease was rescued and re-claimed cannot overwrite the new owner's row."""
    insert(db_path, _events(1))
    now = time.time()
    [row] = await store.claim(1, "old", now, now + 1)
    await store.rescue_expired(now + 2)
    await store.claim(1, "new", now + 2, now + 32)
    assert await store.mark_sent([row.id], "old", "0", "req", now + 3) == 0
    assert await store.mark_sent([row.id], "new", "0", "req", now + 3) == 1
    assert rows_by_status(db_path) == {"sent": 1}


async def test_settle_outcomes(store: SQLiteStore, db_path: Path) -> None:
    """Sent, rescheduled and dead rows record attempts, codes and reasons."""
    insert(db_path, _events(3))
    now = time.time()
    rows = await store.claim(3, OWNER, now, now + 30)
    a, b, c = (r.id for r in rows)
    await store.mark_sent([a], OWNER, "0", "req-a", now)
    await store.reschedule([Retry(b, now + 42)], OWNER, "50000", "System error", "req-b", True, now)
    await store.mark_dead([Dead(c, "40002", "bad field")], OWNER, "req-c", True, now)
    conn = sqlite3.connect(db_path)
    got = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT id, status, attempts, last_code, last_error, request_id, next_attempt_at,"
            " lease_owner FROM tiktok_outbox"
        )
    }
    conn.close()
    assert got[a] == ("sent", 1, "0", None, "req-a", 0, None)
    assert got[b] == ("pending", 1, "50000", "System error", "req-b", now + 42, None)
    assert got[c] == ("dead", 1, "40002", "bad field", "req-c", 0, None)


async def test_release_counts_no_attempt(store: SQLiteStore, db_path: Path) -> None:
    """Released rows go back to pending untouched."""
    insert(db_path, _events(2))
    now = time.time()
    rows = await store.claim(2, OWNER, now, now + 30)
    assert await store.release([r.id for r in rows], OWNER, now) == 2
    again = await store.claim(2, OWNER, now, now + 30)
    assert [r.attempts for r in again] == [0, 0]


async def test_insert_reports_duplicates(store: SQLiteStore) -> None:
    """insert returns the same row id and new=False for a duplicate."""
    first = await store.insert(NewEvent(event_id="o-9", event="Purchase"))
    second = await store.insert(NewEvent(event_id="o-9", event="Purchase"))
    assert first[1] is True
    assert second == (first[0], False)


async def test_summary(store: SQLiteStore, db_path: Path) -> None:
    """The summary counts rows by status, the lag, failing codes and recorded state."""
    insert(db_path, _events(4))
    now = time.time()
    rows = await store.claim(2, OWNER, now, now + 30)
    await store.mark_dead([Dead(rows[0].id, "40002", "bad")], OWNER, None, True, now)
    await store.mark_sent([rows[1].id], OWNER, "0", None, now)
    await store.set_state("destination", {"paused": True, "reason": "40105"}, now)
    summary = await store.summary(now + 10)
    assert summary.counts == {"pending": 2, "inflight": 0, "sent": 1, "dead": 1}
    assert summary.oldest_pending_age_s is not None and summary.oldest_pending_age_s >= 9
    assert summary.recent_codes == {"40002": 1}
    assert summary.state["destination"] == {"paused": True, "reason": "40105"}


async def test_claim_uses_the_partial_index(store: SQLiteStore, db_path: Path) -> None:
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
