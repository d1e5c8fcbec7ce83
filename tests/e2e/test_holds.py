"""The daemon holds a row's own refused pixel and keeps delivering the default pixel's rows."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import (
    daemon_env,
    events,
    finish,
    forwarder,
    free_port,
    migrated,
    readyz,
    spawn,
    stop,
)
from tests.support.harness import OTHER_PIXEL, TOKEN
from tests.support.rows import insert, purchases, query, statuses
from tests.support.waiting import wait_until


async def test_daemon_keeps_delivering_past_a_refused_pixel_and_test_code(
    db_path: Path, fake: FakeTikTok, tmp_path: Path
) -> None:
    """End to end: a refused pixel is held, a refused test code dead; /readyz stays 200."""
    port = free_port()
    env = daemon_env(
        db_path, fake, TIKTOK_ACCESS_TOKEN=TOKEN, FORWARDER_HTTP_ADDR=f"127.0.0.1:{port}"
    )
    await migrated(db_path, env)
    fake.refused_pixels.add(OTHER_PIXEL)
    fake.refused_test_codes.add("BADTEST")
    insert(
        db_path,
        purchases(0, 20, pixel_code=OTHER_PIXEL) + purchases(20, 25, test_event_code="BADTEST"),
    )
    insert(db_path, purchases(25, 55))
    log = tmp_path / "daemon.log"
    daemon = spawn(env, log)
    try:

        def settled() -> bool:
            return statuses(db_path) == {"sent": 30, "dead": 5, "pending": 20}

        await wait_until(settled, 30, "default rows sent, bad test codes dead")
        insert(db_path, purchases(55, 65))  # good rows inserted afterwards go out too
        await wait_until(lambda: statuses(db_path).get("sent") == 40, 30, "later rows sent")
        ready, body = await readyz(port)
        assert (ready, body) == (200, {"ready": True, "held_pixels": [OTHER_PIXEL]})
        pending = query(
            db_path,
            "SELECT DISTINCT attempts, last_code FROM tiktok_outbox WHERE status = 'pending'",
        )
        assert pending == [(0, "40001")]
        code, out, err = await finish(await forwarder(env, "status"))
        assert code == 0, err
        assert (
            f"held pixel      {OTHER_PIXEL} (40001" in out and "destination     delivering" in out
        )
        code, out, _ = await finish(await forwarder(env, "status", "--json"))
        assert list(orjson.loads(out)["destination"]["held_pixels"]) == [OTHER_PIXEL]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as answer,
        ):
            assert "forwarder_pixels_held 1.0" in await answer.text()
        fake.refused_pixels.clear()  # the token is granted the pixel
        await wait_until(lambda: statuses(db_path) == {"sent": 60, "dead": 5}, 30, "all sent")
        assert (await readyz(port))[1]["held_pixels"] == []
    finally:
        code = await stop(daemon)
    assert code == 0, log.read_text()[-2000:]
    assert not events(log, "destination_paused")
    assert events(log, "pixel_held") and events(log, "pixel_released")
    dead = query(
        db_path,
        "SELECT DISTINCT last_code, test_event_code FROM tiktok_outbox WHERE status = 'dead'",
    )
    assert dead == [("40002", "BADTEST")]
    ids = fake.accepted_ids()
    assert len(ids) == len(set(ids)) == 60
