"""The suite's own rules, read from its source: tiers, shared helpers, one-sentence docstrings."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tests.support.repo import ROOT

TESTS = ROOT / "tests"
TIERS = ("unit", "integration", "e2e")
#: What a unit test may not touch: a database, a socket, a process, or helpers that start them.
NOT_PURE_MODULES = {
    "aiosqlite",
    "asyncpg",
    "socket",
    "sqlite3",
    "subprocess",
    "tests.support.daemon",
    "tests.support.notify",
    "tests.support.pg",
    "tests.support.pg_daemons",
    "tests.support.recorder",
}
NOT_PURE_FIXTURES = {"db_path", "store", "fake", "session", "harness", "recorder", "pg_url"}
#: What an integration test may not start: the forwarder command or another program.
PROCESS_MODULES = {"subprocess", "tests.support.daemon", "tests.support.pg_daemons"}
#: A sentence ends at . ! or ? (not an ellipsis) before a space and a capital letter.
SENTENCE_END = re.compile(r"(?<!\.)[.!?]\s+(?=[A-Z])")


def suite_modules() -> list[Path]:
    """Every test module under tests/."""
    return sorted(TESTS.rglob("test_*.py"))


def module_name(path: Path) -> str:
    """The dotted name pytest imports *path* as (tests/ and its folders are packages)."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported_from(source: str, module: str) -> Iterator[str]:
    """The modules the *source* of *module* imports, relative imports resolved, with each
    `from X import y` also yielding X.y (y may be a module)."""
    package = module.rsplit(".", 1)[0].split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            yield origin
            yield from (f"{origin}.{alias.name}" for alias in node.names)


def imported(path: Path) -> Iterator[str]:
    """The modules the test module at *path* imports."""
    return imported_from(path.read_text(encoding="utf-8"), module_name(path))


def is_test_module(name: str) -> bool:
    """Whether the dotted *name* is a test module or a conftest."""
    last = name.rsplit(".", 1)[-1]
    return name.startswith("tests.") and (last.startswith("test_") or last == "conftest")


def defined_tests(path: Path) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The test functions of *path*, at module level or in a Test class."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = list(tree.body)
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        if cls.name.startswith("Test"):
            nodes.extend(cls.body)
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            yield node


def test_every_test_module_is_in_a_tier_folder() -> None:
    """Each test module sits directly in tests/unit, tests/integration or tests/e2e."""
    misplaced = [
        str(path.relative_to(TESTS))
        for path in suite_modules()
        if len(path.relative_to(TESTS).parts) != 2 or path.parent.name not in TIERS
    ]
    assert misplaced == [], f"move each into a tier folder (docs/testing.md): {misplaced}"


def test_no_test_module_imports_another() -> None:
    """Test modules share helpers through tests/support and fixtures through conftest only."""
    found = [
        f"{path.relative_to(TESTS)} imports {name}"
        for path in suite_modules()
        for name in imported(path)
        if is_test_module(name)
    ]
    assert found == []


def test_import_reader_sees_every_form() -> None:
    """The import reader resolves relative imports and names the modules imported from packages."""
    source = "from . import test_x\nfrom ..unit.test_y import z\nimport tests.conftest\n"
    names = [n for n in imported_from(source, "tests.e2e.test_w") if is_test_module(n)]
    assert names == ["tests.e2e.test_x", "tests.unit.test_y", "tests.conftest"]


def test_unit_tests_touch_no_database_socket_or_process() -> None:
    """Unit modules import no database driver, socket or subprocess, and take no such fixture."""
    found = []
    for path in sorted((TESTS / "unit").glob("test_*.py")):
        found += [f"{path.name} imports {n}" for n in imported(path) if n in NOT_PURE_MODULES]
        for test in defined_tests(path):
            taken = {arg.arg for arg in test.args.args} & NOT_PURE_FIXTURES
            found += [f"{path.name}::{test.name} takes {name}" for name in sorted(taken)]
    assert found == [], "such tests belong in tests/integration or tests/e2e"


def test_integration_tests_start_no_process() -> None:
    """Integration modules run everything in-process: no subprocess, no `forwarder` command."""
    found = [
        f"{path.name} imports {name}"
        for path in sorted((TESTS / "integration").glob("test_*.py"))
        for name in imported(path)
        if name in PROCESS_MODULES
    ]
    assert found == [], "such tests belong in tests/e2e"


def test_every_test_has_a_one_sentence_docstring() -> None:
    """Each test says in one sentence what it proves."""
    found = []
    for path in suite_modules():
        for test in defined_tests(path):
            doc = " ".join((ast.get_docstring(test) or "").split())
            if not doc.endswith((".", "!", "?", ")")) or SENTENCE_END.search(doc):
                found.append(f"{path.relative_to(TESTS)}::{test.name}: {doc[:60]!r}")
    assert found == []
