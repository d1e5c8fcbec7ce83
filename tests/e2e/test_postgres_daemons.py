"""End to end on PostgreSQL: three `forwarder run` processes share one outbox database.

The application is psql, inserting 10,000 realistic events in transactions of 500 while the
daemons run; TikTok is the in-process fake. Delivery is at-least-once: exactly-once is asserted
only when no daemon dies; after a kill -9 or a server restart, every event must arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import pytest

from forwarder.fake_tiktok import FakeTikTok

from .helpers import purchase, wait_until

if TYPE_CHECKING:
    from .pg import PgServer

pytest_plugins = ["tests.pg"]

TOKEN = "pg-e2e-token"
PIXEL = "D34FV3JC77U1PDQ72P1G"
EVENTS = 10_000
CHUNK = 500  # rows per psql transaction
DAEMONS = 3


@pytest.fixture
async def fake() -> AsyncIterator[FakeTikTok]:
    """The fake TikTok on a free loopback port."""
    async with FakeTikTok(token=TOKEN) as server:
        yield server


@dataclass
class Daemon:
    """One `forwarder run` process and the file its logs go to."""

    process: asyncio.subprocess.Process
    log_path: Path

    def log(self) -> str:
        """Everything it has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its JSON log lines whose event is *name*."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                record = orjson.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found


