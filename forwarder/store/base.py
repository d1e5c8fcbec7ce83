"""The outbox store's interfaces, whatever the database: what the worker needs (WorkerStore),
what the commands need (AdminStore), and the values they exchange."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from forwarder.events import OutboxRow


@dataclass(frozen=True, slots=True)
class Retry:
    """Put one claimed row back to pending, due again at *next_attempt_at* (Unix seconds)."""

    row_id: int
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Dead:
    """Dead-letter one claimed row with a stored code and a reason a person can act on."""

    row_id: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Daemon:
    """One daemon run as it records itself: its lease owner and where its process runs."""

    owner: str  # the lease_owner of the rows it claims
    host: str
    pid: int
    boot_id: str | None = None  # Linux's boot id: pids compare only within one boot...
    pid_ns: str | None = None  # ...and one PID namespace; None where unknown


@dataclass(frozen=True, slots=True)
class Silent:
    """A daemon whose heartbeat stopped: its owner, and how long ago it last beat."""

    owner: str
    silent_s: float


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event to insert, as an application would (used by `forwarder enqueue`)."""

    event_id: str
    event: str
    event_time: int | None = None
    payload: str = "{}"
    pixel_code: str = ""
    event_source: str = "web"
    test_event_code: str = ""
    payload_format: str | None = None  # NULL: TikTok's shape; "meta_capi": a Meta server event


