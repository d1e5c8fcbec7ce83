"""Liveness (issue 20): daemons' heartbeats, and the rescue of a dead or stalled daemon's rows,
with workers on real SQLite files against the fake TikTok over loopback HTTP."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from forwarder.backoff import BackoffPolicy
from forwarder.fake_tiktok import FakeTikTok
from forwarder.metrics import Metrics
from forwarder.outcome import ApiResponse
from forwarder.pacing import Pacer
from forwarder.store.sqlite import SQLiteStore
from forwarder.tiktok.build import BuildOptions
from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.destination import Sender, TikTok
from forwarder.worker import Worker, WorkerConfig, loop
from forwarder.worker.liveness import process_gone, this_daemon

from .conftest import insert
from .helpers import ManualClock, purchase, query, statuses, wait_until

TOKEN = "test-token"
PIXEL = "D34FV3JC77U1PDQ72P1G"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTikTok]:
    """The project's fake TikTok on a free loopback port."""
    async with FakeTikTok(token=TOKEN) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP session, as the daemon keeps."""
    async with aiohttp.ClientSession() as client:
        yield client


def make_worker(
    store: SQLiteStore,
    sender: Sender,
    owner: str,
    clock: ManualClock,
    *,
    drain: bool = True,
    **overrides: Any,
) -> Worker:
    """A daemon's worker: its own pacer, metrics and lease owner, on *clock*."""
    build = BuildOptions(
        default_pixel=PIXEL,
        phone_region="US",
        consent_default="granted",
        max_age_s=7 * 86400,
        test_event_code=None,
    )
    options: dict[str, Any] = {
        "backoff": BackoffPolicy(initial_s=1.0, cap_s=300.0, retry_after_cap_s=600.0),
        "poll_interval_s": 0.02,
        "lease_s": 60.0,
        "shutdown_grace_s": 5.0,
        "heartbeat_s": 0.05,
    }
    options.update(overrides)
    pacer = Pacer(
        max_limit=4, throttle_max_s=300, probe_max_s=60, retry_after_max_s=600, rng=random.Random(1)
    )
    return Worker(
        store,
        TikTok(sender, build, clock=clock),
        WorkerConfig(**options),
        pacer,
        Metrics(),
        owner=owner,
        drain=drain,
        clock=clock,
        rng=random.Random(2),
    )


