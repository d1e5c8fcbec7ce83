"""The worker's operations on PostgreSQL: claims, settles, leases, pruning and the daemons'
state, each one statement.

Claims take due rows with ``FOR UPDATE SKIP LOCKED``, so two daemons never lease the same row;
every settle is guarded by ``status = 'inflight' AND lease_owner = owner`` as on SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from forwarder.events import OutboxRow
from forwarder.store.base import Dead, Retry
from forwarder.store.postgres.connection import SQL
from forwarder.store.postgres.listen import PostgresListen


class PostgresOutbox(PostgresListen):
    """What the worker does to the outbox on PostgreSQL."""

    async def claim(
        self, limit: int, owner: str, now: float, lease_until: float
    ) -> list[OutboxRow]:
        """Lease up to *limit* due rows no other daemon holds, in one statement."""
        await self._listen()
        rows = await self._fetch("claim rows", SQL["claim"], owner, lease_until, now, limit)
        return list(map(OutboxRow._make, rows))

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
        """Mark *ids* sent in one statement, replacing their payloads if given; *notes* (by
        id) are kept as the rows' last_error."""
        given = notes or {}
        parallel = [given.get(row_id) for row_id in ids]
        if payloads is None:
            return await self._execute(
                "mark rows sent",
                SQL["mark_sent"],
                list(ids),
                owner,
                code,
                request_id,
                now,
                parallel,
            )
        if len(payloads) != len(ids):
            raise ValueError("payloads must be parallel to ids")
        return await self._execute(
            "mark rows sent",
            SQL["mark_sent_scrubbed"],
            list(ids),
            list(payloads),
            owner,
            code,
            request_id,
            now,
            parallel,
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
        """Return rows to pending, each with its own next attempt time, in one statement."""
        if not retries:
            return 0
        return await self._execute(
            "reschedule rows",
            SQL["reschedule"],
            [r.row_id for r in retries],
            [float(r.next_attempt_at) for r in retries],
            owner,
            int(count_attempt),
            code,
            message,
            request_id,
            now,
        )

    async def mark_dead(
        self,
        dead: Sequence[Dead],
        owner: str,
        request_id: str | None,
        count_attempt: bool,
        now: float,
    ) -> int:
        """Dead-letter rows with their codes and reasons in one statement."""
        if not dead:
            return 0
        return await self._execute(
            "dead-letter rows",
            SQL["mark_dead"],
            [d.row_id for d in dead],
            [d.code for d in dead],
            [d.reason for d in dead],
            owner,
            int(count_attempt),
            request_id,
            now,
        )

    async def release(self, ids: Sequence[int], owner: str, now: float) -> int:
        """Return leased rows to pending as they were."""
        return await self._execute("release leases", SQL["release"], list(ids), owner, now)

    async def extend_lease(self, ids: Sequence[int], owner: str, lease_until: float) -> int:
        """Push the lease of rows still being worked on."""
        return await self._execute(
            "extend leases", SQL["extend_lease"], list(ids), owner, lease_until
        )

    async def rescue_expired(self, now: float) -> int:
        """Return rows whose lease ran out to pending (never a row settled meanwhile)."""
        return await self._execute("rescue expired leases", SQL["rescue_expired"], now)

    async def prune_sent(self, before: float, limit: int) -> int:
        """Delete at most *limit* rows sent before *before*, oldest first."""
        return await self._execute("prune sent rows", SQL["prune_sent"], before, limit)

    async def set_state(self, key: str, value: dict[str, Any], now: float) -> None:
        """Upsert one key of forwarder_state."""
        await self._execute(
            "record state", SQL["set_state"], key, orjson.dumps(value).decode(), now
        )

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """One key of forwarder_state as recorded (by any daemon), or None."""
        row = await self._fetchrow("read state", SQL["get_state"], key)
        if row is None:
            return None
        value = orjson.loads(row[0])
        return value if isinstance(value, dict) else None
