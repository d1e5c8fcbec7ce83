"""The outbox on a SQLite file, shared with the application (WAL mode, busy timeout).

The store is composed of the parts in this package: the file and its connections
(``connection``), the writer's thread (``writer``), row decoding (``rows``), the worker's
operations (``outbox``), the daemons' records and heartbeats (``daemons``) and the commands'
(``admin``); every statement is in ``queries.sql``.
"""

from __future__ import annotations

from forwarder.store.sqlite.admin import SQLiteAdmin
from forwarder.store.sqlite.connection import migrate_sync
from forwarder.store.sqlite.daemons import SQLiteDaemons

__all__ = ["SQLiteStore", "migrate_sync"]


class SQLiteStore(SQLiteDaemons, SQLiteAdmin):
    """The outbox store on one SQLite file: a writing connection and a reading one."""
