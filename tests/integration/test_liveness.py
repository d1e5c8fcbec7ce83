"""Liveness (issue 20): daemons' heartbeats, and the rescue of a dead or stalled daemon's rows,
with workers on real SQLite files against the fake TikTok over loopback HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from forwarder.fake_tiktok import FakeTikTok
from forwarder.outcome import ApiResponse
from forwarder.store.sqlite import SQLiteStore
from forwarder.tiktok.client import TikTokClient
from forwarder.worker import loop
from tests.support.harness import TOKEN, daemon_worker
from tests.support.rows import insert, purchase, query, statuses
from tests.support.waiting import ManualClock, wait_until


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
    stalled = daemon_worker(store, stalled_sender, "stalled", clock, drain=False)
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
            rescuer = daemon_worker(rescuer_store, sender, "rescuer", clock)
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
    await daemon_worker(store, sender, "clean", clock).run()
    assert query(db_path, "SELECT stopped_by FROM forwarder_daemons") == [("clean",)]

    insert(db_path, [purchase(i) for i in range(5, 10)])
    stalled_sender = StallAfterSend(sender)
    worker = daemon_worker(store, stalled_sender, "left", clock, drain=False, shutdown_grace_s=0.1)
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
