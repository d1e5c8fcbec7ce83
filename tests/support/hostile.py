"""Text a terminal acts on, which operator output must show escaped, never obey."""

from __future__ import annotations

import re

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
