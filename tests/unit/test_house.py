"""The house's size limits and its no-SQL-in-Python rule, as `make lint` checks them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.support.repo import ROOT

SCRIPT = ROOT / "scripts" / "check_house.py"


def checker() -> ModuleType:
    """Load scripts/check_house.py as a module."""
    spec = importlib.util.spec_from_file_location("check_house", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_house"] = module
    spec.loader.exec_module(module)
    return module


def test_a_long_function_a_long_module_and_sql_are_named(tmp_path: Path) -> None:
    """A 61-line function, a 401-line module and a SELECT in a string are each reported."""
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    source = f'def long():\n{body}\n\nQUERY = "SELECT id FROM t"\n' + "#\n" * 338
    module = tmp_path / "big.py"
    module.write_text(source)
    found = checker().breaches(module)
    assert any("module of 401 lines" in line for line in found)
    assert any("function long of 61 lines" in line for line in found)
    assert any(":63: SQL in Python" in line for line in found)


def test_code_within_the_limits_passes(tmp_path: Path) -> None:
    """A 60-line function and prose that merely starts with "select" are fine."""
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    module = tmp_path / "fine.py"
    module.write_text(f'def ok():\n{body}\n\nNOTE = "select a pixel first"\n')
    assert checker().breaches(module) == []
    assert checker().main([str(tmp_path)]) == 0
