"""The named-query files: the parser's rules, and each store's file against the code using it.

Each statement compiled by SQLite and prepared by PostgreSQL: tests/integration/test_queries.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import forwarder.store
from forwarder.store import queries

STORE = Path(forwarder.store.__file__).parent
PACKAGES = {"sqlite": "forwarder.store.sqlite", "postgres": "forwarder.store.postgres"}


def _used(folder: Path) -> set[str]:
    """The names the modules of *folder* look up as ``SQL["name"]``."""
    names = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id == "SQL"
                and isinstance(node.slice, ast.Constant)
            ):
                names.add(node.slice.value)
    return names


def test_parse_names_each_query_and_leaves_its_comments_out() -> None:
    """A query is found by its name, as SQL alone: no header, description or other comment."""
    text = """-- The file's own comment.

-- name: first
-- Read one row.
-- Why it is written so.
SELECT 1
  -- an aside between the lines
  FROM t

-- name: second
-- Change nothing.
UPDATE t SET x = x WHERE 0
"""
    assert queries.parse(text) == {
        "first": "SELECT 1\n  FROM t",
        "second": "UPDATE t SET x = x WHERE 0",
    }


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("-- name: a\n-- One.\nSELECT 1\n-- name: a\n-- Two.\nSELECT 2\n", "defined twice"),
        ("-- name: a\n-- Nothing here.\n\n-- only a comment\n", "is empty"),
        ("-- name: a\n-- No SQL follows.\n-- name: b\n-- One.\nSELECT 1\n", "is empty"),
        ("-- name: a\nSELECT 1\n", "lacks its description"),
        ("-- name: a\n--\nSELECT 1\n", "lacks its description"),
        ("SELECT 1\n-- name: a\n-- One.\nSELECT 1\n", "before the first"),
        ("-- name: Bad-Name\n-- One.\nSELECT 1\n", "is not a query name"),
    ],
)
def test_parse_refuses_a_malformed_file(text: str, complaint: str) -> None:
    """A repeated name, an empty query, a missing description, stray SQL or a bad name fail."""
    with pytest.raises(queries.QueryFileError, match=complaint):
        queries.parse(text, "test.sql")


def test_load_reads_a_package_file_once() -> None:
    """load() returns one read-only mapping per file, however often it is called."""
    loaded = queries.load("forwarder.store.sqlite")
    assert loaded is queries.load("forwarder.store.sqlite")
    assert loaded["commit"] == "COMMIT"
    with pytest.raises(TypeError):
        loaded["commit"] = "ROLLBACK"  # type: ignore[index]


@pytest.mark.parametrize("backend", sorted(PACKAGES))
def test_every_query_the_code_names_is_in_its_file_and_used(backend: str) -> None:
    """Each store names only queries its file holds, and its file holds no unused query."""
    used = _used(STORE / backend)
    defined = set(queries.load(PACKAGES[backend]))
    assert used - defined == set()
    assert defined - used == set()
