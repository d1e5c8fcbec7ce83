"""The outbox on a shared PostgreSQL database: any number of daemons on any hosts.

Claims take due rows with ``FOR UPDATE SKIP LOCKED`` in one statement, so two daemons never
lease the same row; every settle is guarded by ``status = 'inflight' AND lease_owner = owner``
as on SQLite. An insert trigger NOTIFYs ``tiktok_outbox``; the store LISTENs on a connection of
its own and sets ``new_rows``, and the worker polls as well, so a lost notification only costs a
poll interval. ``poll_only`` skips LISTEN (and the statement cache) for PgBouncer's transaction
pooling. Connections that a server restart breaks surface as StoreError from the failing call
(the worker retries with backoff) and are opened again by the next call; no state is lost,
because every row's state lives in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import asyncpg
import orjson
import structlog

from forwarder import migrate
from forwarder.errors import ConfigError, MigrationError, StoreError
from forwarder.events import DEAD, INFLIGHT, PENDING, SENT, STATUSES, OutboxRow
from forwarder.store.base import (
    Dead,
    DeadFilter,
    NewEvent,
    ReplayRecord,
    Retry,
    RowDetail,
    Summary,
)

#: The channel the insert trigger of migrations/postgresql/0001_outbox.sql notifies.
CHANNEL = "tiktok_outbox"
#: pg_advisory_xact_lock key serialising `migrate` across daemons ("forwardr" in ASCII).
MIGRATION_LOCK = 0x666F7277_61726472
RECENT_WINDOW_S = 24 * 3600.0  # how far back `status` looks for failure codes
LISTEN_CHECK_S = 30.0  # how often an idle LISTEN connection is checked for a silent break
LISTEN_CHECK_TIMEOUT_S = 5.0
MIGRATE_TIMEOUT_S = 600.0  # a daemon waits this long for another one's migration

# One statement: pick due rows nobody else holds, oldest due first, and lease them.
CLAIM = """
WITH due AS (
    SELECT id FROM tiktok_outbox
     WHERE status = 'pending' AND next_attempt_at <= $3
     ORDER BY next_attempt_at
     LIMIT $4
       FOR UPDATE SKIP LOCKED
)
UPDATE tiktok_outbox AS t
   SET status = 'inflight', lease_owner = $1, lease_until = $2, updated_at = $3
  FROM due
 WHERE t.id = due.id
RETURNING t.id, t.event_id, t.event, t.event_time, t.payload, t.pixel_code, t.event_source,
          t.test_event_code, t.attempts, t.created_at
"""

# A row this very settle already marked (same sent_at, request and code) matches again and
# keeps its one attempt: a retried settle whose commit went through but whose answer was lost
# counts those rows as marked, not as leases lost.
MARK_SENT = """
UPDATE tiktok_outbox
   SET status = 'sent', attempts = attempts + (status = 'inflight')::int, sent_at = $5,
       updated_at = $5, last_code = $3, last_error = NULL, request_id = $4,
       lease_owner = NULL, lease_until = NULL
 WHERE id = ANY($1::bigint[])
   AND (status = 'inflight' AND lease_owner = $2
        OR status = 'sent' AND sent_at = $5 AND request_id IS NOT DISTINCT FROM $4
           AND last_code = $3)
"""

# The same, replacing each payload (raw identifiers scrubbed); ids and payloads are parallel.
MARK_SENT_SCRUBBED = """
UPDATE tiktok_outbox AS t
   SET status = 'sent', attempts = t.attempts + (t.status = 'inflight')::int, sent_at = $6,
       updated_at = $6, last_code = $4, last_error = NULL, request_id = $5,
       lease_owner = NULL, lease_until = NULL, payload = s.payload
  FROM unnest($1::bigint[], $2::text[]) AS s(id, payload)
 WHERE t.id = s.id
   AND (t.status = 'inflight' AND t.lease_owner = $3
        OR t.status = 'sent' AND t.sent_at = $6 AND t.request_id IS NOT DISTINCT FROM $5
           AND t.last_code = $4)
"""

RESCHEDULE = """
UPDATE tiktok_outbox AS t
   SET status = 'pending', attempts = t.attempts + $4, next_attempt_at = r.next_attempt_at,
       last_code = $5, last_error = $6, request_id = $7, updated_at = $8,
       lease_owner = NULL, lease_until = NULL
  FROM unnest($1::bigint[], $2::double precision[]) AS r(id, next_attempt_at)
 WHERE t.id = r.id AND t.status = 'inflight' AND t.lease_owner = $3
