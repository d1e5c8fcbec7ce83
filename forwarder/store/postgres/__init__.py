"""The outbox on a shared PostgreSQL database: any number of daemons on any hosts.

Claims take due rows with ``FOR UPDATE SKIP LOCKED`` in one statement, so two daemons never
lease the same row; every settle is guarded by ``status = 'inflight' AND lease_owner = owner``
as on SQLite. An insert trigger NOTIFYs ``tiktok_outbox``; the store LISTENs on a connection of
its own and sets ``new_rows``, and the worker polls as well, so a lost notification only costs a
poll interval. ``poll_only`` skips LISTEN (and the statement cache) for PgBouncer's transaction
pooling. Connections that a server restart breaks surface as StoreError from the failing call
(the worker retries with backoff) and are opened again by the next call; no state is lost,
because every row's state lives in the table.

The store is composed of the parts in this package: the pool, errors and redaction
(``connection``), LISTEN/NOTIFY (``listen``), the worker's operations (``outbox``), the
daemons' records and heartbeats (``daemons``) and the commands' (``admin``); every statement is
in ``queries.sql``.
"""

from __future__ import annotations

from forwarder.store.postgres.admin import PostgresAdmin
from forwarder.store.postgres.connection import redact_url
from forwarder.store.postgres.daemons import PostgresDaemons
from forwarder.store.postgres.outbox import PostgresOutbox

__all__ = ["PostgresStore", "redact_url"]


class PostgresStore(PostgresOutbox, PostgresDaemons, PostgresAdmin):
    """The outbox store on PostgreSQL, through a small asyncpg pool plus one LISTEN connection."""
