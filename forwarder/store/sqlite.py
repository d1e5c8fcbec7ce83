"""The outbox on a SQLite file, shared with the application (WAL mode, busy timeout)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from forwarder import migrate
from forwarder.errors import MigrationError, StoreError
from forwarder.events import DEAD, INFLIGHT, PENDING, STATUSES, OutboxRow
from forwarder.store.base import Dead, NewEvent, Retry, Summary

CLAIM = """
UPDATE tiktok_outbox
   SET status = 'inflight', lease_owner = :owner, lease_until = :lease_until, updated_at = :now
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'pending' AND next_attempt_at <= :now
               ORDER BY next_attempt_at
               LIMIT :limit)
RETURNING id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
          attempts, created_at
"""

# Ids travel as one JSON array parameter: one statement whatever the batch size.
MARK_SENT = """
UPDATE tiktok_outbox
   SET status = 'sent', attempts = attempts + 1, sent_at = :now, updated_at = :now,
       last_code = :code, last_error = NULL, request_id = :request_id,
       lease_owner = NULL, lease_until = NULL
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'inflight' AND lease_owner = :owner
"""

RESCHEDULE = """
UPDATE tiktok_outbox
   SET status = 'pending', attempts = attempts + :inc, next_attempt_at = :next_attempt_at,
       last_code = :code, last_error = :message, request_id = :request_id, updated_at = :now,
       lease_owner = NULL, lease_until = NULL
 WHERE id = :id AND status = 'inflight' AND lease_owner = :owner
"""

MARK_DEAD = """
UPDATE tiktok_outbox
   SET status = 'dead', attempts = attempts + :inc, last_code = :code, last_error = :reason,
       request_id = :request_id, updated_at = :now, lease_owner = NULL, lease_until = NULL
 WHERE id = :id AND status = 'inflight' AND lease_owner = :owner
"""

RELEASE = """
UPDATE tiktok_outbox
   SET status = 'pending', updated_at = :now, lease_owner = NULL, lease_until = NULL
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'inflight' AND lease_owner = :owner
"""

EXTEND_LEASE = """
UPDATE tiktok_outbox SET lease_until = :lease_until
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'inflight' AND lease_owner = :owner
"""

RESCUE_EXPIRED = """
UPDATE tiktok_outbox
   SET status = 'pending', updated_at = :now, lease_owner = NULL, lease_until = NULL
 WHERE status = 'inflight' AND lease_until < :now
"""

INSERT = """
INSERT INTO tiktok_outbox
       (event_id, event, event_time, payload, pixel_code, event_source, test_event_code)
VALUES (:event_id, :event, coalesce(:event_time, CAST(strftime('%s', 'now') AS INTEGER)),
        :payload, :pixel_code, :event_source, :test_event_code)
ON CONFLICT DO NOTHING
RETURNING id
"""

FIND = """
SELECT id FROM tiktok_outbox
 WHERE ifnull(pixel_code, '') = :pixel_code AND event = :event AND event_id = :event_id
"""

# Statuses other than sent come from their partial indexes; sent is the rest of the table.
COUNTS = """
SELECT (SELECT count(*) FROM tiktok_outbox),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'pending'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'inflight'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'dead')
"""

LAG = """
SELECT min(created_at), min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'
"""

RECENT_CODES = """
SELECT last_code, count(*) FROM tiktok_outbox
 WHERE status IN ('pending', 'dead') AND last_code IS NOT NULL AND updated_at >= :since
 GROUP BY last_code ORDER BY count(*) DESC LIMIT 20
"""

SET_STATE = """
INSERT INTO forwarder_state (key, value, updated_at) VALUES (:key, :value, :now)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
"""

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS forwarder_migrations (
    name       TEXT PRIMARY KEY,
    applied_at REAL NOT NULL
)
"""

RECENT_WINDOW_S = 24 * 3600.0  # how far back `status` looks for failure codes


def _ids(ids: Sequence[int]) -> str:
    return orjson.dumps(list(ids)).decode()


def _fail(action: str, error: sqlite3.Error) -> StoreError:
    return StoreError(f"SQLite failed to {action}: {error}")


