"""The SQLite file and the store's connections to it: opening it (created, or required to exist),
WAL, the reading connection, checks that the file is still the one opened, migration, errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite

from forwarder import migrate
from forwarder.errors import MigrationError, StoreError, StoreLost
from forwarder.store import queries
from forwarder.store.sqlite.rows import text
from forwarder.store.sqlite.writer import Writer, connect_writer

SQL = queries.load("forwarder.store.sqlite")

_T = TypeVar("_T")


def fail(action: str, error: sqlite3.Error) -> StoreError:
    """A StoreError saying what failed: SQLite's messages never quote row data."""
    return StoreError(f"SQLite failed to {action}: {error}")


def create_file(path: Path) -> None:
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


def must_exist(path: Path) -> None:
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
            conn.execute(SQL["journal_wal"])
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def split_statements(script: str) -> list[str]:
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


def _apply(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet applied, inside the caller's write transaction."""
    conn.execute(SQL["migrations_table"])
    done = {name for (name,) in conn.execute(SQL["applied_migrations"])}
    applied = []
    for migration in migrate.load("sqlite"):
        if migration.name in done:
            continue
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        conn.execute(SQL["record_migration"], {"name": migration.name, "applied_at": time.time()})
        applied.append(migration.name)
    return applied


def migrate_sync(path: Path, busy_timeout_ms: int = 5000) -> list[str]:
    """Apply pending migrations to the file at *path* in one write transaction.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock before reading what is applied, so two
    daemons starting at once apply each migration exactly once; the second waits, then finds
    nothing to do.
    """
    try:
        create_file(path)
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    except FileNotFoundError as error:
        raise MigrationError(f"cannot create SQLite database {path}: {error}") from None
    except (OSError, sqlite3.Error) as error:
        raise MigrationError(f"cannot open SQLite database {path}: {error}") from error
    try:
        # WAL lets the application insert while the daemon reads; it is a property of the file.
        _set_wal(conn, busy_timeout_ms)
        conn.execute(SQL["begin_immediate"])
        applied = _apply(conn)
        conn.execute(SQL["commit"])
        return applied
    except sqlite3.Error as error:
        if conn.in_transaction:
            conn.execute(SQL["rollback"])
        raise MigrationError(f"migrating SQLite database {path} failed: {error}") from error
    finally:
        conn.close()


class SQLiteConnection:
    """The store's two connections to one SQLite file: the writer's thread and a reader."""

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
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000, create: bool = True) -> Self:
        """Connect to *path*, creating the file if *create* (never its folder); the schema is
        made by migrate()."""
        try:
            if create:
                create_file(path)
            else:
                must_exist(path)
            conn = await asyncio.to_thread(connect_writer, path, busy_timeout_ms)
        except FileNotFoundError as error:
            raise StoreError(f"cannot create SQLite database {path}: {error}") from None
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open SQLite database {path}: {error}") from error
        writer = Writer(conn)
        try:
            reader = await aiosqlite.connect(
                path, isolation_level=None, timeout=busy_timeout_ms / 1000
            )
        except (OSError, sqlite3.Error) as error:
            await writer.close()
            raise StoreError(f"cannot open SQLite database {path}: {error}") from error
        # Operators must see every row, even one whose TEXT is not valid UTF-8.
        reader.text_factory = text
        return cls(path, writer, reader, busy_timeout_ms)

    async def _call(
        self, action: str, call: Callable[[sqlite3.Connection], _T], *, urgent: bool = False
    ) -> _T:
        """Run *call* on the writer's thread; a database error becomes a StoreError."""
        try:
            return await self._writer.run(call, urgent=urgent)
        except sqlite3.Error as error:
            raise fail(action, error) from error

    async def _read(self, action: str, sql: str, params: dict[str, Any]) -> list[Any]:
        """The rows *sql* gives on the reading connection."""
        async with self._read_lock:
            try:
                return list(await self._reader.execute_fetchall(sql, params))
            except sqlite3.Error as error:
                raise fail(action, error) from error

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
        """Raise StoreLost if *error* says the file became read-only for the daemon."""
        if "readonly" in str(error):
            raise StoreLost(
                f"the SQLite database {self.path} is read-only for the daemon ({error}); make "
                "the file and its folder writable, then start it again (systemd restarts it)"
            ) from None

    async def migrate(self) -> list[str]:
        """Apply pending migrations (in a thread: it uses its own blocking connection)."""
        return await asyncio.to_thread(migrate_sync, self.path, self._busy_timeout_ms)

    async def ping(self) -> None:
        """Check that the outbox table answers and can be written."""
        await self._call(
            "reach the outbox table", lambda conn: conn.execute(SQL["ping"]).fetchall()
        )
        # SQLite falls back to read-only when the file is not writable, and says so only at
        # the first write: try one that changes nothing.
        try:
            await self._writer.run(
                lambda conn: conn.execute(SQL["write_probe"]).rowcount, urgent=True
            )
        except sqlite3.Error as error:
            self._check_lost(error)
            raise fail("write to the outbox table", error) from error

    async def close(self) -> None:
        """Close the connections: the reader first, whose thread would keep the process from
        exiting; under WAL it never waits for the write lock, which may be blocked."""
        try:
            await self._reader.close()
        finally:
            await self._writer.close()
