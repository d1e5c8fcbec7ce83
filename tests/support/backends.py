"""A migrated store of each kind with an application's view of its database, so one suite runs
on SQLite and PostgreSQL (the `backend` fixture in tests/conftest.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from forwarder.store.base import OutboxStore
from forwarder.store.postgres import PostgresStore
from forwarder.store.sqlite import SQLiteStore
from tests.support.rows import insert as sqlite_insert


class Backend:
    """A migrated store plus what an application or an operator does beside it."""

    name: str
    dialect: str
    integrity_error: type[Exception]
    store: OutboxStore
    applied: list[str]

    async def insert(self, rows: list[dict[str, object]]) -> None:
        """Insert rows with ON CONFLICT DO NOTHING, as an application would."""
        raise NotImplementedError

    async def execute(self, sql: str) -> None:
        """Run one statement with a separate connection; database errors propagate."""
        raise NotImplementedError

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one query with a separate connection."""
        raise NotImplementedError

    async def open_other(self) -> OutboxStore:
        """Another store (another daemon) on the same database."""
        raise NotImplementedError

    async def schema(self) -> set[str]:
        """Names of the tables and indexes in the database."""
        raise NotImplementedError

    async def statuses(self) -> dict[str, int]:
        """Count rows per status."""
        return dict(await self.query("SELECT status, count(*) FROM tiktok_outbox GROUP BY status"))


class SQLiteBackend(Backend):
    """The SQLite file, shared with the application through the sqlite3 module."""

    name = dialect = "sqlite"
    integrity_error = sqlite3.IntegrityError

    def __init__(self, path: Path) -> None:
        self.path = path

    async def insert(self, rows: list[dict[str, object]]) -> None:
        """Insert rows with the sqlite3 module in one transaction."""
        sqlite_insert(self.path, rows)

    async def execute(self, sql: str) -> None:
        """Run *sql* with the sqlite3 module."""
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            with conn:
                conn.execute(sql)
        finally:
            conn.close()

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run *sql* with the sqlite3 module."""
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    async def open_other(self) -> OutboxStore:
        """A second SQLiteStore on the same file."""
        return await SQLiteStore.open(self.path)

    async def schema(self) -> set[str]:
        """Tables and indexes from sqlite_master."""
        return {name for (name,) in await self.query("SELECT name FROM sqlite_master")}


class PostgresBackend(Backend):
    """A PostgreSQL database, shared with the application through asyncpg."""

    name = "postgres"
    dialect = "postgresql"
    integrity_error = asyncpg.IntegrityConstraintViolationError

    def __init__(self, url: str) -> None:
        self.url = url

    async def insert(self, rows: list[dict[str, object]]) -> None:
        """Insert rows with an asyncpg connection of its own, in one transaction."""
        conn = await asyncpg.connect(self.url)
        try:
            async with conn.transaction():
                for row in rows:
                    names = ", ".join(row)
                    marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
                    await conn.execute(
                        f"INSERT INTO tiktok_outbox ({names}) VALUES ({marks})"
                        " ON CONFLICT DO NOTHING",
                        *row.values(),
                    )
        finally:
            await conn.close()

    async def execute(self, sql: str) -> None:
        """Run *sql* with an asyncpg connection of its own."""
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run *sql* with an asyncpg connection of its own."""
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def open_other(self) -> OutboxStore:
        """A second PostgresStore (its own pool) on the same database."""
        return await PostgresStore.open(self.url)

    async def schema(self) -> set[str]:
        """Tables and indexes of the public schema."""
        rows = await self.query(
            "SELECT relname FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace"
            " WHERE nspname = 'public'"
        )
        return {name for (name,) in rows}
