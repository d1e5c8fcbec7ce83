"""The outbox on a SQLite file, shared with the application (WAL mode, busy timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import os
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
from forwarder.store.base import (
    Dead,
    DeadFilter,
    NewEvent,
    ReplayRecord,
    Retry,
    RowDetail,
    Summary,
)

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

# The same, replacing each payload (raw identifiers scrubbed); rows travel as [[id, payload]].
MARK_SENT_SCRUBBED = """
UPDATE tiktok_outbox
   SET status = 'sent', attempts = attempts + 1, sent_at = :now, updated_at = :now,
       last_code = :code, last_error = NULL, request_id = :request_id,
       lease_owner = NULL, lease_until = NULL, payload = scrubbed.payload
  FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS payload
          FROM json_each(:rows)) AS scrubbed
 WHERE tiktok_outbox.id = scrubbed.id
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

# Two halves, each served by its partial index, so a table of millions of sent rows is not read.
RECENT_CODES = """
SELECT last_code, count(*) FROM (
    SELECT last_code FROM tiktok_outbox
     WHERE status = 'pending' AND next_attempt_at >= 0
       AND last_code IS NOT NULL AND updated_at >= :since
    UNION ALL
    SELECT last_code FROM tiktok_outbox
     WHERE status = 'dead' AND updated_at >= :since
) GROUP BY last_code ORDER BY count(*) DESC LIMIT 20
"""

SET_STATE = """
INSERT INTO forwarder_state (key, value, updated_at) VALUES (:key, :value, :now)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
"""

DETAIL_COLUMNS = """
id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code, status,
attempts, next_attempt_at, last_code, last_error, request_id, created_at, updated_at, sent_at
"""

REPLAY_RECORD = """
INSERT INTO tiktok_outbox_replays
       (outbox_id, replayed_at, attempts, last_code, last_error, request_id, dead_at)
SELECT id, :now, attempts, last_code, last_error, request_id, updated_at
  FROM tiktok_outbox WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'dead'
"""

REPLAY = """
UPDATE tiktok_outbox
   SET status = 'pending', attempts = 0, next_attempt_at = 0, updated_at = :now
 WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'dead'
"""

PURGE = """
DELETE FROM tiktok_outbox WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'dead'
"""

PRUNE_SENT = """
DELETE FROM tiktok_outbox
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'sent' AND sent_at < :before
               LIMIT :limit)
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


def dead_where(where: DeadFilter) -> tuple[str, dict[str, Any]]:
    """The SQL condition and parameters selecting the dead rows *where* names.

    The SQL is built from fixed fragments only; every value travels as a parameter.
    """
    clauses = ["status = 'dead'"]
    params: dict[str, Any] = {}
    if where.codes:
        clauses.append("last_code IN (SELECT value FROM json_each(:codes))")
        params["codes"] = orjson.dumps(list(where.codes)).decode()
    if where.events:
        clauses.append("event IN (SELECT value FROM json_each(:events))")
        params["events"] = orjson.dumps(list(where.events)).decode()
    if where.since is not None:
        clauses.append("updated_at >= :since")
        params["since"] = where.since
    if where.ids:
        clauses.append("id IN (SELECT value FROM json_each(:ids_filter))")
        params["ids_filter"] = _ids(where.ids)
    return " AND ".join(clauses), params


def _text(value: bytes) -> str:
    """Decode TEXT leniently: an application may store invalid UTF-8, and one such row must
    become a dead letter (the payload builder refuses it), not an error on every claim whose
    message would quote the row's raw contents."""
    return value.decode("utf-8", "surrogateescape")


