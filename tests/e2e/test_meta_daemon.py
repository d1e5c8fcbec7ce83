"""A shop's Meta Conversions API insert, run by the sqlite3 tool, delivered by the daemon as a
process to the fake TikTok over loopback."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import daemon_env, finish, forwarder, insert_rows, migrated
from tests.support.harness import TOKEN
from tests.support.meta import META_WEB, expected_web_event, meta_event, meta_row
from tests.support.rows import statuses


async def test_the_shops_insert_reaches_tiktok_end_to_end(db_path: Path) -> None:
    """docs/meta-capi.md's insert, run by the sqlite3 tool, is sent by `forwarder run --once`
    to the fake TikTok over loopback as the event it means."""
    event_time = int(time.time()) - 60
    document = meta_event(event_time, user_data={**META_WEB["user_data"], "ph": "12133734253"})
    async with FakeTikTok(token=TOKEN) as server:
        env = daemon_env(db_path, server)
        await migrated(db_path, env)
        insert_rows(db_path, [meta_row("order-10492", document)])
        code, out, err = await finish(await forwarder(env, "run", "--once"))
        assert code == 0, err
        [accepted] = server.accepted
    assert statuses(db_path) == {"sent": 1}
    expected = expected_web_event("order-10492", event_time)
    expected["user"]["phone"] = [hashlib.sha256(b"+12133734253").hexdigest()]
    assert {key: accepted[key] for key in expected} == expected
    assert "2133734253" not in out + err
