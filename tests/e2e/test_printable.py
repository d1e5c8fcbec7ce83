"""Operator output cannot be forged: the commands print hostile rows and answers escaped."""

from __future__ import annotations

from pathlib import Path

import orjson

from forwarder.fake_tiktok import FakeTikTok, Scripted
from forwarder.printable import printable
from tests.support.daemon import daemon_env, finish, forwarder, migrated
from tests.support.hostile import CLEAR, HOSTILE, UNSAFE
from tests.support.rows import insert, purchase, statuses

REASON = "data.0.event_id: refused \x9b31mred\u202egnp.exe\u2029 end"


def hostile_rows() -> list[dict[str, object]]:
    """Rows whose event_id and event hold escape sequences, separators and a forged line."""
    rows: list[dict[str, object]] = [
        {"event_id": value, "event": f"Purchase{CLEAR}", "payload": "{not json"}
        for value in HOSTILE.values()
    ]
    rows.append({**purchase(1), "event_id": "reason-row"})
    return rows


async def test_operator_output_is_escaped(db_path: Path, fake: FakeTikTok) -> None:
    """dead list, inspect, status and console logs print hostile values escaped; --json exact."""
    env = daemon_env(db_path, fake, FORWARDER_LOG_FORMAT="console")
    await migrated(db_path, env)
    insert(db_path, hostile_rows())
    fake.script(Scripted(code=40002, message=REASON))
    code, _, err = await finish(await forwarder(env, "run", "--once"))
    assert code == 0, err
    assert statuses(db_path) == {"dead": 4}
    assert "events_dead" in err and not UNSAFE.search(err)

    code, out, err = await finish(await forwarder(env, "dead", "list"))
    assert code == 0, err
    assert not UNSAFE.search(out)
    lines = out.splitlines()
    assert len(lines) == 5, out  # the header and one line per dead row: nothing forged
    assert lines[0].startswith("ID")
    assert any("forged\\n999  order-x" in line for line in lines)
    assert any("esc\\x1b[2J\\x1b[H\\x1b[31mred" in line for line in lines)
    assert any("\\x9b31mred\\u202egnp" in line for line in lines)

    code, out, err = await finish(await forwarder(env, "dead", "list", "--json"))
    assert code == 0, err
    listed = orjson.loads(out)
    assert {row["event_id"] for row in listed} == {*HOSTILE.values(), "reason-row"}
    assert {row["event"] for row in listed} == {f"Purchase{CLEAR}", "Purchase"}
    [reason] = [row["reason"] for row in listed if row["event_id"] == "reason-row"]
    assert "refused \x9b31mred\u202egnp.exe" in reason  # stored as TikTok sent it

    for value in HOSTILE.values():
        code, out, err = await finish(await forwarder(env, "inspect", value))
        assert code == 0, err
        assert not UNSAFE.search(out), out
        assert printable(value) in out
        code, out, err = await finish(await forwarder(env, "inspect", value, "--json"))
        assert code == 0, err
        [document] = orjson.loads(out)
        assert (document["event_id"], document["event"]) == (value, f"Purchase{CLEAR}")

    code, out, err = await finish(await forwarder(env, "inspect", "reason-row"))
    assert code == 0 and not UNSAFE.search(out)
    assert "\\x9b31mred" in out
    code, out, err = await finish(await forwarder(env, "inspect", f"nothing{CLEAR}"))
    assert code == 1 and not UNSAFE.search(err)

    code, out, err = await finish(await forwarder(env, "status"))
    assert code == 0 and not UNSAFE.search(out + err)
