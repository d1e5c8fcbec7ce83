"""`forwarder migrate`: create or upgrade the outbox schema (the one command that creates a
database file)."""

from __future__ import annotations

import argparse
from typing import Any

from forwarder.commands import common, helptext
from forwarder.settings import Settings


def add(sub: Any, common_options: argparse.ArgumentParser) -> None:
    """Add `migrate` to the command line."""
    helptext.command(sub, "migrate", common_options).set_defaults(func=migrate)


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the migrations not yet applied; print them, or `up to date`."""
    applied = common.with_store(
        settings, lambda store: store.migrate(), create=True, migrated=False
    )
    print(f"applied {', '.join(applied)}" if applied else "up to date")
    return common.EXIT_OK
