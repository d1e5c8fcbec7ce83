"""Liveness (issue 20) with real processes: a restart rescues the rows of a predecessor whose
process is gone, and how a process is known to be gone (exited, reaped or a zombie)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from forwarder.fake_tiktok import FakeTikTok
from forwarder.store.sqlite import SQLiteStore
from forwarder.tiktok.client import TikTokClient
from forwarder.worker.liveness import process_gone, this_daemon
from tests.support.harness import TOKEN, daemon_worker
from tests.support.rows import insert, purchase, query, statuses
from tests.support.waiting import ManualClock


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log entries named *name*."""
    return [entry for entry in logs if entry["event"] == name]


async def test_a_restart_rescues_the_rows_of_its_dead_predecessor_first(
    store: SQLiteStore, db_path: Path, fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A daemon recorded on this boot and PID namespace whose process is gone loses its rows to
    the next daemon before that one's first claim; one whose process lives keeps them."""
    insert(db_path, [purchase(i) for i in range(30)])
    clock = ManualClock()
    me = this_daemon("crashed")
    if me.boot_id is None or me.pid_ns is None:
        pytest.skip("no Linux boot id or PID namespace here")
    live = await asyncio.create_subprocess_exec("sleep", "60")
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    try:
        for owner, pid in (("crashed", dead.pid), ("living", live.pid)):
            await store.register_daemon(replace(me, owner=owner, pid=pid), clock.now)
            await store.claim(10, owner, clock.now, clock.now + 600)
        sender = TikTokClient(session, fake.url, TOKEN, 5.0)
        with capture_logs() as logs:
            totals = await asyncio.wait_for(daemon_worker(store, sender, "next", clock).run(), 20)
    finally:
        live.kill()
        await live.wait()
    assert (totals.rescued, totals.delivered) == (10, 20)
    assert statuses(db_path) == {"sent": 20, "inflight": 10}
    [rescued] = events(logs, "leases_rescued")
    assert (rescued["reason"], rescued["rows"], rescued["owner"]) == ("restart", 10, "crashed")
    stopped = query(db_path, "SELECT owner, stopped_by FROM forwarder_daemons WHERE stopped_at > 0")
    assert sorted(stopped) == [("crashed", "next"), ("next", "next")]


def test_process_gone_knows_live_dead_and_zombie_processes() -> None:
    """A live pid, this process and nonsense pids are alive; an exited, reaped process and a
    killed one not yet reaped (a zombie) are gone."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc here")
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert not process_gone(child.pid)
        assert not process_gone(os.getpid())
        assert not process_gone(0) and not process_gone(-1)
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
        assert process_gone(child.pid)
    finally:
        child.kill()
        child.wait()
    assert process_gone(child.pid)
