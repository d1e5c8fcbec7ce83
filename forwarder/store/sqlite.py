"""The outbox on a SQLite file, shared with the application (WAL mode, busy timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from forwarder import migrate
from forwarder.errors import MigrationError, StoreError, StoreLost
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
from forwarder.store.sqlite_writer import (
    WRITE_ROWS,
    Statement,
    Writer,
    chunks,
    connect_writer,
    in_transaction,
)

# The columns of an OutboxRow, in its order.
_COLUMNS = """id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
       attempts, created_at"""

# The due rows, oldest first; every claim reads them through this (the partial index
# tiktok_outbox_due serves it).
_DUE = """SELECT {columns} FROM tiktok_outbox
          WHERE status = 'pending' AND next_attempt_at <= :now
          ORDER BY next_attempt_at
          LIMIT :limit"""

# The claim alone on the file where its rows cannot be read as JSON (see DUE_ROWS).
CLAIM = f"""
UPDATE tiktok_outbox
   SET status = 'inflight', lease_owner = :owner, lease_until = :lease_until, updated_at = :now
 WHERE id IN ({_DUE.format(columns="id")})
RETURNING {_COLUMNS}
"""

# The rows one CLAIM leased, read again: only that claim gives rows of this owner this
# updated_at and this lease_until (a heartbeat moves lease_until, not updated_at).
CLAIMED = f"""
SELECT {_COLUMNS}
  FROM tiktok_outbox
 WHERE status = 'inflight' AND lease_until = :lease_until
   AND lease_owner = :owner AND updated_at = :now
 ORDER BY next_attempt_at, id
"""

# A claimed row as one JSON array, and a claim's rows as one JSON value: the writer's thread
# then takes the GIL back once per statement, not once per row (it waits for the GIL at each,
# up to the switch interval while the loop builds events). REAL values are printed with 17
# significant digits, which gave the same double back for all of 60,000 random values below
# 1e19 (SQLite 3.40's printf is one unit in the last place off for some beyond 1e100, which no
# time is): json_array keeps 15, which would move created_at by microseconds and round
# 1764675123.9999996 up to the next second. Where SQLite
# cannot write a row as JSON (a BLOB, an infinite REAL) or its TEXT is not UTF-8, the claim
# reads the rows one by one instead (_read_rows).
_ROW_JSON = """json_array(
    id, event_id, event,
    CASE typeof(event_time) WHEN 'real' THEN json(printf('%!.17g', event_time))
                            ELSE event_time END,
    payload, pixel_code, event_source, test_event_code, attempts,
    CASE typeof(created_at) WHEN 'real' THEN json(printf('%!.17g', created_at))
                            ELSE created_at END)"""

# The claim alone on the file: the due rows, then LEASE_ALL, in one transaction.
DUE_ROWS = f"""
SELECT json_group_array({_ROW_JSON}) FROM ({_DUE.format(columns="*")})
"""

LEASE_ALL = """
UPDATE tiktok_outbox
   SET status = 'inflight', lease_owner = :owner, lease_until = :lease_until, updated_at = :now
 WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'pending'
"""

# The claim while an application writes too: the due ids, then LEASE, then LEASED.
DUE = f"""
SELECT json_group_array(id) FROM ({_DUE.format(columns="id")})
"""

# All of the ids or none: another claimer (a second daemon on the file) may have taken some
# since they were read, and then the claim reads again. The count is computed once.
LEASE = """
UPDATE tiktok_outbox
   SET status = 'inflight', lease_owner = :owner, lease_until = :lease_until, updated_at = :now
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'pending' AND next_attempt_at <= :now
   AND (SELECT count(*) FROM tiktok_outbox
         WHERE id IN (SELECT value FROM json_each(:ids))
           AND status = 'pending' AND next_attempt_at <= :now) = :rows
