"""A database fault in-process: a claim on a locked SQLite file names its cause.

The daemon under locks, a read-only file, a full disk and a removed file is in
tests/e2e/test_db_faults.py.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from forwarder.errors import StoreError
from forwarder.store.sqlite import SQLiteStore
from tests.support.rows import insert, purchase


async def test_claim_failure_names_its_cause(db_path: Path) -> None:
    """A claim failing on a locked database says so, as every other store failure does."""
    store = await SQLiteStore.open(db_path, busy_timeout_ms=50)
    await store.migrate()
    insert(db_path, [purchase(0)])  # a claim with nothing due reads only: it needs no lock
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        now = time.time()
        with pytest.raises(StoreError) as failure:
            await store.claim(10, "daemon", now, now + 60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await store.close()
    assert "database is locked" in str(failure.value)
