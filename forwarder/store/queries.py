"""Load a file of named SQL queries, as procrastinate keeps its own in ``queries.sql``.

Each query starts with a header line naming it, then one comment line saying what it does,
then its SQL::

    -- name: release
    -- Return leased rows to pending untouched.
    UPDATE tiktok_outbox ...

More comment lines may follow the description or sit between lines of the SQL (why it is
written so); every line that is only a comment is left out of the text sent to the database.
Comment lines before the first header describe the file. The SQL text is fixed: values travel
as parameters, never formatted into it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

_HEADER = re.compile(r"--\s*name:(?P<name>.*)")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class QueryFileError(ValueError):
    """A file of named queries is malformed."""


def _comment(line: str) -> bool:
    return line.lstrip().startswith("--")


def parse(text: str, source: str = "<queries>") -> dict[str, str]:
    """Return the queries of *text* by name; refuse a malformed, empty or repeated one."""
    blocks: list[tuple[str, int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.fullmatch(line.strip())
        if header is not None:
            name = header["name"].strip()
            if not _NAME.fullmatch(name):
                raise QueryFileError(f"{source}:{number}: {name!r} is not a query name")
            blocks.append((name, number, []))
        elif blocks:
            blocks[-1][2].append(line)
        elif line.strip() and not _comment(line):
            raise QueryFileError(f"{source}:{number}: SQL before the first '-- name:' header")
    queries: dict[str, str] = {}
    for name, number, lines in blocks:
        where = f"{source}:{number}: query {name!r}"
        if name in queries:
            raise QueryFileError(f"{where} is defined twice")
        if not lines or not _comment(lines[0]) or not lines[0].strip().lstrip("-").strip():
            raise QueryFileError(f"{where} lacks its description (a comment line after the name)")
        sql = "\n".join(line for line in lines if not _comment(line)).strip()
        if not sql:
            raise QueryFileError(f"{where} is empty")
        queries[name] = sql
    return queries


@functools.cache
def load(package: str, resource: str = "queries.sql") -> Mapping[str, str]:
    """Return the queries of *package*'s *resource* (read once, from a checkout or a wheel)."""
    text = resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    return MappingProxyType(parse(text, f"{package}/{resource}"))
