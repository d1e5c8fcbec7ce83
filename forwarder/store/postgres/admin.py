"""The commands' operations on PostgreSQL: inserting an event, the status summary, dead letters
(listed, replayed, purged), finding an event and the applied migrations."""

from __future__ import annotations

from typing import Any

import orjson

from forwarder.events import DEAD, INFLIGHT, PENDING, SENT, STATUSES
from forwarder.store.base import DeadFilter, NewEvent, ReplayRecord, RowDetail, Summary
from forwarder.store.postgres.connection import SQL, PostgresConnection
from forwarder.store.postgres.listen import CHANNEL

RECENT_WINDOW_S = 24 * 3600.0  # how far back `status` looks for failure codes


def dead_params(where: DeadFilter) -> list[Any]:
    """The first four parameters of the dead-row statements (codes, events, since, ids) for
    the rows *where* names: NULL for a filter not given."""
    return [
        list(where.codes) if where.codes else None,
        list(where.events) if where.events else None,
        None if where.since is None else float(where.since),
        list(where.ids) if where.ids else None,
    ]


class PostgresAdmin(PostgresConnection):
    """What operators, applications and `forwarder status` do to the outbox on PostgreSQL."""

    async def next_due_at(self) -> float | None:
        """The earliest next attempt among pending rows."""
        row = await self._fetchrow("read the next due time", SQL["next_due"])
        return None if row[0] is None else float(row[0])

    async def insert(self, event: NewEvent) -> tuple[int, bool]:
        """Insert one event unless its (pixel_code, event, event_id) exists."""
        async with self._connection("insert the event") as conn:
            row_id = await conn.fetchval(
                SQL["insert"],
                event.event_id,
                event.event,
                event.event_time,
                event.payload,
                event.pixel_code,
                event.event_source,
                event.test_event_code,
                event.payload_format,
            )
            if row_id is not None:
                return int(row_id), True
            found = await conn.fetchval(
                SQL["find_key"], event.pixel_code, event.event, event.event_id
            )
        if found is None:  # deleted between the two statements (purged): insert again
            return await self.insert(event)
        return int(found), False

    async def summary(self, now: float) -> Summary:
        """Counts by status, lag, recent failure codes and the daemons' recorded state."""
        async with (
            self._connection("read the status") as conn,
            # One snapshot, so the figures are of one moment.
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            pending, inflight, sent, dead = await conn.fetchrow(SQL["counts"])
            oldest, next_due = await conn.fetchrow(SQL["lag"])
            codes = await conn.fetch(SQL["recent_codes"], now - RECENT_WINDOW_S)
            state_rows = await conn.fetch(SQL["states"])
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({PENDING: pending, INFLIGHT: inflight, SENT: sent, DEAD: dead})
        return Summary(
            counts=counts,
            oldest_pending_age_s=None if oldest is None else max(0.0, now - oldest),
            next_due_in_s=None if next_due is None else max(0.0, next_due - now),
            recent_codes={str(code): int(n) for code, n in codes},
            state={key: orjson.loads(value) for key, value in state_rows},
        )

    async def dead_rows(self, where: DeadFilter) -> list[RowDetail]:
        """Dead rows matching *where*, oldest first."""
        rows = await self._fetch(
            "list dead rows", SQL["dead_rows"], *dead_params(where), where.limit
        )
        return [RowDetail(*row) for row in rows]

    async def _dead_batches(
        self, action: str, where: DeadFilter, batch: int, sql: str, *extra: Any
    ) -> int:
        """Apply *sql* (given the filter, the id to start after, the batch size and *extra*)
        to matching dead rows, at most *batch* rows per statement.

        Batches walk the ids upwards, so a row that dies again meanwhile is not taken twice.
        """
        params = dead_params(where)
        done, after = 0, 0
        while where.limit is None or done < where.limit:
            size = batch if where.limit is None else min(batch, where.limit - done)
            row = await self._fetchrow(action, sql, *params, after, size, *extra)
            found, last = int(row[0]), row[1]
            done += found
            if found < size or last is None:
                break
            after = int(last)
        return done

    async def replay_dead(self, where: DeadFilter, now: float, batch: int = 1000) -> int:
        """Return matching dead rows to pending in batches, recording their failure first."""
        replayed = await self._dead_batches(
            "replay dead rows", where, batch, SQL["replay_dead"], now
        )
        if replayed:
            await self._execute("wake the daemons", SQL["wake"], CHANNEL)
        return replayed

    async def purge_dead(self, where: DeadFilter, batch: int = 1000) -> int:
        """Delete matching dead rows in batches."""
        return await self._dead_batches("purge dead rows", where, batch, SQL["purge_dead"])

    async def find(self, event_id: str) -> list[tuple[RowDetail, list[ReplayRecord]]]:
        """Every row with this event_id, with the failures it had when it was replayed."""
        async with (
            self._connection("find the event") as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(SQL["find_event"], event_id)
            replays = await conn.fetch(SQL["replays"], [row[0] for row in rows])
        by_row: dict[int, list[ReplayRecord]] = {}
        for replay in replays:
            by_row.setdefault(replay[0], []).append(ReplayRecord(*list(replay)[1:]))
        return [(RowDetail(*row), by_row.get(row[0], [])) for row in rows]

    async def applied_migrations(self) -> list[str]:
        """Names of the applied migrations (none on a database never migrated)."""
        async with self._connection("read migrations") as conn:
            if not await conn.fetchval(SQL["migrations_table_exists"]):
                return []
            rows = await conn.fetch(SQL["applied_migrations"])
        return [row[0] for row in rows]
