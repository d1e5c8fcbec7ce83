"""Operator output cannot be forged: control characters from rows and answers come out escaped."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import structlog

from forwarder import logs
from forwarder.fake_tiktok import FakeTikTok, Scripted
from forwarder.printable import printable

from .conftest import insert
from .helpers import purchase, statuses
from .test_e2e import TOKEN, daemon_env, finish, forwarder, migrated

# What a terminal acts on: C0 (but the line feeds between lines), DEL, C1, line and paragraph
# separators, bidi controls, lone surrogates.
UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)
CLEAR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
FORGED = "\n999  order-x  Purchase  0  1  2026-01-01 00:00:00Z  -  all fine"
HOSTILE = {
    "esc": f"esc{CLEAR}\x1b[31mred",
    "forged": f"forged{FORGED}",
    "bidi": "bidi\u202etxt.exe\x9b2J\u2028x\r\t\x07",
}
REASON = "data.0.event_id: refused \x9b31mred\u202egnp.exe\u2029 end"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTikTok]:
    """The fake TikTok on a free loopback port."""
    async with FakeTikTok(token=TOKEN) as server:
        yield server


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("plain text, ünïcode, 中文", "plain text, ünïcode, 中文"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x1b[2J\x00\x7f", "\\x1b[2J\\x00\\x7f"),
        ("\x9b31m\x85", "\\x9b31m\\x85"),
        ("\u2028\u2029\u202e\u2066\u200f\u061c", "\\u2028\\u2029\\u202e\\u2066\\u200f\\u061c"),
        ("bad \udcff byte", "bad \\udcff byte"),
        (40002, "40002"),
    ],
)
def test_printable_escapes_what_a_terminal_acts_on(raw: object, shown: str) -> None:
    """Each control character becomes a visible escape; other text is left as it is."""
    assert printable(raw) == shown


def test_printable_keeps_newlines_only_when_asked() -> None:
    """A traceback keeps its line breaks; its other control characters are still escaped."""
    assert printable("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"


def test_console_log_line_cannot_be_forged() -> None:
    """A value with escape sequences and newlines stays on its console line, escaped."""
    stream = io.StringIO()
    logs.configure("console", "info", stream)
    try:
        structlog.get_logger("t").warning("events_dead", detail=HOSTILE["forged"] + CLEAR)
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert not UNSAFE.search(text)
    assert "\\n999  order-x" in text and "\\x1b[2J" in text


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