def _connect_sync(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


def _statements(script: str) -> list[str]:
    """Split a SQL file into statements, keeping trigger bodies whole."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in pending.splitlines()
    ):
        raise MigrationError(f"a migration ends with an incomplete statement: {pending[:80]!r}")
    return statements


def migrate_sync(path: Path, busy_timeout_ms: int = 5000) -> list[str]:
    """Apply pending migrations to the file at *path* in one write transaction.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock before reading what is applied, so two
    daemons starting at once apply each migration exactly once; the second waits, then finds
    nothing to do.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect_sync(path, busy_timeout_ms)
    except (OSError, sqlite3.Error) as error:
        raise MigrationError(f"cannot open SQLite database {path}: {error}") from error
    try:
        # WAL lets the application insert while the daemon reads; it is a property of the file.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(MIGRATIONS_TABLE)
        done = {name for (name,) in conn.execute("SELECT name FROM forwarder_migrations")}
        applied = []
        for migration in migrate.load("sqlite"):
            if migration.name in done:
                continue
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO forwarder_migrations (name, applied_at) VALUES (?, ?)",
                (migration.name, time.time()),
            )
            applied.append(migration.name)
        conn.execute("COMMIT")
        return applied
    except sqlite3.Error as error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise MigrationError(f"migrating SQLite database {path} failed: {error}") from error
    finally:
        conn.close()