def daemon_env(url: str, fake: FakeTikTok, **extra: str) -> dict[str, str]:
    """The environment of a daemon delivering the outbox at *url* to *fake*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    env.update(
        TIKTOK_ACCESS_TOKEN=TOKEN,
        TIKTOK_PIXEL_CODE=PIXEL,
        TIKTOK_API_URL=fake.url,
        FORWARDER_DATABASE_URL=url,
        FORWARDER_HTTP_ADDR="127.0.0.1:0",
        FORWARDER_LOG_FORMAT="json",
        FORWARDER_BACKOFF_INITIAL="50ms",
        FORWARDER_BACKOFF_MAX="200ms",
        FORWARDER_THROTTLE_MAX_PAUSE="300ms",
        FORWARDER_PAUSE_PROBE_MAX="300ms",
        FORWARDER_POLL_INTERVAL="200ms",  # the default: NOTIFY, not polling, wakes the daemons
        FORWARDER_PHONE_REGION="US",
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def daemons(
    env: dict[str, str], tmp_path: Path, n: int = DAEMONS
) -> AsyncIterator[list[Daemon]]:
    """Start *n* daemons at once (they migrate concurrently); make sure they are gone after."""
    started = []
    for i in range(n):
        log_path = tmp_path / f"daemon-{i}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "forwarder",
                "run",
                env=env,
                stdout=log,
                stderr=log,
            )
        started.append(Daemon(process, log_path))
    try:
        await wait_until(
            lambda: all(d.events("postgres_listening") for d in started),
            60,
            "every daemon listening",
        )
        yield started
    finally:
        for daemon in started:
            if daemon.process.returncode is None:
                daemon.process.kill()
                await daemon.process.wait()


async def stop(daemon: Daemon, timeout: float = 30) -> int:
    """SIGTERM *daemon* and return its exit code."""
    daemon.process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(daemon.process.wait(), timeout)


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def insert_script(first: int, last: int) -> str:
    """SQL inserting events *first*..*last*-1 in transactions of CHUNK rows, as an app would."""
    lines = []
    for start in range(first, last, CHUNK):
        values = ",\n".join(
            f"({_literal(row['event_id'])}, {_literal(row['event'])}, {_literal(row['payload'])})"
            for row in (purchase(i) for i in range(start, min(start + CHUNK, last)))
        )
        lines.append(
            "BEGIN;\nINSERT INTO tiktok_outbox (event_id, event, payload) VALUES\n"
            f"{values}\nON CONFLICT DO NOTHING;\nCOMMIT;"
        )
    return "\n".join(lines)


async def statuses(url: str) -> dict[str, int] | None:
    """Rows per status, or None while the server does not answer (it is restarting)."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    try:
        rows = await conn.fetch("SELECT status, count(*) FROM tiktok_outbox GROUP BY status")
    except (asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    finally:
        await conn.close()
    return {status: count for status, count in rows}


async def all_sent(url: str, n: int = EVENTS) -> bool:
    """Whether exactly *n* rows exist and every one is sent."""
    return await statuses(url) == {"sent": n}


def expected_ids(n: int = EVENTS) -> set[str]:
    """The event_ids of events 0..n-1."""
    return {f"order-{i}" for i in range(n)}


async def test_three_daemons_deliver_each_event_exactly_once(
    pg_url: str, pg_server: PgServer, fake: FakeTikTok, tmp_path: Path
) -> None:
    """Three daemons, 10k events inserted by psql while they run: all sent, each exactly once."""
    env = daemon_env(pg_url, fake, FORWARDER_REQUEST_TIMEOUT="20s", FORWARDER_LEASE="60s")
    async with daemons(env, tmp_path) as running:
        await pg_server.psql(pg_url, insert_script(0, EVENTS))
        await wait_until(lambda: all_sent(pg_url), 90, "all 10,000 events sent")
        codes = [await stop(daemon) for daemon in running]
    assert codes == [0] * DAEMONS
    ids = fake.accepted_ids()
    assert len(ids) == len(set(ids)) == EVENTS, f"{len(ids) - len(set(ids))} events sent twice"
    assert {event_id for _, _, event_id in ids} == expected_ids()
    delivered = [d.events("worker_stopped")[0]["delivered"] for d in running]
    assert sum(delivered) == EVENTS
    assert all(delivered), f"a daemon got no work: {delivered}"
    # Everyone migrated at once; the advisory lock let exactly one apply the migrations.
    assert sum(1 for d in running if d.events("migrated")) == 1


async def test_kill_9_one_daemon_loses_nothing(
    pg_url: str, pg_server: PgServer, fake: FakeTikTok, tmp_path: Path
) -> None:
    """A daemon killed with SIGKILL mid-request: the others rescue its leases, nothing is lost."""
    fake.latency_s = 0.2
    env = daemon_env(
        pg_url,
        fake,
        FORWARDER_BATCH_MAX_EVENTS="100",
        FORWARDER_REQUEST_TIMEOUT="1500ms",
        FORWARDER_LEASE="3s",
    )
    async with daemons(env, tmp_path) as running:
        victim, survivors = running[0], running[1:]
        inserting = asyncio.create_task(pg_server.psql(pg_url, insert_script(0, EVENTS)))

        async def victim_holds_rows() -> bool:
            conn = await asyncpg.connect(pg_url)
            try:
                held = await conn.fetchval(
                    "SELECT count(*) FROM tiktok_outbox WHERE status = 'inflight'"
                    " AND split_part(lease_owner, ':', 2) = $1",
                    str(victim.process.pid),
                )
            finally:
                await conn.close()
            return bool(held)

        await wait_until(victim_holds_rows, 60, "the victim leasing rows")
        victim.process.kill()
        await victim.process.wait()
        await inserting
        await wait_until(lambda: all_sent(pg_url), 90, "all 10,000 events sent")
        codes = [await stop(daemon) for daemon in survivors]
    assert victim.process.returncode == -signal.SIGKILL
    assert codes == [0, 0]
    assert {event_id for _, _, event_id in fake.accepted_ids()} == expected_ids()
    assert any(d.events("leases_rescued") for d in survivors)


async def test_postgres_restart_mid_run(
    pg_url: str, pg_server: PgServer, fake: FakeTikTok, tmp_path: Path
) -> None:
    """pg_ctl restart -m fast mid-run: the daemons reconnect, LISTEN again and deliver all."""
    if not pg_server.can_restart:
        pytest.skip("FORWARDER_TEST_POSTGRES_URL names a server the tests do not own")
    fake.latency_s = 0.1
    env = daemon_env(
        pg_url,
        fake,
        FORWARDER_BATCH_MAX_EVENTS="100",
        FORWARDER_REQUEST_TIMEOUT="2s",
        FORWARDER_LEASE="4s",
    )
    half = EVENTS // 2
    async with daemons(env, tmp_path) as running:
        await pg_server.psql(pg_url, insert_script(0, half))

        async def some_sent() -> bool:
            counts = await statuses(pg_url)
            return counts is not None and counts.get("sent", 0) >= 500

        await wait_until(some_sent, 60, "delivery under way")
        await pg_server.restart()
        await pg_server.psql(pg_url, insert_script(half, EVENTS))
        await wait_until(lambda: all_sent(pg_url), 90, "all 10,000 events sent")
        assert all(d.process.returncode is None for d in running), "a daemon died"
        # Every daemon lost its LISTEN connection and opened a new one.
        assert all(
            any(r.get("reconnected") for r in d.events("postgres_listening")) for d in running
        )
        codes = [await stop(daemon) for daemon in running]
    assert codes == [0] * DAEMONS
    assert {event_id for _, _, event_id in fake.accepted_ids()} == expected_ids()