"""
CLAIM_READS = 3  # due ids read again at most this often when another claimer took some

# The rows LEASE leased, read back: as they are (LEASED), or as one JSON value (LEASED_ROWS).
_LEASED = """SELECT {columns} FROM tiktok_outbox
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'inflight' AND lease_owner = :owner AND lease_until = :lease_until
 ORDER BY next_attempt_at, id"""
LEASED = _LEASED.format(columns=_COLUMNS)
LEASED_ROWS = f"""
SELECT json_group_array({_ROW_JSON}) FROM ({_LEASED.format(columns="*")})
"""

# Ids travel as one JSON array parameter: one statement per Writer.rows_per_write rows.
# A row this very settle already marked (same sent_at, request and code) matches again and
# keeps its one attempt: the worker retries a settle whose later transaction failed, and the
# rows of its earlier, committed ones are then counted as marked, not as leases lost.
MARK_SENT = """
UPDATE tiktok_outbox
   SET status = 'sent', attempts = attempts + (status = 'inflight'), sent_at = :now,
       updated_at = :now, last_code = :code, last_error = NULL, request_id = :request_id,
       lease_owner = NULL, lease_until = NULL
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND (status = 'inflight' AND lease_owner = :owner
        OR status = 'sent' AND sent_at = :now AND request_id IS :request_id
           AND last_code = :code)
"""

# The same, replacing each payload (raw identifiers scrubbed). The rows travel as bound
# (id, payload) pairs of a VALUES list, ?5 and ?6 onwards: a JSON array of them would be escaped
# in Python and parsed again by SQLite, which made this statement a third slower.
MARK_SENT_SCRUBBED = """
UPDATE tiktok_outbox
   SET status = 'sent', attempts = attempts + (status = 'inflight'), sent_at = ?1,
       updated_at = ?1, last_code = ?2, last_error = NULL, request_id = ?3,
       lease_owner = NULL, lease_until = NULL, payload = scrubbed.column2
  FROM (VALUES {rows}) AS scrubbed
 WHERE tiktok_outbox.id = scrubbed.column1
   AND (status = 'inflight' AND lease_owner = ?4
        OR status = 'sent' AND sent_at = ?1 AND request_id IS ?3 AND last_code = ?2)
"""

# Retries as (id, next_attempt_at) pairs, ?7 onwards: one statement, no Python per row.
# "updated_at <= ?5": while sharing the file a reschedule is several transactions, and when a
# later one fails the worker retries the whole call; rows of an earlier one may have been
# claimed again meanwhile (a claim sets updated_at to its own, later, time) and are not this
# call's to reschedule.
RESCHEDULE = """
UPDATE tiktok_outbox
   SET status = 'pending', attempts = attempts + ?1, next_attempt_at = due.column2,
       last_code = ?2, last_error = ?3, request_id = ?4, updated_at = ?5,
       lease_owner = NULL, lease_until = NULL
  FROM (VALUES {rows}) AS due
 WHERE tiktok_outbox.id = due.column1
   AND status = 'inflight' AND lease_owner = ?6 AND updated_at <= ?5
"""

# Dead letters as (id, code, reason) triples, ?5 onwards.
MARK_DEAD = """
UPDATE tiktok_outbox
   SET status = 'dead', attempts = attempts + ?1, last_code = dead.column2,
       last_error = dead.column3, request_id = ?2, updated_at = ?3,
       lease_owner = NULL, lease_until = NULL
  FROM (VALUES {rows}) AS dead
 WHERE tiktok_outbox.id = dead.column1
   AND status = 'inflight' AND lease_owner = ?4
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
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'inflight' AND lease_until < :now
               LIMIT :limit)
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


@functools.lru_cache(maxsize=64)
def _values(sql: str, rows: int, width: int, first: int) -> str:
    """*sql* with its VALUES list of *rows* tuples of *width* numbered parameters, the first
    one ?*first* (batches are mostly full: few sizes recur)."""
    numbers = itertools.count(first)
    tuples = ("(" + ",".join(f"?{next(numbers)}" for _ in range(width)) + ")" for _ in range(rows))
    return sql.format(rows=",".join(tuples))


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


