"""SIGTERM while the database blocks: the daemon exits within its shutdown deadline, loses nothing.

An application holds SQLite's write lock, or an operator locks PostgreSQL's outbox, while
requests are in flight; then SIGTERM. The daemon must be gone well inside systemd's
TimeoutStopSec, leaving what it could not write to the lease; once the lock is lifted, another
daemon delivers every event.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from forwarder.app import SHUTDOWN_CLOSE_S
from forwarder.fake_tiktok import FakeTikTok
from forwarder.worker import SHUTDOWN_FINISH_S
from tests.support import pg_daemons
from tests.support.daemon import daemon_env, events, migrated, spawn
from tests.support.rows import insert, purchase, statuses
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.support.pg import PgServer

EVENTS = 2000
GRACE_S = 2.0
# The daemon's own deadline, and two seconds for the interpreter to exit on a busy machine
# (well inside the 30 s systemd gives it).
BOUND_S = GRACE_S + SHUTDOWN_FINISH_S + SHUTDOWN_CLOSE_S + 2.0


@pytest.fixture
def fake_options() -> dict[str, object]:
    """The fake TikTok slow enough that requests are in flight when the lock comes."""
    return {"latency_s": 0.5}


async def terminate(daemon: Any) -> tuple[int, float]:
    """SIGTERM *daemon* (a Popen or an asyncio process); return its exit code and how long
    it took to exit. Killed, failing the test, if it outlives the unit's 30 s."""
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        if isinstance(daemon, asyncio.subprocess.Process):
            code = await asyncio.wait_for(daemon.wait(), 30)
        else:
            code = await asyncio.to_thread(daemon.wait, 30)
    except BaseException:
        daemon.kill()
        raise
    return int(code), time.monotonic() - started


def left_to_lease(lines: list[dict[str, object]]) -> int:
    """Rows the daemon said it left to the lease at shutdown."""
    return sum(int(str(line.get("rows", 0))) for line in lines)


async def test_sqlite_write_lock_does_not_hold_up_sigterm(
    db_path: Path, fake: FakeTikTok, tmp_path: Path
) -> None:
    """The application holds the write lock: SIGTERM still ends the daemon within its deadline."""
    env = daemon_env(
        db_path,
        fake,
        FORWARDER_SHUTDOWN_GRACE=f"{GRACE_S}s",
        FORWARDER_BATCH_MAX_EVENTS="100",
        FORWARDER_LEASE="3s",
    )
    await migrated(db_path, env)
    insert(db_path, [purchase(i) for i in range(EVENTS)])
    log = tmp_path / "daemon.log"
    daemon = spawn(env, log)
    locked, unlock = threading.Event(), threading.Event()

    def application() -> None:
        conn = sqlite3.connect(db_path, timeout=5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            unlock.wait(120)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    holder = threading.Thread(target=application)
    try:
        await wait_until(lambda: statuses(db_path).get("sent", 0) > 0, 30, "delivery under way")
        holder.start()
        await asyncio.to_thread(locked.wait, 10)
        # The daemon meets the lock: an answer waits to be written, or a claim fails.
        blocked = ("settle_retry", "store_failed")
        await wait_until(lambda: any(events(log, e) for e in blocked), 30, "the daemon blocked")
        code, took = await terminate(daemon)
    finally:
        unlock.set()
        if daemon.poll() is None:
            daemon.kill()
        holder.join(10)
    assert code == 0, log.read_text()[-3000:]
    assert took < BOUND_S, f"exit took {took:.1f} s"
    left = events(log, "shutdown_leases_left")
    assert events(log, "worker_stopped")

    # The lock is gone: another daemon takes over once the leases lapse, and delivers all.
    second = spawn(env, tmp_path / "second.log")
    try:
        await wait_until(lambda: statuses(db_path) == {"sent": EVENTS}, 60, "every event sent")
    finally:
        code, _ = await terminate(second)
    assert code == 0
    stats = fake.stats()
    assert stats["unique_accepted"] == EVENTS
    # A resend happens only for rows whose answer came but could not be written in time.
    assert stats["duplicates"] <= left_to_lease(left)


async def test_postgres_table_lock_does_not_hold_up_sigterm(
    pg_url: str, pg_server: PgServer, fake: FakeTikTok, tmp_path: Path
) -> None:
    """An operator locks the outbox table: SIGTERM still ends the daemon within its deadline."""
    env = pg_daemons.daemon_env(
        pg_url,
        fake,
        FORWARDER_SHUTDOWN_GRACE=f"{GRACE_S}s",
        FORWARDER_BATCH_MAX_EVENTS="100",
        FORWARDER_LEASE="3s",
        FORWARDER_REQUEST_TIMEOUT="1s",
    )
    async with pg_daemons.daemons(env, tmp_path, n=1) as [daemon]:
        await pg_server.psql(pg_url, pg_daemons.insert_script(0, EVENTS))

        async def some_sent() -> bool:
            counts = await pg_daemons.statuses(pg_url)
            return counts is not None and counts.get("sent", 0) > 0

        await wait_until(some_sent, 30, "delivery under way")
        operator = await asyncpg.connect(pg_url)
        try:
            lock = operator.transaction()
            await lock.start()
            await operator.execute("LOCK TABLE tiktok_outbox IN ACCESS EXCLUSIVE MODE")

            async def daemon_waits() -> bool:
                waiting = await operator.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'forwarder' AND wait_event_type = 'Lock'"
                )
                return bool(waiting)

            await wait_until(daemon_waits, 30, "the daemon waiting for the lock")
            code, took = await terminate(daemon.process)
            await lock.rollback()
        finally:
            await operator.close()
        assert code == 0, daemon.log()[-3000:]
        assert took < BOUND_S, f"exit took {took:.1f} s"
        left = daemon.events("shutdown_leases_left")

    (tmp_path / "second").mkdir()
    async with pg_daemons.daemons(env, tmp_path / "second", n=1) as [second]:
        await wait_until(lambda: pg_daemons.all_sent(pg_url, EVENTS), 60, "every event sent")
        assert await pg_daemons.stop(second) == 0
    stats = fake.stats()
    assert stats["unique_accepted"] == EVENTS
    assert stats["duplicates"] <= left_to_lease(left)
