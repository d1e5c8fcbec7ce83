"""The limits the house keeps, checked by `make lint`: module, class and function sizes, and no
SQL written inside Python.

Usage: python scripts/check_house.py [PACKAGE_DIR ...]   (default: forwarder)
Prints one line per breach and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

MODULE_MAX = 400  # lines in a module
CLASS_MAX = 250  # lines in a class
FUNCTION_MAX = 60  # lines in a function or method
#: A string that starts like a SQL statement (in capitals, as the project writes SQL, so prose
#: such as "select a pixel" passes): such text belongs in a named .sql file.
SQL = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS|CREATE\s+"
    r"(TABLE|INDEX|UNIQUE|FUNCTION|TRIGGER)|ALTER\s+TABLE|DROP\s+TABLE|PRAGMA)\b"
)


def breaches(path: Path) -> list[str]:
    """Every limit *path* breaks, one line each."""
    text = path.read_text(encoding="utf-8")
    found = []
    lines = len(text.splitlines())
    if lines > MODULE_MAX:
        found.append(f"{path}: module of {lines} lines (at most {MODULE_MAX})")
    tree = ast.parse(text, str(path))
    for node in ast.walk(tree):
        size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
        if isinstance(node, ast.ClassDef) and size > CLASS_MAX:
            found.append(
                f"{path}:{node.lineno}: class {node.name} of {size} lines (at most {CLASS_MAX})"
            )
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and size > FUNCTION_MAX:
            limit = f"(at most {FUNCTION_MAX})"
            found.append(f"{path}:{node.lineno}: function {node.name} of {size} lines {limit}")
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value)
        ):
            found.append(f"{path}:{node.lineno}: SQL in Python: put it in a named .sql file")
    return found


def main(argv: list[str]) -> int:
    """Check every module under the given folders; print breaches; 1 if any."""
    roots = [Path(arg) for arg in argv] or [Path("forwarder")]
    found = [
        line for root in roots for path in sorted(root.rglob("*.py")) for line in breaches(path)
    ]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