class SQLiteStore:
    """The outbox store on one SQLite file, through one aiosqlite connection."""

    def __init__(self, path: Path, conn: aiosqlite.Connection, busy_timeout_ms: int) -> None:
        self.path = path
        self._conn = conn
        self._busy_timeout_ms = busy_timeout_ms
        # One connection serves one transaction at a time.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> SQLiteStore:
        """Connect to *path*, creating its folder; the schema is made by migrate()."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(
                path, isolation_level=None, timeout=busy_timeout_ms / 1000
            )
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # WAL + NORMAL: a commit survives a crash of the daemon; a power cut may undo the
            # last "sent" marks, which only resends events TikTok deduplicates by event_id.
            await conn.execute("PRAGMA synchronous = NORMAL")
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open SQLite database {path}: {error}") from error
        return cls(path, conn, busy_timeout_ms)

    async def migrate(self) -> list[str]:
        """Apply pending migrations (in a thread: it uses its own blocking connection)."""
        return await asyncio.to_thread(migrate_sync, self.path, self._busy_timeout_ms)

    async def _write(self, action: str, sql: str, params: dict[str, Any]) -> int:
        async with self._lock:
            try:
                cursor = await self._conn.execute(sql, params)
                return cursor.rowcount
            except sqlite3.Error as error:
                raise _fail(action, error) from error

    async def _write_many(self, action: str, sql: str, params: list[dict[str, Any]]) -> int:
        if not params:
            return 0
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    cursor = await self._conn.executemany(sql, params)
                    changed = cursor.rowcount
                    await self._conn.execute("COMMIT")
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                return changed
            except sqlite3.Error as error:
                raise _fail(action, error) from error

    async def claim(
        self, limit: int, owner: str, now: float, lease_until: float
    ) -> list[OutboxRow]:
        """Lease up to *limit* due rows in one UPDATE ... RETURNING statement."""
        params = {"owner": owner, "lease_until": lease_until, "now": now, "limit": limit}
        async with self._lock:
            try:
                rows = await self._conn.execute_fetchall(CLAIM, params)
            except sqlite3.Error as error:
                raise _fail("claim rows", error) from error
        return [OutboxRow(*row) for row in rows]

    async def mark_sent(
        self, ids: Sequence[int], owner: str, code: str, request_id: str | None, now: float
    ) -> int:
        """Mark *ids* sent in one statement."""
        params = {"ids": _ids(ids), "owner": owner, "code": code, "request_id": request_id}
        return await self._write("mark rows sent", MARK_SENT, {**params, "now": now})

    async def reschedule(
        self,
        retries: Sequence[Retry],
        owner: str,
        code: str,
        message: str,
        request_id: str | None,
        count_attempt: bool,
        now: float,
    ) -> int:
        """Return rows to pending, each with its own next attempt time, in one transaction."""
        common = {
            "owner": owner,
            "code": code,
            "message": message,
            "request_id": request_id,
            "inc": int(count_attempt),
            "now": now,
        }
        params = [{**common, "id": r.row_id, "next_attempt_at": r.next_attempt_at} for r in retries]
        return await self._write_many("reschedule rows", RESCHEDULE, params)

    async def mark_dead(
        self,
        dead: Sequence[Dead],
        owner: str,
        request_id: str | None,
        count_attempt: bool,
        now: float,
    ) -> int:
        """Dead-letter rows in one transaction."""
        common = {"owner": owner, "request_id": request_id, "inc": int(count_attempt), "now": now}
        params = [{**common, "id": d.row_id, "code": d.code, "reason": d.reason} for d in dead]
        return await self._write_many("dead-letter rows", MARK_DEAD, params)

    async def release(self, ids: Sequence[int], owner: str, now: float) -> int:
        """Return leased rows to pending as they were."""
        params = {"ids": _ids(ids), "owner": owner, "now": now}
        return await self._write("release leases", RELEASE, params)

    async def extend_lease(self, ids: Sequence[int], owner: str, lease_until: float) -> int:
        """Push the lease of rows still being worked on."""
        params = {"ids": _ids(ids), "owner": owner, "lease_until": lease_until}
        return await self._write("extend leases", EXTEND_LEASE, params)

    async def rescue_expired(self, now: float) -> int:
        """Return rows whose lease ran out to pending."""
        return await self._write("rescue expired leases", RESCUE_EXPIRED, {"now": now})

    async def next_due_at(self) -> float | None:
        """The earliest next attempt among pending rows."""
        async with self._lock:
            try:
                rows = await self._conn.execute_fetchall(
                    "SELECT min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'"
                )
            except sqlite3.Error as error:
                raise _fail("read the next due time", error) from error
        value = next(iter(rows))[0]
        return None if value is None else float(value)

    async def insert(self, event: NewEvent) -> tuple[int, bool]:
        """Insert one event unless its (pixel_code, event, event_id) exists."""
        params = {
            "event_id": event.event_id,
            "event": event.event,
            "event_time": event.event_time,
            "payload": event.payload,
            "pixel_code": event.pixel_code,
            "event_source": event.event_source,
            "test_event_code": event.test_event_code,
        }
        async with self._lock:
            try:
                rows = list(await self._conn.execute_fetchall(INSERT, params))
                if rows:
                    return int(rows[0][0]), True
                found = list(await self._conn.execute_fetchall(FIND, params))
            except sqlite3.Error as error:
                raise _fail("insert the event", error) from error
        return int(found[0][0]), False

    async def summary(self, now: float) -> Summary:
        """Counts by status, lag, recent failure codes and the daemon's recorded state."""
        async with self._lock:
            try:
                (total, pending, inflight, dead), *_ = await self._conn.execute_fetchall(COUNTS)
                (oldest, next_due), *_ = await self._conn.execute_fetchall(LAG)
                codes = await self._conn.execute_fetchall(
                    RECENT_CODES, {"since": now - RECENT_WINDOW_S}
                )
                state_rows = await self._conn.execute_fetchall(
                    "SELECT key, value FROM forwarder_state"
                )
            except sqlite3.Error as error:
                raise _fail("read the status", error) from error
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({PENDING: pending, INFLIGHT: inflight, DEAD: dead})
        counts["sent"] = total - pending - inflight - dead
        return Summary(
            counts=counts,
            oldest_pending_age_s=None if oldest is None else max(0.0, now - oldest),
            next_due_in_s=None if next_due is None else max(0.0, next_due - now),
            recent_codes={str(code): int(n) for code, n in codes},
            state={key: orjson.loads(value) for key, value in state_rows},
        )

    async def set_state(self, key: str, value: dict[str, Any], now: float) -> None:
        """Upsert one key of forwarder_state."""
        params = {"key": key, "value": orjson.dumps(value).decode(), "now": now}
        await self._write("record state", SET_STATE, params)

    async def ping(self) -> None:
        """Check that the outbox table answers."""
        async with self._lock:
            try:
                await self._conn.execute_fetchall("SELECT 1 FROM tiktok_outbox LIMIT 1")
            except sqlite3.Error as error:
                raise _fail("reach the outbox table", error) from error

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()
