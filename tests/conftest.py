"""Shared fixtures: a clean environment, real SQLite files migrated with the real migrations."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from forwarder.store.sqlite import SQLiteStore


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Keep the developer's settings and .env out of every test."""
    for name in list(os.environ):
        if name.startswith(("TIKTOK_", "FORWARDER_")) or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    # A command run in-process points structlog at pytest's captured stream; undo that.
    structlog.reset_defaults()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh SQLite file path."""
    return tmp_path / "outbox.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    """A store on a fresh SQLite file, migrated with the real migration files."""
    opened = await SQLiteStore.open(db_path)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def insert(db_path: Path, rows: list[dict[str, object]]) -> None:
    """Insert rows as an application would, with its own sqlite3 connection."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        with conn:
            for row in rows:
                names = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                conn.execute(
                    f"INSERT INTO tiktok_outbox ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                    list(row.values()),
                )
    finally:
        conn.close()


def rows_by_status(db_path: Path) -> dict[str, int]:
    """Count rows per status, read with a separate connection."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM tiktok_outbox GROUP BY status"))
    finally:
        conn.close()
