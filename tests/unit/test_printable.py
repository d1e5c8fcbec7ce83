"""Operator output cannot be forged: control characters come out escaped.

The commands' output on hostile rows and answers is in tests/e2e/test_printable.py.
"""

from __future__ import annotations

import io

import pytest
import structlog

from forwarder import logs
from forwarder.printable import printable
from tests.support.hostile import CLEAR, HOSTILE, UNSAFE


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
