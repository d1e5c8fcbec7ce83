"""The named-query files on real databases: every statement compiles against the schema."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import asyncpg

from forwarder.store import queries
from forwarder.store.postgres import PostgresStore
from forwarder.store.sqlite import migrate_sync


def test_every_sqlite_statement_compiles_on_a_migrated_file(tmp_path: Path) -> None:
    """Each SQLite statement compiles against the migrated schema (EXPLAIN runs none)."""
    path = tmp_path / "outbox.db"
    migrate_sync(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for name, sql in queries.load("forwarder.store.sqlite").items():
            params = dict.fromkeys(re.findall(r":([a-z_]+)", sql))
            conn.execute(f"EXPLAIN {sql}", params).fetchall()
            assert not conn.in_transaction, name
    finally:
        conn.close()


async def test_every_postgres_statement_prepares_on_a_migrated_database(pg_url: str) -> None:
    """Each PostgreSQL statement is accepted by the server against the migrated schema."""
    store = await PostgresStore.open(pg_url)
    try:
        await store.migrate()
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        for sql in queries.load("forwarder.store.postgres").values():
            await conn.prepare(sql)
    finally:
        await conn.close()
