"""Make a value safe to print on an operator's terminal: every control character escaped.

An outbox row holds whatever the application wrote, and a reason may quote TikTok's message: an
escape sequence printed raw rewrites the terminal, a newline forges a table line, a bidi
override reverses what follows. Text output (tables, ``inspect``, ``status``, console logs,
error lines) passes every value through printable(); ``--json`` output needs nothing, as JSON
escapes by itself.
"""

from __future__ import annotations

import re
from typing import Final

# C0 controls, DEL, C1 controls (ESC's single-byte twin, CSI, is \x9b), the Unicode line and
# paragraph separators, the bidi marks, embeddings, overrides and isolates, and lone surrogates
# (undecodable bytes read leniently from the database), which no terminal encoding can print.
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE_BUT_NEWLINE: Final = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object, *, keep_newlines: bool = False) -> str:
    """Return *value* as text with each control character written as a Python escape.

    ``\\n``, ``\\r`` and ``\\t`` are named; other characters become ``\\xNN`` or ``\\uNNNN``.
    *keep_newlines* leaves line feeds alone, for text that is several lines on purpose (a
    traceback); every other control character is still escaped.
    """
    text = value if isinstance(value, str) else str(value)
    pattern = _UNSAFE_BUT_NEWLINE if keep_newlines else _UNSAFE
    return pattern.sub(_escape, text)