"""

MARK_DEAD = """
UPDATE tiktok_outbox AS t
   SET status = 'dead', attempts = t.attempts + $5, last_code = d.code, last_error = d.reason,
       request_id = $6, updated_at = $7, lease_owner = NULL, lease_until = NULL
  FROM unnest($1::bigint[], $2::text[], $3::text[]) AS d(id, code, reason)
 WHERE t.id = d.id AND t.status = 'inflight' AND t.lease_owner = $4
"""

RELEASE = """
UPDATE tiktok_outbox
   SET status = 'pending', updated_at = $3, lease_owner = NULL, lease_until = NULL
 WHERE id = ANY($1::bigint[]) AND status = 'inflight' AND lease_owner = $2
"""

EXTEND_LEASE = """
UPDATE tiktok_outbox SET lease_until = $3
 WHERE id = ANY($1::bigint[]) AND status = 'inflight' AND lease_owner = $2
"""

# Rows locked right now (their owner is settling them, or another daemon is rescuing them) are
# skipped, and FOR UPDATE re-checks the condition on the newest version of each row it locks:
# a row that its live daemon has just settled is never put back to pending.
RESCUE_EXPIRED = """
WITH expired AS (
    SELECT id FROM tiktok_outbox
     WHERE status = 'inflight' AND lease_until < $1
       FOR UPDATE SKIP LOCKED
)
UPDATE tiktok_outbox AS t
   SET status = 'pending', updated_at = $1, lease_owner = NULL, lease_until = NULL
  FROM expired
 WHERE t.id = expired.id AND t.status = 'inflight' AND t.lease_until < $1
"""

NEXT_DUE = "SELECT min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'"

INSERT = """
INSERT INTO tiktok_outbox
       (event_id, event, event_time, payload, pixel_code, event_source, test_event_code)
VALUES ($1, $2, coalesce($3::bigint, floor(extract(epoch FROM now()))::bigint), $4, $5, $6, $7)
ON CONFLICT DO NOTHING
RETURNING id
"""

FIND_KEY = """
SELECT id FROM tiktok_outbox
 WHERE coalesce(pixel_code, '') = $1 AND event = $2 AND event_id = $3
"""

# Each count reads its status's partial index (migrations 0001 and 0002), not the whole table.
COUNTS = """
SELECT (SELECT count(*) FROM tiktok_outbox WHERE status = 'pending'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'inflight'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'sent'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'dead')
"""

LAG = "SELECT min(created_at), min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'"

# Two halves, each served by its partial index, so a table of millions of sent rows is not read.
RECENT_CODES = """
SELECT last_code, count(*) FROM (
    SELECT last_code FROM tiktok_outbox
     WHERE status = 'pending' AND next_attempt_at >= 0
       AND last_code IS NOT NULL AND updated_at >= $1
    UNION ALL
    SELECT last_code FROM tiktok_outbox
     WHERE status = 'dead' AND updated_at >= $1
) AS failing
 GROUP BY last_code ORDER BY count(*) DESC LIMIT 20
"""

SET_STATE = """
INSERT INTO forwarder_state (key, value, updated_at) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
"""

DETAIL_COLUMNS = """
id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code, status,
attempts, next_attempt_at, last_code, last_error, request_id, created_at, updated_at, sent_at
"""

# Both take the batch of dead rows from a `picked` CTE (see _dead_batches). Data-modifying CTEs
# share one snapshot, so the replay record reads each row's failure from before the update.
REPLAY = """
recorded AS (
    INSERT INTO tiktok_outbox_replays
           (outbox_id, replayed_at, attempts, last_code, last_error, request_id, dead_at)
    SELECT t.id, {now}, t.attempts, t.last_code, t.last_error, t.request_id, t.updated_at
      FROM tiktok_outbox AS t JOIN picked USING (id)
),
changed AS (
    UPDATE tiktok_outbox AS t
       SET status = 'pending', attempts = 0, next_attempt_at = 0, updated_at = {now}
      FROM picked
     WHERE t.id = picked.id
    RETURNING t.id
)
"""

PURGE = """
changed AS (
    DELETE FROM tiktok_outbox AS t USING picked WHERE t.id = picked.id RETURNING t.id
)
"""

# Bounded: one call deletes at most $2 rows, oldest first, skipping rows another daemon is
# pruning, so the sweep never holds many row locks or writes a huge transaction.
PRUNE_SENT = """
DELETE FROM tiktok_outbox
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'sent' AND sent_at < $1
               ORDER BY sent_at
               LIMIT $2
                 FOR UPDATE SKIP LOCKED)
