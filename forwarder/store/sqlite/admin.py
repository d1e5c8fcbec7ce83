"""The commands' operations on SQLite: inserting an event, the status summary, dead letters
(listed, replayed, purged), finding an event and the applied migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from forwarder.errors import StoreError
from forwarder.events import DEAD, INFLIGHT, PENDING, STATUSES
from forwarder.store.base import DeadFilter, NewEvent, ReplayRecord, RowDetail, Summary
from forwarder.store.sqlite.connection import SQL, SQLiteConnection, fail
from forwarder.store.sqlite.rows import as_json
from forwarder.store.sqlite.writer import WRITE_ROWS, in_transaction

RECENT_WINDOW_S = 24 * 3600.0  # how far back `status` looks for failure codes


def dead_params(where: DeadFilter) -> dict[str, Any]:
    """The parameters of the dead_rows and dead_batch statements selecting the rows *where*
    names: NULL for a filter not given, a JSON array for a list."""
    return {
        "codes": as_json(where.codes) if where.codes else None,
        "events": as_json(where.events) if where.events else None,
        "since": where.since,
        "ids": as_json(where.ids) if where.ids else None,
        "limit": where.limit,
    }


class SQLiteAdmin(SQLiteConnection):
    """What operators, applications and `forwarder status` do to the outbox on SQLite."""

    async def next_due_at(self) -> float | None:
        """The earliest next attempt among pending rows."""
        value = await self._call(
            "read the next due time", lambda conn: conn.execute(SQL["next_due"]).fetchone()[0]
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
            "payload_format": event.payload_format,
        }

        def insert(conn: sqlite3.Connection) -> tuple[int, bool]:
            rows = conn.execute(SQL["insert"], params).fetchall()
            if rows:
                return int(rows[0][0]), True
            return int(conn.execute(SQL["find_key"], params).fetchall()[0][0]), False

        return await self._call("insert the event", insert)

    async def summary(self, now: float) -> Summary:
        """Counts by status, lag, recent failure codes and the daemon's recorded state."""
        reader = self._reader
        async with self._read_lock:
            try:
                # One read transaction, so the figures are of one moment.
                await reader.execute(SQL["begin"])
                try:
                    (total, pending, inflight, dead), *_ = await reader.execute_fetchall(
                        SQL["counts"]
                    )
                    (oldest, next_due), *_ = await reader.execute_fetchall(SQL["lag"])
                    codes = await reader.execute_fetchall(
                        SQL["recent_codes"], {"since": now - RECENT_WINDOW_S}
                    )
                    state_rows = await reader.execute_fetchall(SQL["states"])
                finally:
                    await reader.execute(SQL["commit"])
            except sqlite3.Error as error:
                raise fail("read the status", error) from error
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

    async def dead_rows(self, where: DeadFilter) -> list[RowDetail]:
        """Dead rows matching *where*, oldest first."""
        sql = SQL["dead_rows_by_id"] if where.ids else SQL["dead_rows"]
        rows = await self._read("list dead rows", sql, dead_params(where))
        return [RowDetail(*row) for row in rows]

    async def _dead_batches(
        self, action: str, where: DeadFilter, batch: int, statements: Sequence[str], now: float
    ) -> int:
        """Apply *statements* to matching dead rows, *batch* rows per transaction."""
        params = dead_params(where)
        select = SQL["dead_batch_by_id"] if where.ids else SQL["dead_batch"]
        done = 0
        while where.limit is None or done < where.limit:
            size = batch if where.limit is None else min(batch, where.limit - done)

            def work(conn: sqlite3.Connection, size: int = size) -> int:
                found = conn.execute(select, {**params, "batch": size}).fetchall()
                ids = as_json(row[0] for row in found)
                for statement in statements:
                    conn.execute(statement, {"batch_ids": ids, "now": now})
                return len(found)

            found = await self._call(action, in_transaction(work))
            done += found
            if found < size:
                break
        return done

    async def replay_dead(self, where: DeadFilter, now: float, batch: int = WRITE_ROWS) -> int:
        """Return matching dead rows to pending in batches, recording their failure first."""
        statements = (SQL["record_replay"], SQL["replay"])
        return await self._dead_batches("replay dead rows", where, batch, statements, now)

    async def purge_dead(self, where: DeadFilter, batch: int = WRITE_ROWS) -> int:
        """Delete matching dead rows in batches."""
        return await self._dead_batches("purge dead rows", where, batch, (SQL["purge"],), 0.0)

    async def find(self, event_id: str) -> list[tuple[RowDetail, list[ReplayRecord]]]:
        """Every row with this event_id, with the failures it had when it was replayed."""
        rows = await self._read("find the event", SQL["find_event"], {"event_id": event_id})
        found = []
        for row in rows:
            replays = await self._read("read replays", SQL["replays"], {"id": row[0]})
            found.append((RowDetail(*row), [ReplayRecord(*r) for r in replays]))
        return found

    async def applied_migrations(self) -> list[str]:
        """Names of the applied migrations (none on a database never migrated)."""
        try:
            rows = await self._read("read migrations", SQL["applied_migrations"], {})
        except StoreError:
            return []
        return [name for (name,) in rows]
