"""The repository's own files: where they are, and readers for the env and unit files."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "forwarder.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every assignment of a unit file, by key, in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def example_lines(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The assignments of an env file: (set, commented out as `# NAME=value`)."""
    return example_lines_from(path.read_text())


def example_lines_from(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The assignments of an env file's *text*: (set, commented out as `# NAME=value`)."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]+)=(.*)", line)
        if match:
            (commented if match.group(1) else active)[match.group(2)] = match.group(3)
    return active, commented