@dataclass(frozen=True, slots=True)
class Summary:
    """What `forwarder status` shows."""

    counts: dict[str, int]
    oldest_pending_age_s: float | None
    next_due_in_s: float | None
    recent_codes: dict[str, int]
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which dead rows an operator command applies to; empty fields match everything."""

    codes: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    since: float | None = None  # dead at or after this Unix time
    ids: tuple[int, ...] = ()
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class RowDetail:
    """One outbox row as an operator sees it."""

    id: int
    event_id: str
    event: str
    event_time: int | None
    payload: str
    pixel_code: str | None
    event_source: str
    test_event_code: str | None
    status: str
    attempts: int
    next_attempt_at: float
    last_code: str | None
    last_error: str | None
    request_id: str | None
    created_at: float
    updated_at: float | None
    sent_at: float | None
    payload_format: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """The failure a dead letter had when an operator replayed it."""

    replayed_at: float
    attempts: int
    last_code: str | None
    last_error: str | None
    request_id: str | None
    dead_at: float | None


class WorkerStore(Protocol):
    """The outbox table as the daemon's worker and HTTP server use it.

    Every settling method takes the lease *owner* and touches only rows still ``inflight``
    under that owner, so a row whose lease expired and was claimed again is never overwritten.
    Each call is one transaction.

    ``new_rows`` is set by a store that hears of inserts (PostgreSQL's LISTEN/NOTIFY); the
    worker clears it before it claims and wakes up when it is set. A store that cannot hear of
    inserts (SQLite) never sets it, and the worker polls.
    """

    new_rows: asyncio.Event

    async def claim(
        self, limit: int, owner: str, now: float, lease_until: float
    ) -> list[OutboxRow]:
        """Lease up to *limit* due pending rows, oldest due first."""
        ...

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
        """Mark rows sent (TikTok accepted them); count an attempt; return how many changed.

        *payloads*, parallel to *ids*, replace the stored payloads (raw identifiers scrubbed);
        *notes*, by id, become last_error (what was sent with a warning), else it is NULL.
        The same call made again (same *now*, *request_id* and *code*: a retried settle) counts
        the rows an earlier try already marked, without counting their attempt twice.
        """
        ...

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
        """Return rows to pending with their next attempt times and the failure on record."""
        ...

    async def mark_dead(
        self,
        dead: Sequence[Dead],
        owner: str,
        request_id: str | None,
        count_attempt: bool,
        now: float,
    ) -> int:
        """Dead-letter rows with their codes and reasons."""
        ...

    async def release(self, ids: Sequence[int], owner: str, now: float) -> int:
        """Return leased rows to pending untouched (shutdown): no attempt, no delay."""
        ...

    async def extend_lease(self, ids: Sequence[int], owner: str, lease_until: float) -> int:
        """Push the lease of rows still being worked on."""
        ...

    async def rescue_expired(self, now: float) -> int:
        """Return rows whose lease ran out (their daemon died) to pending."""
        ...

    async def prune_sent(self, before: float, limit: int) -> int:
        """Delete at most *limit* rows sent before *before*; return how many."""
        ...

    # The daemons' records and heartbeats. On PostgreSQL their times come from the server's
    # clock (daemons on hosts whose clocks disagree judge each other's heartbeats alike); on
    # SQLite, whose daemons share a host, from *now*.

    async def register_daemon(self, daemon: Daemon, now: float) -> None:
        """Record *daemon* as running, its heartbeat now (again, if it was found dead)."""
        ...

    async def heartbeat(self, owner: str, now: float) -> bool:
        """Record that *owner* is alive; False if its record is gone or marked stopped (another
        daemon found it dead while it stalled): it must register again."""
        ...

    async def daemon_stopped(self, owner: str, now: float) -> None:
        """Record that *owner* stopped cleanly, holding no lease."""
        ...

    async def silent_daemons(self, me: str, now: float, silent_s: float) -> list[Silent]:
        """The daemons other than *me*, not known to have stopped, whose last heartbeat is
        more than *silent_s* seconds old."""
        ...

    async def daemons_here(self, me: Daemon) -> list[Daemon]:
        """The daemons other than *me*, not known to have stopped, recorded with *me*'s boot
        id and PID namespace (whose pids can be checked here); none if those are unknown."""
        ...

    async def rescue_owner(
        self, owner: str, rescuer: str, now: float, silent_s: float | None = None
    ) -> int:
        """Return the rows *owner* leased to pending and mark it stopped by *rescuer*; with
        *silent_s*, only while its last heartbeat is more than that old. Never a row being
        settled at that moment (PostgreSQL). Return how many rows."""
        ...

    async def prune_daemons(self, now: float, silent_s: float) -> int:
        """Delete the records of daemons silent for more than *silent_s*; return how many."""
        ...

    async def set_state(self, key: str, value: dict[str, Any], now: float) -> None:
        """Record a piece of daemon state other processes read."""
        ...

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """Read one key of the daemon state (None when absent)."""
        ...

    async def summary(self, now: float) -> Summary:
        """Counts by status, lag and recent failure codes (the daemon's metrics read them)."""
        ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


class AdminStore(Protocol):
    """The outbox table as the commands (and the daemon's start-up) use it."""

    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied; return their names."""
        ...

    async def applied_migrations(self) -> list[str]:
        """Names of the migrations applied to this database."""
        ...

    async def insert(self, event: NewEvent) -> tuple[int, bool]:
        """Insert one event; return its row id and whether it was new (False: a duplicate)."""
        ...

    async def summary(self, now: float) -> Summary:
        """Counts by status, lag and recent failure codes."""
        ...

    async def dead_rows(self, where: DeadFilter) -> list[RowDetail]:
        """Dead rows matching *where*, oldest first."""
        ...

    async def replay_dead(self, where: DeadFilter, now: float, batch: int = 1000) -> int:
        """Return matching dead rows to pending in batches, recording their failure first."""
        ...

    async def purge_dead(self, where: DeadFilter, batch: int = 1000) -> int:
        """Delete matching dead rows in batches."""
        ...

    async def find(self, event_id: str) -> list[tuple[RowDetail, list[ReplayRecord]]]:
        """Every row with this event_id (any pixel or event name), with its replays."""
        ...

    async def next_due_at(self) -> float | None:
        """The earliest next_attempt_at among pending rows, or None when none is pending."""
        ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


class Store(WorkerStore, AdminStore, Protocol):
    """Both: what open_store returns."""


#: The former name of Store, kept while other code still imports it.
OutboxStore = Store
