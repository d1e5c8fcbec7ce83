"""Crash recovery in seconds (issue 20): `forwarder run` processes on a SQLite file, killed with
SIGKILL or stopped with SIGSTOP mid-delivery, with the default lease (60 s) that no rescue
below waits for."""

from __future__ import annotations

import asyncio
import collections
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import daemon_env, log_lines, migrated, spawn, stop
from tests.support.rows import insert, purchase, query, statuses
from tests.support.waiting import wait_until

RESCUE_BOUND_S = 10.0  # issue 20: every in-flight event sent this soon after a restart


@pytest.fixture
def fake_options() -> dict[str, object]:
    """The fake TikTok answers after 500 ms, so requests are in flight at a kill."""
    return {"latency_s": 0.5}


def leased_by(db_path: Path, pid: int) -> list[int]:
    """The ids of the rows still inflight under the daemon with this pid (host:pid:tag)."""
    rows = query(
        db_path,
        "SELECT id FROM tiktok_outbox WHERE status = 'inflight' AND lease_owner LIKE ?",
        (f"%:{pid}:%",),
    )
    return [row_id for (row_id,) in rows]


def sent_among(db_path: Path, ids: list[int]) -> int:
    """How many of the rows *ids* are sent."""
    marks = ",".join("?" * len(ids))
    [(count,)] = query(
        db_path,
        f"SELECT count(*) FROM tiktok_outbox WHERE status = 'sent' AND id IN ({marks})",
        ids,
    )
    return int(count)


def write_lock_free(db_path: Path) -> bool:
    """Whether another connection could take SQLite's write lock now."""
    conn = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def process_state(pid: int) -> str:
    """The one-letter state of a process (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


async def sigstop_outside_a_write(daemon: subprocess.Popen[bytes], db_path: Path) -> None:
    """SIGSTOP *daemon* at a moment it holds no SQLite write lock: a daemon stopped inside a
    transaction would stop every writer of the file, rescues included, until SIGCONT."""
    for _ in range(50):
        daemon.send_signal(signal.SIGSTOP)
        await wait_until(lambda: process_state(daemon.pid) == "T", 5, "the daemon stopped")
        if write_lock_free(db_path):
            return
        daemon.send_signal(signal.SIGCONT)
        await wait_until(lambda: write_lock_free(db_path), 5, "the write lock free")
    raise AssertionError("the daemon held the write lock at every SIGSTOP")


def events(log: Path, name: str) -> list[dict[str, object]]:
    """The daemon's log lines with this event name."""
    return [line for line in log_lines(log) if line.get("event") == name]


def duplicates(fake: FakeTikTok) -> int:
    """Events TikTok accepted more than once."""
    accepted = collections.Counter(fake.accepted_ids())
    return sum(count - 1 for count in accepted.values())


async def test_kill_9_then_restart_sends_every_inflight_event_within_10s(
    db_path: Path, fake: FakeTikTok, tmp_path: Path
) -> None:
    """After kill -9 mid-delivery and an immediate restart, the rows the dead daemon held are
    sent within 10 s of the restart (they waited out the 60 s lease before), and TikTok gets
    no more duplicates than rows were in flight at the kill."""
    env = daemon_env(
        db_path,
        fake,
        FORWARDER_LEASE="60s",
        FORWARDER_REQUEST_TIMEOUT="5s",
        FORWARDER_BATCH_MAX_EVENTS="200",
    )
    await migrated(db_path, env)
    insert(db_path, [purchase(i) for i in range(3000)])
    first = spawn(env, tmp_path / "first.log")
    try:
        await wait_until(lambda: fake.requests >= 4, 30, "requests in flight")
    finally:
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
    held = leased_by(db_path, first.pid)
    assert held, "the daemon held no row when it was killed"
    fake.latency_s = 0.05
    restarted = time.monotonic()
    second = spawn(env, tmp_path / "second.log")
    try:
        await wait_until(
            lambda: sent_among(db_path, held) == len(held),
            RESCUE_BOUND_S,
            f"the {len(held)} rows in flight at the kill sent after the restart",
        )
        took = time.monotonic() - restarted
        await wait_until(lambda: statuses(db_path) == {"sent": 3000}, 60, "every row sent")
    finally:
        code = await stop(second)
    assert code == 0
    print(
        f"kill -9 and restart: {len(held)} rows in flight sent {took:.2f} s after the restart",
        file=sys.stderr,
    )
    [rescued] = events(tmp_path / "second.log", "leases_rescued")
    assert (rescued["reason"], rescued["rows"]) == ("restart", len(held))
    assert {event_id for _, _, event_id in fake.accepted_ids()} == {
        f"order-{i}" for i in range(3000)
    }
    assert duplicates(fake) <= len(held)


async def test_a_stopped_daemon_loses_its_rows_to_another_and_settles_none(
    db_path: Path, fake: FakeTikTok, tmp_path: Path
) -> None:
    """SIGSTOP on one of two daemons mid-request: the other sends its rows within seconds
    (its heartbeat stopped; the lease has 60 s to go); after SIGCONT it changes none of them,
    logs lease_lost and daemon_found_dead, and both stop cleanly."""
    env = daemon_env(
        db_path,
        fake,
        FORWARDER_LEASE="60s",
        FORWARDER_REQUEST_TIMEOUT="30s",
        FORWARDER_BATCH_MAX_EVENTS="100",
    )
    await migrated(db_path, env)
    insert(db_path, [purchase(i) for i in range(400)])
    stalled = spawn(env, tmp_path / "stalled.log")
    other = None
    try:
        await wait_until(lambda: fake.requests >= 4, 30, "the first daemon's requests in flight")
        await sigstop_outside_a_write(stalled, db_path)
        held = leased_by(db_path, stalled.pid)
        assert held
        stopped_at = time.monotonic()
        other = spawn(env, tmp_path / "other.log")
        await wait_until(
            lambda: sent_among(db_path, held) == len(held), 20, "the stopped daemon's rows sent"
        )
        took = time.monotonic() - stopped_at
        await wait_until(lambda: statuses(db_path) == {"sent": 400}, 60, "every row sent")
        stalled.send_signal(signal.SIGCONT)
        await wait_until(
            lambda: bool(
                events(tmp_path / "stalled.log", "lease_lost")
                and events(tmp_path / "stalled.log", "daemon_found_dead")
            ),
            20,
            "the stopped daemon noticing",
        )
    finally:
        stalled.send_signal(signal.SIGCONT)
        codes = [await stop(stalled)] + ([await stop(other)] if other else [])
    assert codes == [0, 0]
    print(
        f"SIGSTOP: {len(held)} rows sent by the other daemon {took:.2f} s after the stop",
        file=sys.stderr,
    )
    assert took < RESCUE_BOUND_S + 5  # start-up of the other daemon, then the 5 s silence
    rescued = events(tmp_path / "other.log", "leases_rescued")
    assert {line["reason"] for line in rescued} == {"heartbeat"}
    assert sum(int(str(line["rows"])) for line in rescued) == len(held)
    lost = sum(int(str(line["rows"])) for line in events(tmp_path / "stalled.log", "lease_lost"))
    assert lost == len(held)
    assert statuses(db_path) == {"sent": 400}
    assert duplicates(fake) <= len(held)
