"""SIGHUP reads the access token again: a token is rotated without a restart."""

from __future__ import annotations

import os
import signal
from datetime import datetime
from pathlib import Path

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import daemon_env, events, migrated, spawn, stop
from tests.support.harness import TOKEN
from tests.support.rows import insert, purchase, statuses
from tests.support.waiting import wait_until

NEW_TOKEN = "rotated-token-2"


def write_token(path: Path, token: str) -> None:
    """Replace the token file in one step, as an operator's script should."""
    part = path.with_suffix(".new")
    part.write_text(token + "\n", encoding="utf-8")
    part.chmod(0o600)  # forwarder refuses a token file other users can read
    os.replace(part, path)


async def test_sighup_rotates_the_token_live(
    db_path: Path, fake: FakeTikTok, tmp_path: Path
) -> None:
    """A revoked token pauses delivery; a new one in the file plus SIGHUP resumes it at once."""
    token_file = tmp_path / "token"
    write_token(token_file, TOKEN)
    env = daemon_env(
        db_path,
        fake,
        TIKTOK_ACCESS_TOKEN_FILE=str(token_file),
        FORWARDER_PAUSE_PROBE_MAX="60s",  # probes 1, 2, 4, 8 s apart: SIGHUP must not wait
    )
    del env["TIKTOK_ACCESS_TOKEN"]
    await migrated(db_path, env)
    log = tmp_path / "daemon.log"
    daemon = spawn(env, log)
    try:
        insert(db_path, [purchase(i) for i in range(20)])
        await wait_until(lambda: statuses(db_path) == {"sent": 20}, 30, "the first 20 sent")

        fake.token = NEW_TOKEN  # TikTok revoked the old token and issued a new one
        insert(db_path, [purchase(i) for i in range(20, 40)])

        def long_pause() -> bool:
            lines = events(log, "destination_paused")
            return any(float(str(line["next_probe_in_s"])) >= 4 for line in lines)

        await wait_until(long_pause, 30, "a pause with the next probe 4 s away")
        # A token file that cannot be used: the daemon keeps the old token and stays up.
        write_token(token_file, "")
        daemon.send_signal(signal.SIGHUP)
        await wait_until(lambda: bool(events(log, "token_reload_failed")), 10, "a failed reload")
        assert daemon.poll() is None, "SIGHUP ended the daemon"

        # The probe the daemon has planned: SIGHUP must bring delivery back before it.
        pause = events(log, "destination_paused")[-1]
        planned = datetime.fromisoformat(str(pause["timestamp"])).timestamp()
        next_probe = planned + float(str(pause["next_probe_in_s"]))
        write_token(token_file, NEW_TOKEN)
        daemon.send_signal(signal.SIGHUP)
        await wait_until(lambda: statuses(db_path).get("sent", 0) > 20, 30, "delivery resumed")
        resumed = datetime.now().timestamp()
        await wait_until(lambda: statuses(db_path) == {"sent": 40}, 30, "all 40 sent")
    finally:
        code = await stop(daemon)
    assert code == 0, log.read_text()[-2000:]
    assert resumed < next_probe, "delivery waited for the next probe instead of the SIGHUP"
    reloads = events(log, "token_reloaded")
    assert [line["changed"] for line in reloads] == [True]
    assert events(log, "destination_resumed")
    assert {event_id for *_, event_id in fake.accepted_ids()} == {f"order-{i}" for i in range(40)}
    text = log.read_text()
    assert TOKEN not in text and NEW_TOKEN not in text