"""

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS forwarder_migrations (
    name       text PRIMARY KEY,
    applied_at double precision NOT NULL
)
"""

#: What a broken connection, an unreachable server or a failing statement raise.
ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # Raised by a connection caught mid-operation by a server shutdown ("cannot switch to
    # state ..."): the connection is unusable, like a closed one.
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def redact_url(url: str) -> str:
    """*url* with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        userinfo, at, host = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = "&".join(
            f"{key}={'***' if key == 'password' else quote(value, safe='')}"
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "postgresql://(unparsable URL)"


def _secrets(url: str) -> list[str]:
    """The password of *url*, as written and decoded, wherever it is given."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        found += [value for key, value in parse_qsl(parts.query) if key == "password"]
    except ValueError:
        pass
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _describe(error: BaseException) -> str:
    """A one-line account of *error*: its class, SQLSTATE and the server's message.

    Only the primary message is used, never the DETAIL field, which may quote row values.
    """
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error).strip() or type(error).__name__
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        return f"{text} (SQLSTATE {sqlstate})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return text


def _connection_broke(error: BaseException) -> bool:
    """Whether *error* means the connection (or the server) is gone, not the statement."""
    if isinstance(error, asyncpg.PostgresError):
        # Class 08: connection exception; 57: operator intervention (shutdown, restart).
        return str(getattr(error, "sqlstate", "") or "")[:2] in ("08", "57")
    return True


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3`` or ``DELETE 0``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def dead_where(where: DeadFilter, params: list[Any]) -> str:
    """The SQL condition selecting the dead rows *where* names, appending its values to *params*.

    The SQL is built from fixed fragments only; every value travels as a parameter.
    """

    def slot(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    clauses = ["status = 'dead'"]
    if where.codes:
        clauses.append(f"last_code = ANY({slot(list(where.codes))}::text[])")
    if where.events:
        clauses.append(f"event = ANY({slot(list(where.events))}::text[])")
    if where.since is not None:
        clauses.append(f"updated_at >= {slot(float(where.since))}")
    if where.ids:
        clauses.append(f"id = ANY({slot(list(where.ids))}::bigint[])")
    return " AND ".join(clauses)


class PostgresStore:
    """The outbox store on PostgreSQL, through a small asyncpg pool plus one LISTEN connection."""

    def __init__(
        self,
        url: str,
        pool: Any,
        *,
        poll_only: bool = False,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 30.0,
    ) -> None:
        self._url = url
        self._pool = pool
        self.poll_only = poll_only
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._secrets = _secrets(url)
        self._listener: Any = None
        self._listen_lock = asyncio.Lock()
        self._listen_checked = 0.0
        self._listened_before = False
        self._closed = False
        self._log = structlog.get_logger("forwarder.store")
        #: Set when the trigger's NOTIFY arrives (never with poll_only): a row was inserted.
        self.new_rows = asyncio.Event()

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        poll_only: bool = False,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 30.0,
    ) -> PostgresStore:
        """Connect a pool to *url*; the schema is made by migrate().

        *poll_only* (PgBouncer in transaction mode): no LISTEN, and no named prepared
        statements, which such a pooler cannot keep across transactions.
        """
        secrets = _secrets(url)
        try:
            # min_size 0: no background task retrying (and logging) while the server is down;
            # connections open on demand and stay open while in use.
            pool = await asyncpg.create_pool(
                dsn=url,
                min_size=0,
                max_size=pool_size,
                timeout=connect_timeout_s,
                command_timeout=command_timeout_s,
                statement_cache_size=0 if poll_only else 100,
                server_settings=_server_settings(url),
            )
            try:
                async with pool.acquire(timeout=connect_timeout_s):
                    pass  # fail now, with one clear line, if the server cannot be reached
            except BaseException:
                pool.terminate()
                raise
        except ValueError as error:  # asyncpg's ClientConfigurationError is one too
            detail = _redact(str(error), secrets)
            message = f"FORWARDER_DATABASE_URL is not a valid PostgreSQL URL: {detail}"
            raise ConfigError(message) from None
        except ERRORS as error:
            detail = _redact(_describe(error), secrets)
            message = f"cannot connect to PostgreSQL at {redact_url(url)}: {detail}"
            raise StoreError(message) from None
        return cls(
            url,
            pool,
            poll_only=poll_only,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
        )

    # -- connections --------------------------------------------------------------------------

    async def _fail(
        self, action: str, error: BaseException, kind: type[StoreError] = StoreError
    ) -> StoreError:
        """A StoreError saying what failed, with no password and no row contents in it."""
        if _connection_broke(error):
            # Every pooled connection may be as dead as this one (a server restart): replace
            # them all on their next use rather than failing once per connection.
            await self._pool.expire_connections()
        return kind(f"PostgreSQL failed to {action}: {_redact(_describe(error), self._secrets)}")

    @contextlib.asynccontextmanager
    async def _connection(
        self, action: str, kind: type[StoreError] = StoreError
    ) -> AsyncIterator[Any]:
        """A pooled connection; database and network errors become *kind* (a StoreError)."""
        try:
            async with self._pool.acquire(timeout=self._command_timeout_s) as conn:
                yield conn
        except ERRORS as error:
            raise await self._fail(action, error, kind) from None

    async def _execute(self, action: str, sql: str, *args: Any) -> int:
        async with self._connection(action) as conn:
            return _count(await conn.execute(sql, *args))

    async def _fetch(self, action: str, sql: str, *args: Any) -> list[Any]:
        async with self._connection(action) as conn:
            return list(await conn.fetch(sql, *args))

    async def _fetchrow(self, action: str, sql: str, *args: Any) -> Any:
        async with self._connection(action) as conn:
            return await conn.fetchrow(sql, *args)

    async def _listen(self) -> None:
        """Make sure a live connection LISTENs, (re)opening it if needed.

        LISTEN is in place before the claim that follows reads the table, so a row inserted in
        between is either claimed or announced: no wake-up is lost.
        """
        if self.poll_only or self._closed:
            return
        async with self._listen_lock:
            conn = self._listener
            if conn is not None and not conn.is_closed():
                if time.monotonic() - self._listen_checked < LISTEN_CHECK_S:
                    return
                try:  # an idle connection can die silently (a dropped NAT entry, a failover)
                    await conn.fetchval("SELECT 1", timeout=LISTEN_CHECK_TIMEOUT_S)
                    self._listen_checked = time.monotonic()
                    return
                except ERRORS:
                    conn.terminate()
            self._listener = None
            try:
                conn = await asyncpg.connect(
                    self._url,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._command_timeout_s,
                    server_settings=_server_settings(self._url),
                )
            except ERRORS as error:
                raise await self._fail("open the LISTEN connection", error) from None
            try:
                await conn.add_listener(CHANNEL, self._notified)
            except ERRORS as error:
                conn.terminate()
                raise await self._fail(f"LISTEN {CHANNEL}", error) from None
            conn.add_termination_listener(self._listener_lost)
            self._listener = conn
            self._listen_checked = time.monotonic()
            self._log.info("postgres_listening", channel=CHANNEL, reconnected=self._listened_before)
            self._listened_before = True

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.new_rows.set()

    def _listener_lost(self, conn: Any) -> None:
        if conn is not self._listener or self._closed:
            return
        self._listener = None
        self._log.warning("postgres_listen_lost", note="reconnecting on the next claim")
        # Wake the worker: its next claim reopens the connection, or reports why it cannot.
        self.new_rows.set()

    # -- the store interface ------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction under an advisory lock.

        The lock serialises daemons starting at once: the second waits for the first to commit,
        then finds nothing to do. A failure rolls everything back.
        """
        applied: list[str] = []
        migrations = migrate.load("postgresql")
        async with (
            self._connection("migrate the database", MigrationError) as conn,
            conn.transaction(),
        ):
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=MIGRATE_TIMEOUT_S
            )
            await conn.execute(MIGRATIONS_TABLE)
            done = {r[0] for r in await conn.fetch("SELECT name FROM forwarder_migrations")}
            for migration in migrations:
                if migration.name in done:
                    continue
                # No arguments: the simple query protocol runs a whole file of statements.
                await conn.execute(migration.sql, timeout=MIGRATE_TIMEOUT_S)
                await conn.execute(
                    "INSERT INTO forwarder_migrations (name, applied_at) VALUES ($1, $2)",
                    migration.name,
                    time.time(),
                )
                applied.append(migration.name)
        return applied

    async def claim(
        self, limit: int, owner: str, now: float, lease_until: float
    ) -> list[OutboxRow]:
        """Lease up to *limit* due rows no other daemon holds, in one statement."""
        await self._listen()
        rows = await self._fetch("claim rows", CLAIM, owner, lease_until, now, limit)
        return list(map(OutboxRow._make, rows))

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
        if payloads is None:
            return await self._execute(
                "mark rows sent", MARK_SENT, list(ids), owner, code, request_id, now
            )
        if len(payloads) != len(ids):
            raise ValueError("payloads must be parallel to ids")
        return await self._execute(
            "mark rows sent",
            MARK_SENT_SCRUBBED,
            list(ids),
            list(payloads),
            owner,
            code,
            request_id,
            now,
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
            RESCHEDULE,
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
            MARK_DEAD,
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
        return await self._execute("release leases", RELEASE, list(ids), owner, now)

    async def extend_lease(self, ids: Sequence[int], owner: str, lease_until: float) -> int:
        """Push the lease of rows still being worked on."""
        return await self._execute("extend leases", EXTEND_LEASE, list(ids), owner, lease_until)

    async def rescue_expired(self, now: float) -> int:
        """Return rows whose lease ran out to pending (never a row settled meanwhile)."""
        return await self._execute("rescue expired leases", RESCUE_EXPIRED, now)

    async def next_due_at(self) -> float | None:
        """The earliest next attempt among pending rows."""
        row = await self._fetchrow("read the next due time", NEXT_DUE)
        return None if row[0] is None else float(row[0])

    async def insert(self, event: NewEvent) -> tuple[int, bool]:
        """Insert one event unless its (pixel_code, event, event_id) exists."""
        async with self._connection("insert the event") as conn:
            row_id = await conn.fetchval(
                INSERT,
                event.event_id,
                event.event,
                event.event_time,
                event.payload,
                event.pixel_code,
                event.event_source,
                event.test_event_code,
            )
            if row_id is not None:
                return int(row_id), True
            found = await conn.fetchval(FIND_KEY, event.pixel_code, event.event, event.event_id)
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
            pending, inflight, sent, dead = await conn.fetchrow(COUNTS)
            oldest, next_due = await conn.fetchrow(LAG)
            codes = await conn.fetch(RECENT_CODES, now - RECENT_WINDOW_S)
            state_rows = await conn.fetch("SELECT key, value FROM forwarder_state")
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({PENDING: pending, INFLIGHT: inflight, SENT: sent, DEAD: dead})
        return Summary(
            counts=counts,
            oldest_pending_age_s=None if oldest is None else max(0.0, now - oldest),
            next_due_in_s=None if next_due is None else max(0.0, next_due - now),
            recent_codes={str(code): int(n) for code, n in codes},
            state={key: orjson.loads(value) for key, value in state_rows},
        )

    async def set_state(self, key: str, value: dict[str, Any], now: float) -> None:
        """Upsert one key of forwarder_state."""
        await self._execute("record state", SET_STATE, key, orjson.dumps(value).decode(), now)

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """One key of forwarder_state as recorded (by any daemon), or None."""
        row = await self._fetchrow(
            "read state", "SELECT value FROM forwarder_state WHERE key = $1", key
        )
        if row is None:
            return None
        value = orjson.loads(row[0])
        return value if isinstance(value, dict) else None

    async def dead_rows(self, where: DeadFilter) -> list[RowDetail]:
        """Dead rows matching *where*, oldest first."""
        params: list[Any] = []
        sql = f"SELECT {DETAIL_COLUMNS} FROM tiktok_outbox WHERE {dead_where(where, params)}"
        sql += " ORDER BY id"
        if where.limit is not None:
            params.append(where.limit)
            sql += f" LIMIT ${len(params)}"
        return [RowDetail(*row) for row in await self._fetch("list dead rows", sql, *params)]

    async def _dead_batches(
        self, action: str, where: DeadFilter, batch: int, change: str, now: float | None
    ) -> int:
        """Apply *change* to matching dead rows, at most *batch* rows per statement.

        Batches walk the ids upwards, so a row that dies again meanwhile is not taken twice.
        """
        done, after = 0, 0
        while where.limit is None or done < where.limit:
            size = batch if where.limit is None else min(batch, where.limit - done)
            params: list[Any] = []
            condition = dead_where(where, params)
            params += [after, size]
            picked = (
                f"picked AS (SELECT id FROM tiktok_outbox WHERE {condition}"
                f" AND id > ${len(params) - 1} ORDER BY id LIMIT ${len(params)} FOR UPDATE)"
            )
            if now is not None:
                params.append(now)
            body = change.format(now=f"${len(params)}::double precision")
            sql = f"WITH {picked}, {body} SELECT count(*), max(id) FROM changed"
            row = await self._fetchrow(action, sql, *params)
            found, last = int(row[0]), row[1]
            done += found
            if found < size or last is None:
                break
            after = int(last)
        return done

    async def replay_dead(self, where: DeadFilter, now: float, batch: int = 1000) -> int:
        """Return matching dead rows to pending in batches, recording their failure first."""
        replayed = await self._dead_batches("replay dead rows", where, batch, REPLAY, now)
        if replayed:
            await self._execute("wake the daemons", "SELECT pg_notify($1, '')", CHANNEL)
        return replayed

    async def purge_dead(self, where: DeadFilter, batch: int = 1000) -> int:
        """Delete matching dead rows in batches."""
        return await self._dead_batches("purge dead rows", where, batch, PURGE, None)

    async def find(self, event_id: str) -> list[tuple[RowDetail, list[ReplayRecord]]]:
        """Every row with this event_id, with the failures it had when it was replayed."""
        async with (
            self._connection("find the event") as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(
                f"SELECT {DETAIL_COLUMNS} FROM tiktok_outbox WHERE event_id = $1 ORDER BY id",
                event_id,
            )
            replays = await conn.fetch(
                "SELECT outbox_id, replayed_at, attempts, last_code, last_error, request_id,"
                " dead_at FROM tiktok_outbox_replays WHERE outbox_id = ANY($1::bigint[])"
                " ORDER BY id",
                [row[0] for row in rows],
            )
        by_row: dict[int, list[ReplayRecord]] = {}
        for replay in replays:
            by_row.setdefault(replay[0], []).append(ReplayRecord(*list(replay)[1:]))
        return [(RowDetail(*row), by_row.get(row[0], [])) for row in rows]

    async def prune_sent(self, before: float, limit: int) -> int:
        """Delete at most *limit* rows sent before *before*, oldest first."""
        return await self._execute("prune sent rows", PRUNE_SENT, before, limit)

    async def applied_migrations(self) -> list[str]:
        """Names of the applied migrations (none on a database never migrated)."""
        async with self._connection("read migrations") as conn:
            exists = await conn.fetchval("SELECT to_regclass('forwarder_migrations') IS NOT NULL")
            if not exists:
                return []
            rows = await conn.fetch("SELECT name FROM forwarder_migrations ORDER BY name")
        return [row[0] for row in rows]

    async def ping(self) -> None:
        """Check that the outbox table answers."""
        await self._fetch("reach the outbox table", "SELECT 1 FROM tiktok_outbox LIMIT 1")

    async def close(self) -> None:
        """Close the LISTEN connection and the pool (waiting briefly for calls in progress)."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                await asyncio.wait_for(listener.close(), LISTEN_CHECK_TIMEOUT_S)
            except ERRORS:
                listener.terminate()
        try:
            await asyncio.wait_for(self._pool.close(), LISTEN_CHECK_TIMEOUT_S)
        except ERRORS:
            self._pool.terminate()


def _server_settings(url: str) -> dict[str, str]:
    """Name the daemon in pg_stat_activity unless the URL names it already."""
    return {} if "application_name" in url else {"application_name": "forwarder"}


#: A password at least this long is starred wherever it shows; a shorter one would star
#: innocent text ("1" in "127.0.0.1") and so give itself away: such a detail is withheld.
REDACT_MIN_CHARS = 8


def _redact(detail: str, secrets: Sequence[str]) -> str:
    """*detail* (an error's text, never a URL) without the password in it."""
    for secret in secrets:
        if secret not in detail:
            continue
        if len(secret) < REDACT_MIN_CHARS:
            return "details withheld: they contain the password's text"
        detail = detail.replace(secret, "***")
    return detail
