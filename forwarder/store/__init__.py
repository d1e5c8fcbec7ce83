"""Open the outbox store a database URL names.

The interfaces and values live in ``base`` (re-exported here); each backend is a package of its
own (``sqlite``, ``postgres``), loaded only when a URL names it, with its SQL in a named-query
file read by ``queries``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from forwarder.errors import ConfigError
from forwarder.store.base import (
    AdminStore,
    Daemon,
    Dead,
    DeadFilter,
    NewEvent,
    OutboxStore,
    ReplayRecord,
    Retry,
    RowDetail,
    Silent,
    Store,
    Summary,
    WorkerStore,
)

__all__ = [
    "AdminStore",
    "Daemon",
    "Dead",
    "DeadFilter",
    "NewEvent",
    "OutboxStore",
    "ReplayRecord",
    "Retry",
    "RowDetail",
    "Silent",
    "Store",
    "Summary",
    "WorkerStore",
    "open_store",
    "redact_url",
    "sqlite_path",
]


def sqlite_path(url: str) -> Path:
    """Return the file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(
            f"FORWARDER_DATABASE_URL {url!r} is not sqlite:///relative.db, "
            "sqlite:////absolute/path.db or postgresql://user:password@host:port/db"
        )
    return Path(url[len(prefix) :])


async def open_store(
    url: str, *, busy_timeout_ms: int = 5000, poll_only: bool = False, create: bool = False
) -> Store:
    """Connect to the database *url* names; the backend is chosen by the scheme.

    *busy_timeout_ms* applies to SQLite, and so does *create* (make a missing file: only
    `migrate` and `run` do); *poll_only* to PostgreSQL (no LISTEN, for PgBouncer's transaction
    pooling).
    """
    if url.startswith("sqlite:"):
        # Imported lazily so a deployment loads only its own database driver.
        from forwarder.store.sqlite import SQLiteStore  # noqa: PLC0415

        return await SQLiteStore.open(
            sqlite_path(url), busy_timeout_ms=busy_timeout_ms, create=create
        )
    if url.startswith(("postgresql://", "postgres://")):
        from forwarder.store.postgres import PostgresStore  # noqa: PLC0415

        return await PostgresStore.open(url, poll_only=poll_only)
    raise ConfigError(
        "FORWARDER_DATABASE_URL must start with sqlite:/// or postgresql://, "
        f"got scheme {url.split(':', 1)[0]!r}"
    )


def redact_url(url: str) -> str:
    """*url* as safe to print: a PostgreSQL password becomes ``***``; a SQLite URL also names
    the file it resolves to, since a relative one depends on the working directory."""
    if url.startswith(("postgresql://", "postgres://")):
        from forwarder.store.postgres import redact_url as redact  # noqa: PLC0415

        return redact(url)
    if url.startswith("sqlite:"):
        with contextlib.suppress(ConfigError):
            return f"{url} ({sqlite_path(url).resolve()})"
    return url
