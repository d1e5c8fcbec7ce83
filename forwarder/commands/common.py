"""What every command shares: exit codes, the one way to read settings and open the store, and
how rows and times are printed."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from forwarder.errors import ConfigError, StoreError
from forwarder.printable import printable
from forwarder.settings import Settings, load_settings, store_options
from forwarder.store import open_store, redact_url
from forwarder.store.base import OutboxStore, RowDetail

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_PAUSED, EXIT_REFUSED = 0, 1, 2, 3, 4

_T = TypeVar("_T")


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings for a command: ``--env-file`` (default ./.env, if there) and
    ``--database-url`` over the environment."""
    env_file: str | None = args.env_file
    if env_file is None:
        env_file = ".env"
    elif not Path(env_file).exists():
        raise ConfigError(f"--env-file {env_file}: no such file")
    return load_settings(env_file, database_url=args.database_url)


def with_store(
    settings: Settings,
    work: Callable[[OutboxStore], Awaitable[_T]],
    *,
    create: bool = False,
    migrated: bool = True,
) -> _T:
    """Open the store, run *work* on it, close it: the one way every command reaches the outbox.

    Only *create* makes a missing SQLite file (``migrate``); with *migrated*, a database the
    daemon's schema is not in yet is refused with one line instead of a missing-table error.
    """

    async def go() -> _T:
        store = await open_store(settings.database_url, create=create, **store_options(settings))
        try:
            if migrated and not await store.applied_migrations():
                raise StoreError(
                    f"the database {redact_url(settings.database_url)} has no outbox yet: "
                    "run `forwarder migrate` (or point --database-url at the daemon's database)"
                )
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def when(moment: float | None) -> str:
    """A Unix time as a UTC date and time, or "-"."""
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def row_json(row: RowDetail) -> dict[str, Any]:
    """An outbox row as the commands print it with --json."""
    return {
        "id": row.id,
        "event_id": row.event_id,
        "event": row.event,
        "pixel_code": row.pixel_code,
        "status": row.status,
        "attempts": row.attempts,
        "last_code": row.last_code,
        "reason": row.last_error,
        "request_id": row.request_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "sent_at": row.sent_at,
    }


def table(rows: list[list[str]]) -> str:
    """Rows of cells as aligned columns, every cell escaped (printable)."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cut(text: str, most: int) -> str:
    """*text* shortened to *most* characters, an ellipsis marking the cut."""
    return text if len(text) <= most else text[: most - 1] + "…"