def _undecodable(error: sqlite3.Error) -> bool:
    """Whether *error* is sqlite3's strict decoding failing on a TEXT value."""
    return isinstance(error, sqlite3.OperationalError) and str(error).startswith(
        "Could not decode to UTF-8"
    )


def _create(path: Path) -> None:
    """Create a missing database file as 0666 minus the umask, as sqlite3 itself would not:
    SQLite makes new files 0644, which an application sharing the file through a group (and a
    service's UMask=0007) could not write. Its folder must exist: a typo in the path should
    fail, not grow a tree of folders nobody looks at."""
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"the folder {path.parent} does not exist (forwarder creates the database file, "
            "not its folder): create it, or fix FORWARDER_DATABASE_URL"
        )
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _must_exist(path: Path) -> None:
    """Refuse to open a database that is not there: commands other than migrate and run never
    create one (an operator's typo would otherwise leave an empty file behind)."""
    if not path.exists():
        raise StoreError(
            f"no database at {path.resolve()}: check FORWARDER_DATABASE_URL (or --database-url, "
            "--env-file), or create it with `forwarder migrate`"
        )


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
    except FileNotFoundError as error:
        raise MigrationError(f"cannot create SQLite database {path}: {error}") from None
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


_T = TypeVar("_T")


def _fetch(
    conn: sqlite3.Connection, cursor: sqlite3.Cursor, again: str, params: dict[str, Any]
) -> list[Any]:
    """The rows of *cursor*, decoded strictly (in C: calling _text for each of six TEXT
    columns of a thousand rows was a tenth of a claim's time); if a row's TEXT is not valid
    UTF-8, the rows of *again* read leniently, so that row becomes a dead letter like any
    other. *cursor*'s statement has already changed every row it leases (an UPDATE ...
    RETURNING does at its first step)."""
    try:
        return cursor.fetchall()
    except sqlite3.Error as error:
        if not _undecodable(error):
            raise
    finally:
        # Closed now, not when a garbage collection finds the cursor: a statement left open
        # would make every later commit on this connection fail.
        cursor.close()
    conn.text_factory = _text
    try:
        return conn.execute(again, params).fetchall()
    finally:
        conn.text_factory = str


