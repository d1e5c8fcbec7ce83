"""End to end on PostgreSQL: three `forwarder run` processes share one outbox database.

The application is psql, inserting 10,000 realistic events in transactions of 500 while the
daemons run; TikTok is the in-process fake. Delivery is at-least-once: exactly-once is asserted
only when no daemon dies; after a kill -9 or a server restart, every event must arrive.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from forwarder.fake_tiktok import FakeTikTok
from tests.support.pg_daemons import all_sent, daemon_env, daemons, insert_script, statuses, stop
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.support.pg import PgServer

EVENTS = 10_000
DAEMONS = 3


def expected_ids(n: int = EVENTS) -> set[str]:
    """The event_ids of events 0..n-1."""
    return {f"order-{i}" for i in range(n)}


async def test_three_daemons_deliver_each_event_exactly_once(
    pg_url: str, pg_server: PgServer, fake: FakeTikTok, tmp_path: Path
) -> None:
    """Three daemons, 10k events inserted by psql while they run: all sent, each exactly once."""
    env = daemon_env(pg_url, fake, FORWARDER_REQUEST_TIMEOUT="20s", FORWARDER_LEASE="60s")
    async with daemons(env, tmp_path, DAEMONS) as running:
        await pg_server.psql(pg_url, insert_script(0, EVENTS))
        await wait_until(lambda: all_sent(pg_url, EVENTS), 90, "all 10,000 events sent")
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
    """A daemon killed with SIGKILL mid-request: without a restart, the other two send the rows
    it held within 10 s (its heartbeat stopped; its 60 s lease has not run out), nothing is
    lost, and TikTok gets no more duplicates than rows were in flight at the kill."""
    fake.latency_s = 0.2
    env = daemon_env(
        pg_url,
        fake,
        FORWARDER_BATCH_MAX_EVENTS="100",
        FORWARDER_REQUEST_TIMEOUT="1500ms",
        FORWARDER_LEASE="60s",
    )
    async with daemons(env, tmp_path, DAEMONS) as running:
        victim, survivors = running[0], running[1:]
        inserting = asyncio.create_task(pg_server.psql(pg_url, insert_script(0, EVENTS)))

        async def held_by_victim() -> list[int]:
            conn = await asyncpg.connect(pg_url)
            try:
                rows = await conn.fetch(
                    "SELECT id FROM tiktok_outbox WHERE status = 'inflight'"
                    " AND split_part(lease_owner, ':', 2) = $1",
                    str(victim.process.pid),
                )
            finally:
                await conn.close()
            return [row["id"] for row in rows]

        async def victim_holds_rows() -> bool:
            return bool(await held_by_victim())

        await wait_until(victim_holds_rows, 60, "the victim leasing rows")
        victim.process.kill()
        await victim.process.wait()
        killed = time.monotonic()
        held = await held_by_victim()

        async def held_rows_sent() -> bool:
            conn = await asyncpg.connect(pg_url)
            try:
                sent = await conn.fetchval(
                    "SELECT count(*) FROM tiktok_outbox WHERE status = 'sent' AND id = ANY($1)",
                    held,
                )
            finally:
                await conn.close()
            return bool(sent == len(held))

        await wait_until(held_rows_sent, 10, f"the {len(held)} rows the victim held sent")
        took = time.monotonic() - killed
        await inserting
        await wait_until(lambda: all_sent(pg_url, EVENTS), 90, "all 10,000 events sent")
        codes = [await stop(daemon) for daemon in survivors]
    assert victim.process.returncode == -signal.SIGKILL
    assert codes == [0, 0]
    print(f"kill -9 of one of three: {len(held)} rows sent {took:.2f} s after", file=sys.stderr)
    accepted = collections.Counter(fake.accepted_ids())
    assert {event_id for _, _, event_id in accepted} == expected_ids()
    assert sum(count - 1 for count in accepted.values()) <= len(held)
    rescued = [line for d in survivors for line in d.events("leases_rescued")]
    assert {line["reason"] for line in rescued} == {"heartbeat"}
    assert sum(line["rows"] for line in rescued) == len(held)


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
    async with daemons(env, tmp_path, DAEMONS) as running:
        await pg_server.psql(pg_url, insert_script(0, half))

        async def some_sent() -> bool:
            counts = await statuses(pg_url)
            return counts is not None and counts.get("sent", 0) >= 500

        await wait_until(some_sent, 60, "delivery under way")
        await pg_server.restart()
        await pg_server.psql(pg_url, insert_script(half, EVENTS))
        await wait_until(lambda: all_sent(pg_url, EVENTS), 90, "all 10,000 events sent")
        assert all(d.process.returncode is None for d in running), "a daemon died"
        # Every daemon lost its LISTEN connection and opened a new one.
        assert all(
            any(r.get("reconnected") for r in d.events("postgres_listening")) for d in running
        )
        codes = [await stop(daemon) for daemon in running]
    assert codes == [0] * DAEMONS
    assert {event_id for _, _, event_id in fake.accepted_ids()} == expected_ids()
