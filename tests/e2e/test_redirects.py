"""The daemon pauses on a redirect and sends nothing to its target: another origin gets nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.fake_tiktok import FakeTikTok, Scripted
from forwarder.tiktok.spec import TRACK_PATH
from tests.support.daemon import daemon_env, events, free_port, migrated, readyz, spawn, stop
from tests.support.harness import TOKEN
from tests.support.recorder import Recorder
from tests.support.rows import insert, purchase, query, statuses
from tests.support.waiting import wait_until


@pytest.mark.parametrize("status", [302, 307])
async def test_daemon_pauses_on_a_redirect_and_sends_nothing_elsewhere(
    db_path: Path, fake: FakeTikTok, recorder: Recorder, tmp_path: Path, status: int
) -> None:
    """A redirect pauses delivery (reason names the target's origin); nothing reaches it."""
    port = free_port()
    env = daemon_env(db_path, fake, FORWARDER_HTTP_ADDR=f"127.0.0.1:{port}")
    await migrated(db_path, env)
    insert(db_path, [purchase(i) for i in range(20)])
    target = f"{recorder.url}{TRACK_PATH}?token={TOKEN}"
    fake.script(Scripted(http_status=status, location=target, times=10_000))
    log = tmp_path / "daemon.log"
    daemon = spawn(env, log)
    try:
        await wait_until(
            lambda: fake.requests >= 3 or bool(recorder.requests), 30, "the daemon probing"
        )
        assert recorder.requests == [], "a request reached the redirect's target"
        ready, body = await readyz(port)
        assert ready == 503
        assert body["reason"].startswith(f"destination paused: http_{status}")
        assert recorder.url in body["reason"] and TRACK_PATH not in body["reason"]
        rows = query(db_path, "SELECT DISTINCT status, attempts, last_code FROM tiktok_outbox")
        assert rows == [("pending", 0, f"http_{status}")]
        # The redirect stops (the proxy is fixed): delivery resumes on the next probe.
        fake.reset()
        await wait_until(lambda: statuses(db_path) == {"sent": 20}, 30, "all 20 sent")
        assert (await readyz(port))[0] == 200
    finally:
        code = await stop(daemon)
    assert code == 0, log.read_text()[-2000:]
    assert recorder.requests == [], "a request reached the redirect's target"
    assert len(fake.accepted_ids()) == 20
    paused = events(log, "destination_paused")
    assert paused and all(recorder.url in str(line["message"]) for line in paused)
    assert TOKEN not in log.read_text()
