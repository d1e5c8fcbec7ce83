"""The worker's operations on SQLite: claims, settles, leases, pruning and the daemon's state,
all on the writer's thread, in transactions short enough to share the file."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from forwarder.errors import StoreError
from forwarder.events import OutboxRow
from forwarder.store.base import Dead, Retry
from forwarder.store.sqlite.connection import SQL, SQLiteConnection
from forwarder.store.sqlite.rows import as_json, fetch, keyed, read_rows
from forwarder.store.sqlite.writer import WRITE_ROWS, Statement, chunks, in_transaction

CLAIM_READS = 3  # due ids read again at most this often when another claimer took some


def _claim_alone(conn: sqlite3.Connection, limit: int, params: dict[str, Any]) -> list[Any]:
    """Read the due rows (as one JSON value) and lease them by id, in the caller's transaction;
    where they cannot be read as JSON, lease and return them in one statement."""
    due = {"now": params["now"], "limit": limit}
    rows = read_rows(conn, SQL["due_rows"], due)
    if rows is None:
        cursor = conn.execute(SQL["claim"], {**params, **due})
        return fetch(conn, cursor, SQL["claimed"], params)
    if rows:
        conn.execute(SQL["lease_all"], {**params, "ids": as_json(row[0] for row in rows)})
    return rows


class SQLiteOutbox(SQLiteConnection):
    """What the worker does to the outbox on SQLite."""

    async def _write(self, action: str, statements: Callable[[int], Iterable[Statement]]) -> int:
        """Run the statements *statements* makes for a number of rows per statement, each its
        own short transaction; return the rows they changed."""
        return await self._call(
            action, lambda conn: self._writer.write(conn, statements(self._writer.rows_per_write))
        )

    async def _write_ids(
        self, action: str, sql: str, ids: Sequence[int], params: dict[str, Any]
    ) -> int:
        """Run *sql* for *ids*, passed as the JSON array ``:ids``, a few at a time."""
        return await self._write(
            action,
            lambda size: ((sql, {**params, "ids": as_json(chunk)}) for chunk in chunks(ids, size)),
        )

    async def _write_keyed(
        self,
        action: str,
        sql: str,
        values: Sequence[tuple[int, Any]],
        params: dict[str, Any],
        notes: Mapping[int, str] | None = None,
    ) -> int:
        """Run *sql* for *values*, passed as the JSON object ``:rows`` of id → value, and
        *notes* of the same ids as ``:notes``, a few rows at a time."""
        if not values:
            return 0
        notes = notes or {}

        def statements(size: int) -> Iterator[tuple[str, dict[str, Any]]]:
            for chunk in chunks(values, size):
                given = {row_id: notes[row_id] for row_id, _ in chunk if row_id in notes}
                yield sql, {**params, "rows": keyed(chunk), "notes": keyed(given.items())}

        return await self._write(action, statements)

    async def _write_rows(
        self, action: str, sql: str, rows: Sequence[tuple[Any, ...]], params: dict[str, Any]
    ) -> int:
        """Run *sql* for *rows*, passed as the JSON array of arrays ``:rows``, a few at a time."""
        if not rows:
            return 0
        return await self._write(
            action,
            lambda size: (
                (sql, {**params, "rows": as_json(chunk)}) for chunk in chunks(rows, size)
            ),
        )

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

        def claim(conn: sqlite3.Connection) -> list[Any]:
            if not self._writer.sharing:
                return in_transaction(lambda conn: _claim_alone(conn, limit, params))(conn)
            return self._claim_sharing(conn, limit, params)

        try:
            rows = await self._writer.run(claim, urgent=True)
        except sqlite3.Error as error:
            self._check_lost(error)
            # SQLite's own messages name the failure (locked, full, read-only), never row data.
            raise StoreError(f"SQLite failed to claim rows: {error}") from None
        except ValueError as error:  # a decoding failure could quote the row: name the type
            raise StoreError(f"SQLite failed to claim rows: {type(error).__name__}") from None
        return list(map(OutboxRow._make, rows))

    def _claim_sharing(
        self, conn: sqlite3.Connection, limit: int, params: dict[str, Any]
    ) -> list[Any]:
        """Lease due rows a few hundred per transaction, then read them (on the writer's
        thread)."""
        taken = self._lease_due(conn, limit, params)
        if not taken:
            return []
        leased = {**params, "ids": as_json(taken)}
        try:
            rows = read_rows(conn, SQL["leased_rows"], leased)
            if rows is None:
                rows = fetch(conn, conn.execute(SQL["leased"], leased), SQL["leased"], leased)
            return rows
        except (sqlite3.Error, ValueError):
            # Leased, but they will not reach the worker: give them back now, not when their
            # lease runs out.
            with contextlib.suppress(sqlite3.Error):
                release = {"ids": leased["ids"], "owner": params["owner"], "now": params["now"]}
                conn.execute(SQL["release"], release)
            raise

    def _lease_due(self, conn: sqlite3.Connection, limit: int, params: dict[str, Any]) -> list[int]:
        """Lease up to *limit* due rows, a few hundred per transaction; return their ids."""
        taken: list[int] = []
        for _ in range(CLAIM_READS):
            wanted = {"now": params["now"], "limit": limit - len(taken)}
            ((due_ids,),) = conn.execute(SQL["due"], wanted).fetchall()
            due: list[int] = orjson.loads(due_ids)
            for chunk in chunks(due, WRITE_ROWS):
                lease = {**params, "ids": as_json(chunk), "rows": len(chunk)}
                try:
                    changed = self._writer.write(conn, [(SQL["lease"], lease)])
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
        notes: Mapping[int, str] | None = None,
    ) -> int:
        """Mark *ids* sent, replacing their payloads if given; *notes* (by id) are kept as
        the rows' last_error."""
        params = {"owner": owner, "code": code, "request_id": request_id, "now": now}
        if payloads is None:
            if not notes:
                return await self._write_ids(
                    "mark rows sent", SQL["mark_sent"], ids, {**params, "notes": "{}"}
                )
            marks = [(row_id, None) for row_id in ids]
            return await self._write_keyed(
                "mark rows sent", SQL["mark_sent_by_key"], marks, params, notes
            )
        if len(ids) != len(payloads):
            raise ValueError(f"{len(ids)} ids but {len(payloads)} payloads")
        rows = list(zip(ids, payloads, strict=True))
        return await self._write_keyed(
            "mark rows sent", SQL["mark_sent_scrubbed"], rows, params, notes
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
        return await self._write_keyed(
            "reschedule rows",
            SQL["reschedule"],
            [(r.row_id, r.next_attempt_at) for r in retries],
            {
                "attempt": int(count_attempt),
                "code": code,
                "message": message,
                "request_id": request_id,
                "now": now,
                "owner": owner,
            },
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
        return await self._write_rows(
            "dead-letter rows",
            SQL["mark_dead"],
            [(d.row_id, d.code, d.reason) for d in dead],
            {"attempt": int(count_attempt), "request_id": request_id, "now": now, "owner": owner},
        )

    async def release(self, ids: Sequence[int], owner: str, now: float) -> int:
        """Return leased rows to pending as they were."""
        params = {"owner": owner, "now": now}
        return await self._write_ids("release leases", SQL["release"], ids, params)

    async def extend_lease(self, ids: Sequence[int], owner: str, lease_until: float) -> int:
        """Push the lease of rows still being worked on."""
        params = {"owner": owner, "lease_until": lease_until}
        return await self._write_ids("extend leases", SQL["extend_lease"], ids, params)

    async def rescue_expired(self, now: float) -> int:
        """Return rows whose lease ran out to pending (after checking the file is still ours)."""
        self._check_file()
        params = {"now": now}
        return await self._call(
            "rescue expired leases",
            lambda conn: self._until_done(conn, SQL["rescue_expired"], params),
        )

    async def prune_sent(self, before: float, limit: int) -> int:
        """Delete at most *limit* rows sent before *before*."""
        params = {"before": before}
        return await self._call(
            "prune sent rows", lambda conn: self._until_done(conn, SQL["prune_sent"], params, limit)
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

    async def set_state(self, key: str, value: dict[str, Any], now: float) -> None:
        """Upsert one key of forwarder_state."""
        params = {"key": key, "value": orjson.dumps(value).decode(), "now": now}
        await self._write("record state", lambda _: [(SQL["set_state"], params)])

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """Read one key of forwarder_state."""
        rows = await self._read("read state", SQL["get_state"], {"key": key})
        return orjson.loads(rows[0][0]) if rows else None