def _create(path: Path) -> None:
    """Create a missing database file as 0666 minus the umask, as sqlite3 itself would not:
    SQLite makes new files 0644, which an application sharing the file through a group (and a
    service's UMask=0007) could not write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _set_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Switch the file to WAL, waiting out another process that holds it (the busy timeout
    does not cover this pragma: two daemons migrating a new file at once would collide)."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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
        _create(path)
        conn = _connect_sync(path, busy_timeout_ms)
    except (OSError, sqlite3.Error) as error:
        raise MigrationError(f"cannot open SQLite database {path}: {error}") from error
    try:
        # WAL lets the application insert while the daemon reads; it is a property of the file.
        _set_wal(conn, busy_timeout_ms)
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

    def __init__(
        self,
        path: Path,
        conn: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        busy_timeout_ms: int,
    ) -> None:
        self.path = path
        self._conn = conn
        # Reads for status, metrics and operators go through their own connection: under WAL
        # they neither wait for nor delay the worker's claims and settles.
        self._reader = reader
        self._read_lock = asyncio.Lock()
        self._busy_timeout_ms = busy_timeout_ms
        # One connection serves one transaction at a time.
        self._lock = asyncio.Lock()
        #: Never set: SQLite cannot tell us about another process's inserts, so the worker polls.
        self.new_rows = asyncio.Event()

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> SQLiteStore:
        """Connect to *path*, creating its folder; the schema is made by migrate()."""
        try:
            _create(path)
            conn = await cls._connect(path, busy_timeout_ms)
            reader = await cls._connect(path, busy_timeout_ms)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open SQLite database {path}: {error}") from error
        return cls(path, conn, reader, busy_timeout_ms)

    @staticmethod
    async def _connect(path: Path, busy_timeout_ms: int) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        conn.text_factory = _text
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # WAL + NORMAL: a commit survives a crash of the daemon; a power cut may undo the last
        # "sent" marks, which only resends events TikTok deduplicates by event_id.
        await conn.execute("PRAGMA synchronous = NORMAL")
        return conn

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
            except (sqlite3.Error, ValueError) as error:
                # A statement that failed half-way must not keep SQLite's write lock.
                if self._conn.in_transaction:
                    await self._conn.rollback()
                raise StoreError(f"SQLite failed to claim rows: {type(error).__name__}") from None
        return [OutboxRow(*row) for row in rows]

    async def mark_sent(
        self,
        ids: Sequence[int],
        owner: str,
        code: str,
        request_id: str | None,
        now: float,
        payloads: Sequence[str] | None = None,
    ) -> int:
        """Mark *ids* sent in one statement, replacing their payloads if given."""
        params = {"owner": owner, "code": code, "request_id": request_id, "now": now}
        if payloads is None:
            return await self._write("mark rows sent", MARK_SENT, {**params, "ids": _ids(ids)})
        rows = orjson.dumps([[i, p] for i, p in zip(ids, payloads, strict=True)]).decode()
        return await self._write("mark rows sent", MARK_SENT_SCRUBBED, {**params, "rows": rows})

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
        async with self._read_lock:
            try:
                # One read transaction, so the figures are of one moment.
                await self._reader.execute("BEGIN")
                try:
                    (total, pending, inflight, dead), *_ = await self._reader.execute_fetchall(
                        COUNTS
                    )
                    (oldest, next_due), *_ = await self._reader.execute_fetchall(LAG)
                    codes = await self._reader.execute_fetchall(
                        RECENT_CODES, {"since": now - RECENT_WINDOW_S}
                    )
                    state_rows = await self._reader.execute_fetchall(
                        "SELECT key, value FROM forwarder_state"
                    )
                finally:
                    await self._reader.execute("COMMIT")
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

    async def _read(self, action: str, sql: str, params: dict[str, Any]) -> list[Any]:
        async with self._read_lock:
            try:
                return list(await self._reader.execute_fetchall(sql, params))
            except sqlite3.Error as error:
                raise _fail(action, error) from error

    async def dead_rows(self, where: DeadFilter) -> list[RowDetail]:
        """Dead rows matching *where*, oldest first."""
        condition, params = dead_where(where)
        sql = f"SELECT {DETAIL_COLUMNS} FROM tiktok_outbox WHERE {condition} ORDER BY id"
        if where.limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = where.limit
        return [RowDetail(*row) for row in await self._read("list dead rows", sql, params)]

    async def _dead_batches(
        self, action: str, where: DeadFilter, batch: int, statements: Sequence[str], now: float
    ) -> int:
        """Apply *statements* to matching dead rows, *batch* rows per transaction."""
        condition, params = dead_where(where)
        select = f"SELECT id FROM tiktok_outbox WHERE {condition} ORDER BY id LIMIT :batch"
        done = 0
        while where.limit is None or done < where.limit:
            size = batch if where.limit is None else min(batch, where.limit - done)
            async with self._lock:
                try:
                    await self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        found = list(
                            await self._conn.execute_fetchall(select, {**params, "batch": size})
                        )
                        ids = _ids([row[0] for row in found])
                        for statement in statements:
                            await self._conn.execute(statement, {"ids": ids, "now": now})
                        await self._conn.execute("COMMIT")
                    except BaseException:
                        await self._conn.execute("ROLLBACK")
                        raise
                except sqlite3.Error as error:
                    raise _fail(action, error) from error
            done += len(found)
            if len(found) < size:
                break
        return done

    async def replay_dead(self, where: DeadFilter, now: float, batch: int = 1000) -> int:
        """Return matching dead rows to pending in batches, recording their failure first."""
        return await self._dead_batches(
            "replay dead rows", where, batch, (REPLAY_RECORD, REPLAY), now
        )

    async def purge_dead(self, where: DeadFilter, batch: int = 1000) -> int:
        """Delete matching dead rows in batches."""
        return await self._dead_batches("purge dead rows", where, batch, (PURGE,), 0.0)

    async def find(self, event_id: str) -> list[tuple[RowDetail, list[ReplayRecord]]]:
        """Every row with this event_id, with the failures it had when it was replayed."""
        rows = await self._read(
            "find the event",
            f"SELECT {DETAIL_COLUMNS} FROM tiktok_outbox WHERE event_id = :event_id ORDER BY id",
            {"event_id": event_id},
        )
        found = []
        for row in rows:
            replays = await self._read(
                "read replays",
                "SELECT replayed_at, attempts, last_code, last_error, request_id, dead_at"
                " FROM tiktok_outbox_replays WHERE outbox_id = :id ORDER BY id",
                {"id": row[0]},
            )
            found.append((RowDetail(*row), [ReplayRecord(*r) for r in replays]))
        return found

    async def prune_sent(self, before: float, limit: int) -> int:
        """Delete at most *limit* rows sent before *before*."""
        params = {"before": before, "limit": limit}
        return await self._write("prune sent rows", PRUNE_SENT, params)

    async def applied_migrations(self) -> list[str]:
        """Names of the applied migrations (none on a database never migrated)."""
        try:
            rows = await self._read(
                "read migrations", "SELECT name FROM forwarder_migrations ORDER BY name", {}
            )
        except StoreError:
            return []
        return [name for (name,) in rows]

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """Read one key of forwarder_state."""
        rows = await self._read(
            "read state", "SELECT value FROM forwarder_state WHERE key = :key", {"key": key}
        )
        return orjson.loads(rows[0][0]) if rows else None

    async def ping(self) -> None:
        """Check that the outbox table answers."""
        async with self._lock:
            try:
                await self._conn.execute_fetchall("SELECT 1 FROM tiktok_outbox LIMIT 1")
            except sqlite3.Error as error:
                raise _fail("reach the outbox table", error) from error

    async def close(self) -> None:
        """Close the connections."""
        await self._conn.close()
        await self._reader.close()