class StallAfterSend:
    """A sender whose process stalls once TikTok has answered: the answer reaches the worker
    only when the test lets it (as after SIGSTOP and SIGCONT)."""

    def __init__(self, inner: TikTokClient) -> None:
        self.inner = inner
        self.answered = asyncio.Event()
        self.resume = asyncio.Event()
        self.request_ids: list[str] = []

    async def send(self, body: bytes) -> ApiResponse:
        """Send through the real client, then wait to be resumed."""
        response = await self.inner.send(body)
        self.request_ids.append(orjson.loads(response.body)["request_id"])
        self.answered.set()
        await self.resume.wait()
        return response


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log entries named *name*."""
    return [entry for entry in logs if entry["event"] == name]


async def test_a_stalled_daemon_settles_nothing_it_lost(
    store: SQLiteStore, db_path: Path, fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A daemon that stalls (its loop, its heartbeat and the answer to its request all held, as
    by SIGSTOP) loses its rows to another daemon after the silence bound, not the lease; when it
    comes back it writes none of them, logs lease_lost and daemon_found_dead, and registers
    again."""
    insert(db_path, [purchase(i) for i in range(10)])
    clock = ManualClock()
    stalled_sender = StallAfterSend(TikTokClient(session, fake.url, TOKEN, 5.0))
    stalled = make_worker(store, stalled_sender, "stalled", clock, drain=False)
    resume = stalled_sender.resume
    heartbeat, tick = store.heartbeat, stalled.tick

    async def stalled_heartbeat(owner: str, now: float) -> bool:
        await resume.wait()
        return await heartbeat(owner, now)

    async def stalled_tick() -> bool:
        await resume.wait()
        return await tick()

    store.heartbeat = stalled_heartbeat  # type: ignore[method-assign]
    rescuer_store = await SQLiteStore.open(db_path)
    try:
        with capture_logs() as logs:
            running = asyncio.create_task(stalled.run())
            await asyncio.wait_for(stalled_sender.answered.wait(), 10)
            stalled.tick = stalled_tick  # type: ignore[method-assign]
            assert statuses(db_path) == {"inflight": 10}
            clock.advance(30)  # silent for 30 s, half its 60 s lease
            sender = TikTokClient(session, fake.url, TOKEN, 5.0)
            rescuer = make_worker(rescuer_store, sender, "rescuer", clock)
            totals = await asyncio.wait_for(rescuer.run(), 20)
            assert (totals.rescued, totals.delivered) == (10, 10)
            assert statuses(db_path) == {"sent": 10}
            resume.set()
            await wait_until(
                lambda: (
                    query(
                        db_path, "SELECT stopped_at FROM forwarder_daemons WHERE owner = 'stalled'"
                    )
                    == [(None,)]
                    and bool(events(logs, "lease_lost"))
                ),
                10,
                "the stalled daemon noticing, and registering again",
            )
            stalled.stop()
            await asyncio.wait_for(running, 10)
    finally:
        await rescuer_store.close()
    [rescued] = events(logs, "leases_rescued")
    assert (rescued["reason"], rescued["rows"], rescued["owner"]) == ("heartbeat", 10, "stalled")
    assert [(e["action"], e["rows"]) for e in events(logs, "lease_lost")] == [("sent", 10)]
    [found_dead] = events(logs, "daemon_found_dead")
    assert found_dead["silent_s"] >= 30
    # Its answer changed no row: each is marked with the rescuer's request, not the stalled one's.
    request_ids = {r for (r,) in query(db_path, "SELECT DISTINCT request_id FROM tiktok_outbox")}
    assert request_ids and not request_ids & set(stalled_sender.request_ids)


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
            totals = await asyncio.wait_for(make_worker(store, sender, "next", clock).run(), 20)
    finally:
        live.kill()
        await live.wait()
    assert (totals.rescued, totals.delivered) == (10, 20)
    assert statuses(db_path) == {"sent": 20, "inflight": 10}
    [rescued] = events(logs, "leases_rescued")
    assert (rescued["reason"], rescued["rows"], rescued["owner"]) == ("restart", 10, "crashed")
    stopped = query(db_path, "SELECT owner, stopped_by FROM forwarder_daemons WHERE stopped_at > 0")
    assert sorted(stopped) == [("crashed", "next"), ("next", "next")]


async def test_a_clean_stop_is_recorded_and_a_stop_leaving_rows_is_not(
    store: SQLiteStore,
    db_path: Path,
    fake: FakeTikTok,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A daemon that gave back every lease marks itself stopped (never taken for a silent
    one); a daemon whose rows could not be given back leaves its record running, so another
    daemon rescues them within seconds."""
    insert(db_path, [purchase(i) for i in range(5)])
    clock = ManualClock()
    sender = TikTokClient(session, fake.url, TOKEN, 5.0)
    await make_worker(store, sender, "clean", clock).run()
    assert query(db_path, "SELECT stopped_by FROM forwarder_daemons") == [("clean",)]

    insert(db_path, [purchase(i) for i in range(5, 10)])
    stalled_sender = StallAfterSend(sender)
    worker = make_worker(store, stalled_sender, "left", clock, drain=False, shutdown_grace_s=0.1)
    release = store.release

    async def blocked(*args: Any) -> int:
        await asyncio.Event().wait()
        return await release(*args)

    store.release = blocked  # type: ignore[method-assign]
    monkeypatch.setattr(loop, "SHUTDOWN_FINISH_S", 0.5)
    try:
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(stalled_sender.answered.wait(), 10)
        worker.stop()
        await asyncio.wait_for(running, 20)
    finally:
        store.release = release  # type: ignore[method-assign]
    assert query(db_path, "SELECT stopped_at FROM forwarder_daemons WHERE owner = 'left'") == [
        (None,)
    ]
    assert statuses(db_path)["inflight"] == 5


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
