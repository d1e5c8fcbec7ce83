"""The daemon's SQLite writing connection: a thread of its own, and turns for the application.

SQLite lets one connection write at a time. An application inserting while the daemon writes
waits in SQLite's busy handler, which sleeps 1, 2, 5, 10, 15 ms... between tries
(``sqliteDefaultBusyCallback`` in SQLite's ``main.c``): an insert that meets a 12 ms write of the
daemon gets the lock only at its fifth try, 18 ms later, and one that meets two writes back to
back at its sixth, 33 ms later. So once another connection has committed (``PRAGMA data_version``
moved), and for ``SHARED_S`` after, the daemon writes at most ``WRITE_ROWS`` rows per transaction
(about 2 ms each, all of it in SQLite's C code: no Python, so no wait for the GIL, while the lock
is held), and leaves the lock free after each of its transactions for at least as long as it held
it: the application's try 1 or 3 ms after its first then finds the lock free. Alone on the file,
it writes up to ``ALONE_ROWS`` rows per transaction without pauses: five commits instead of one
cost a settle of 1,000 rows 2.4 times the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from forwarder.store import queries

SQL = queries.load("forwarder.store.sqlite")

WRITE_ROWS = 200  # rows per write transaction while sharing: the lock is held briefly each time
ALONE_ROWS = 1000  # rows per write transaction while no other connection writes
SHARED_S = 10.0  # how long the daemon keeps making way after another connection's last commit
GAP_MIN_S = 0.002  # the lock left free after each transaction while sharing: at least this,
GAP_MAX_S = 0.005  # as long as the transaction held it, and at most this

_T = TypeVar("_T")
_URGENT, _NORMAL, _LAST = 0, 1, 2  # the order of waiting calls on the writer's thread

Statement = tuple[str, dict[str, Any] | list[Any]]


def _settle_future(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def connect_writer(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """The daemon's writing connection to *path*, to be used from the writer's thread only.

    *busy_timeout_ms* becomes SQLite's busy timeout through sqlite3's *timeout*.
    """
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=busy_timeout_ms / 1000, check_same_thread=False
    )
    try:
        conn.execute(SQL["synchronous_normal"])
    except BaseException:
        conn.close()
        raise
    return conn


def in_transaction(work: Callable[[sqlite3.Connection], _T]) -> Callable[[sqlite3.Connection], _T]:
    """*work* wrapped in one write transaction, for the writer's thread."""

    def call(conn: sqlite3.Connection) -> _T:
        conn.execute(SQL["begin_immediate"])
        try:
            result = work(conn)
            conn.execute(SQL["commit"])
        except BaseException:
            if conn.in_transaction:
                conn.execute(SQL["rollback"])
            raise
        return result

    return call


class Writer:
    """The daemon's writing connection, used only from a thread of its own.

    Each store operation is one call of run(): a function given the connection, which runs a
    whole statement or transaction there, so there is one hop between threads per operation,
    never one per statement, and the thread goes from one operation to the next without
    waiting for the event loop in between. Calls run in the order they were made, except that
    an urgent one (a claim) goes before the calls still waiting: the worker's loop waits for its
    claim, while settles only record answers that came.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._calls: queue.PriorityQueue[
            tuple[int, int, Callable[[sqlite3.Connection], Any] | None, asyncio.Future[Any]]
        ] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        # Read and written on the writer's thread only.
        self._data_version: int | None = None
        self._shared_until = 0.0
        #: Seconds the writer left the lock free for other connections (for tests and benches).
        self.gave_way_s = 0.0
        self._thread = threading.Thread(target=self._serve, name="forwarder-sqlite", daemon=True)
        self._thread.start()

    def run(
        self, call: Callable[[sqlite3.Connection], _T], *, urgent: bool = False
    ) -> asyncio.Future[_T]:
        """Queue *call* now; the future gets what it returns or raises."""
        if self._closed:
            raise ValueError("the SQLite connection is closed")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._calls.put((_URGENT if urgent else _NORMAL, next(self._order), call, future))
        return future

    @property
    def rows_per_write(self) -> int:
        """How many rows one write transaction may change now (on the writer's thread)."""
        return WRITE_ROWS if self.sharing else ALONE_ROWS

    @property
    def sharing(self) -> bool:
        """Whether another connection has committed within the last ``SHARED_S`` (on the
        writer's thread)."""
        (version,) = self._conn.execute(SQL["data_version"]).fetchone()
        now = time.monotonic()
        if version != self._data_version:
            if self._data_version is not None:  # the first reading is only a baseline
                self._shared_until = now + SHARED_S
            self._data_version = version
        return now < self._shared_until

    def write(self, conn: sqlite3.Connection, statements: Iterable[Statement]) -> int:
        """Run *statements* on the writer's thread, each its own transaction, making way for
        other writers after each; return the rows they changed.

        Each statement must change at most ``rows_per_write`` rows, and every row it changes
        must stand on its own: a crash between two statements leaves the first one's rows done
        and the rest as they were.
        """
        changed = 0
        for sql, params in statements:
            began = time.monotonic()
            changed += conn.execute(sql, params).rowcount
            self.make_way(time.monotonic() - began)
        return changed

    def make_way(self, held_s: float) -> None:
        """After a write transaction of *held_s* seconds, leave the write lock free for a
        moment if another connection has written lately (on the writer's thread)."""
        if self.sharing:
            gap = min(max(GAP_MIN_S, held_s), GAP_MAX_S)
            time.sleep(gap)
            self.gave_way_s += gap

    async def close(self) -> None:
        """Run what is queued, close the connection, end the thread."""
        if self._closed:
            return
        self._closed = True
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._calls.put((_LAST, next(self._order), None, done))
        await done
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        while True:
            _, _, call, future = self._calls.get()
            result: Any = None
            error: BaseException | None = None
            if call is None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            elif not future.cancelled():  # read across threads: at worst a call runs anyway
                try:
                    result = call(self._conn)
                except BaseException as failure:  # handed to the caller
                    error = failure
                    # A call that failed half-way must not keep SQLite's write lock.
                    with contextlib.suppress(sqlite3.Error):
                        if self._conn.in_transaction:
                            self._conn.rollback()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                future.get_loop().call_soon_threadsafe(_settle_future, future, result, error)
            if call is None:
                return


def chunks(values: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    """*values* in slices of at most *size*."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