def _read_rows(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[Any] | None:
    """The rows *sql* gives as one JSON array of JSON arrays, or None where SQLite cannot
    write them as JSON or they are not valid UTF-8 (the caller then reads them row by row)."""
    # "JSON cannot hold BLOB values" comes from execute, "Could not decode to UTF-8" from the
    # fetch, "string or blob too big" (a DataError: the value would pass SQLITE_MAX_LENGTH)
    # from either. Any other failure comes again from the statement read row by row, and is
    # raised there.
    try:
        cursor = conn.execute(sql, params)
    except (sqlite3.OperationalError, sqlite3.DataError):
        return None
    try:
        ((value,),) = cursor.fetchall()
    except (sqlite3.OperationalError, sqlite3.DataError):
        return None
    finally:
        cursor.close()  # see _fetch
    try:
        rows: list[Any] = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return rows


class SQLiteStore:
    """The outbox store on one SQLite file: a writing connection and a reading one."""

    def __init__(
        self,
        path: Path,
        writer: Writer,
        reader: aiosqlite.Connection,
        busy_timeout_ms: int,
    ) -> None:
        self.path = path
        self._writer = writer
        # Reads for status, metrics and operators go through their own connection: under WAL
        # they neither wait for nor delay the worker's claims and settles.
        self._reader = reader
        self._read_lock = asyncio.Lock()
        self._busy_timeout_ms = busy_timeout_ms
        #: Never set: SQLite cannot tell us about another process's inserts, so the worker polls.
        self.new_rows = asyncio.Event()
        stat = os.stat(path)
        self._identity = (stat.st_dev, stat.st_ino)  # the file opened, to notice a replacement

    @classmethod
    async def open(
        cls, path: Path, *, busy_timeout_ms: int = 5000, create: bool = True
    ) -> SQLiteStore:
        """Connect to *path*, creating the file if *create* (never its folder); the schema is
        made by migrate()."""
        try:
            if create:
                _create(path)
            else:
                _must_exist(path)
            conn = await asyncio.to_thread(connect_writer, path, busy_timeout_ms)
        except FileNotFoundError as error:
            raise StoreError(f"cannot create SQLite database {path}: {error}") from None
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open SQLite database {path}: {error}") from error
        writer = Writer(conn)
        try:
            reader = await cls._connect_reader(path, busy_timeout_ms)
        except (OSError, sqlite3.Error) as error:
            await writer.close()
            raise StoreError(f"cannot open SQLite database {path}: {error}") from error
        return cls(path, writer, reader, busy_timeout_ms)

    @staticmethod
    async def _connect_reader(path: Path, busy_timeout_ms: int) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        # Operators must see every row, even one whose TEXT is not valid UTF-8.
        conn.text_factory = _text
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        return conn

    async def _call(
        self, action: str, call: Callable[[sqlite3.Connection], _T], *, urgent: bool = False
    ) -> _T:
        """Run *call* on the writer's thread; a database error becomes a StoreError."""
        try:
            return await self._writer.run(call, urgent=urgent)
        except sqlite3.Error as error:
            raise _fail(action, error) from error

    async def migrate(self) -> list[str]:
        """Apply pending migrations (in a thread: it uses its own blocking connection)."""
        return await asyncio.to_thread(migrate_sync, self.path, self._busy_timeout_ms)

    async def _write(self, action: str, statements: Callable[[int], Iterable[Statement]]) -> int:
        """Run the statements *statements* makes for a number of rows per statement, each its
        own short transaction; return the rows they changed."""
        return await self._call(
            action, lambda conn: self._writer.write(conn, statements(self._writer.rows_per_write))
        )

    async def _write_ids(
        self, action: str, sql: str, ids: Sequence[int], params: dict[str, Any]
    ) -> int:
        """Run *sql* for *ids*, passed as ``:ids``, a few at a time."""
        return await self._write(
            action,
            lambda rows: ((sql, {**params, "ids": _ids(chunk)}) for chunk in chunks(ids, rows)),
        )

    async def _write_values(
        self, action: str, sql: str, common: list[Any], rows: Sequence[tuple[Any, ...]]
    ) -> int:
        """Run *sql*, whose VALUES list carries *rows* after the *common* parameters,
        a few rows at a time."""
        if not rows:
            return 0
        width = len(rows[0])

        def statements(size: int) -> Iterable[Statement]:
            for chunk in chunks(rows, size):
                values = common.copy()
                for row in chunk:
                    values += row
                yield _values(sql, len(chunk), width, len(common) + 1), values

        return await self._write(action, statements)

    async def claim(
        self, limit: int, owner: str, now: float, lease_until: float
    ) -> list[OutboxRow]:
        """Lease up to *limit* due rows.

        Alone on the file, in one transaction: read the due rows (as one JSON value), lease
        them by id. While an application writes too, in three steps: read the due ids, lease
        them a few hundred at a time, read the leased rows. Only the middle one takes SQLite's
        write lock, and it runs in C from start to commit, where an UPDATE ... RETURNING keeps
        the lock while Python fetches each returned row, waiting for the GIL at every one.
        """
        params = {"owner": owner, "lease_until": lease_until, "now": now}

        def claim_alone(conn: sqlite3.Connection) -> list[Any]:
            due = {"now": now, "limit": limit}
            rows = _read_rows(conn, DUE_ROWS, due)
            if rows is None:
                return _fetch(conn, conn.execute(CLAIM, {**params, **due}), CLAIMED, params)
            if rows:
                conn.execute(LEASE_ALL, {**params, "ids": _ids([row[0] for row in rows])})
            return rows

        def claim(conn: sqlite3.Connection) -> list[Any]:
            if not self._writer.sharing:
                return in_transaction(claim_alone)(conn)
            taken = self._lease_due(conn, limit, params)
            if not taken:
                return []
            leased = {**params, "ids": _ids(taken)}
            try:
                rows = _read_rows(conn, LEASED_ROWS, leased)
                if rows is None:
                    rows = _fetch(conn, conn.execute(LEASED, leased), LEASED, leased)
                return rows
            except (sqlite3.Error, ValueError):
                # Leased, but they will not reach the worker: give them back now, not when
                # their lease runs out.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(RELEASE, {"ids": leased["ids"], "owner": owner, "now": now})
                raise

        try:
            rows = await self._writer.run(claim, urgent=True)
        except sqlite3.Error as error:
            self._check_lost(error)
            # SQLite's own messages name the failure (locked, full, read-only), never row data.
            raise StoreError(f"SQLite failed to claim rows: {error}") from None
        except ValueError as error:  # a decoding failure could quote the row: name the type
            raise StoreError(f"SQLite failed to claim rows: {type(error).__name__}") from None
        return list(map(OutboxRow._make, rows))

    def _lease_due(self, conn: sqlite3.Connection, limit: int, params: dict[str, Any]) -> list[int]:
        """Lease up to *limit* due rows, a few hundred per transaction; return their ids."""
        taken: list[int] = []
        for _ in range(CLAIM_READS):
            wanted = {"now": params["now"], "limit": limit - len(taken)}
            ((due_ids,),) = conn.execute(DUE, wanted).fetchall()
            due: list[int] = orjson.loads(due_ids)
            for chunk in chunks(due, WRITE_ROWS):
                lease = {**params, "ids": _ids(chunk), "rows": len(chunk)}
                try:
                    changed = self._writer.write(conn, [(LEASE, lease)])
                except sqlite3.Error:
                    if not taken:
                        raise
                    # The earlier chunks are leased: hand them to the worker (the next claim
                    # meets the fault again), or they would wait out their lease unseen.
                    return taken
                if changed < len(chunk):
                    break  # another claimer took some: read the due ids again
                taken += chunk
            else:
                break
        return taken

    async def mark_sent(
        self,
        ids: Sequence[int],
        owner: str,
        code: str,
        request_id: str | None,
        now: float,
        payloads: Sequence[str] | None = None,
    ) -> int:
        """Mark *ids* sent, replacing their payloads if given."""
        if payloads is None:
            params = {"owner": owner, "code": code, "request_id": request_id, "now": now}
            return await self._write_ids("mark rows sent", MARK_SENT, ids, params)
        if len(ids) != len(payloads):
            raise ValueError(f"{len(ids)} ids but {len(payloads)} payloads")
        return await self._write_values(
            "mark rows sent",
            MARK_SENT_SCRUBBED,
            [now, code, request_id, owner],
            list(zip(ids, payloads, strict=True)),
        )

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
        """Return rows to pending, each with its own next attempt time."""
        return await self._write_values(
            "reschedule rows",
            RESCHEDULE,
            [int(count_attempt), code, message, request_id, now, owner],
            [(r.row_id, r.next_attempt_at) for r in retries],
        )

    async def mark_dead(
        self,
        dead: Sequence[Dead],
        owner: str,
        request_id: str | None,
        count_attempt: bool,
        now: float,
    ) -> int:
        """Dead-letter rows, each with its own code and reason."""
        return await self._write_values(
            "dead-letter rows",
            MARK_DEAD,
            [int(count_attempt), request_id, now, owner],
            [(d.row_id, d.code, d.reason) for d in dead],
        )

    async def release(self, ids: Sequence[int], owner: str, now: float) -> int:
        """Return leased rows to pending as they were."""
        params = {"owner": owner, "now": now}
        return await self._write_ids("release leases", RELEASE, ids, params)

    async def extend_lease(self, ids: Sequence[int], owner: str, lease_until: float) -> int:
        """Push the lease of rows still being worked on."""
        params = {"owner": owner, "lease_until": lease_until}
        return await self._write_ids("extend leases", EXTEND_LEASE, ids, params)

    async def rescue_expired(self, now: float) -> int:
        """Return rows whose lease ran out to pending (after checking the file is still ours)."""
        self._check_file()
        params = {"now": now}
        return await self._call(
            "rescue expired leases", lambda conn: self._until_done(conn, RESCUE_EXPIRED, params)
        )

    def _until_done(
        self, conn: sqlite3.Connection, sql: str, params: dict[str, Any], most: int | None = None
    ) -> int:
        """Run *sql*, which changes at most ``:limit`` rows, until it changes fewer or *most*
        rows are done (on the writer's thread)."""
        done = 0
        while most is None or done < most:
            size = self._writer.rows_per_write
            if most is not None:
                size = min(size, most - done)
            changed = self._writer.write(conn, [(sql, {**params, "limit": size})])
            done += changed
            if changed < size:
                break
        return done

    def _check_file(self) -> None:
        """Raise StoreLost if the path no longer names the file this store opened.

        A removed or replaced file stays usable through open descriptors, so without this the
        daemon would keep draining a deleted copy while the application writes a new one.
        """
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_dev, current.st_ino) != self._identity:
            raise StoreLost(
                f"the SQLite database {self.path} was removed or replaced while the daemon ran; "
                "it must start again on the new file (systemd restarts it)"
            )

    def _check_lost(self, error: sqlite3.Error) -> None:
        if "readonly" in str(error):
            raise StoreLost(
                f"the SQLite database {self.path} is read-only for the daemon ({error}); make "
                "the file and its folder writable, then start it again (systemd restarts it)"
            ) from None

    async def next_due_at(self) -> float | None:
        """The earliest next attempt among pending rows."""
        sql = "SELECT min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'"
        value = await self._call(
            "read the next due time", lambda conn: conn.execute(sql).fetchone()[0]
        )
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

        def insert(conn: sqlite3.Connection) -> tuple[int, bool]:
            rows = conn.execute(INSERT, params).fetchall()
            if rows:
                return int(rows[0][0]), True
            return int(conn.execute(FIND, params).fetchall()[0][0]), False

        return await self._call("insert the event", insert)

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
        await self._write("record state", lambda _: [(SET_STATE, params)])

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

            def work(conn: sqlite3.Connection, size: int = size) -> int:
                found = conn.execute(select, {**params, "batch": size}).fetchall()
                ids = _ids([row[0] for row in found])
                for statement in statements:
                    conn.execute(statement, {"ids": ids, "now": now})
                return len(found)

            found = await self._call(action, in_transaction(work))
            done += found
            if found < size:
                break
        return done

    async def replay_dead(self, where: DeadFilter, now: float, batch: int = WRITE_ROWS) -> int:
        """Return matching dead rows to pending in batches, recording their failure first."""
        return await self._dead_batches(
            "replay dead rows", where, batch, (REPLAY_RECORD, REPLAY), now
        )

    async def purge_dead(self, where: DeadFilter, batch: int = WRITE_ROWS) -> int:
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
        params = {"before": before}
        return await self._call(
            "prune sent rows", lambda conn: self._until_done(conn, PRUNE_SENT, params, limit)
        )

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
        """Check that the outbox table answers and can be written."""
        sql = "SELECT 1 FROM tiktok_outbox LIMIT 1"
        await self._call("reach the outbox table", lambda conn: conn.execute(sql).fetchall())
        # SQLite falls back to read-only when the file is not writable, and says so only at
        # the first write: try one that changes nothing.
        probe = "UPDATE tiktok_outbox SET id = id WHERE 0"
        try:
            await self._writer.run(lambda conn: conn.execute(probe).rowcount, urgent=True)
        except sqlite3.Error as error:
            self._check_lost(error)
            raise _fail("write to the outbox table", error) from error

    async def close(self) -> None:
        """Close the connections: the reader first, whose thread would keep the process from
        exiting; under WAL it never waits for the write lock, which may be blocked."""
        try:
            await self._reader.close()
        finally:
            await self._writer.close()
