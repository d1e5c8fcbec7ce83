"""`forwarder run`: the daemon; this module is the entry point of the composition root."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from forwarder import app
from forwarder.commands import common, helptext
from forwarder.pacing import STORM_PREFIX
from forwarder.printable import printable
from forwarder.settings import Settings


def add(sub: Any, common_options: argparse.ArgumentParser) -> None:
    """Add `run` to the command line."""
    run = helptext.command(sub, "run", common_options)
    run.add_argument("--once", action="store_true", help="deliver everything due, then exit")
    run.add_argument("--no-migrate", action="store_true", help="do not migrate on start")
    run.set_defaults(func=run_daemon)


def run_daemon(settings: Settings, args: argparse.Namespace) -> int:
    """Run the daemon until stopped (or, with --once, until nothing is due)."""
    # SIGHUP reads the token again from the same places: the same --env-file, the environment.
    totals = asyncio.run(
        app.run(
            settings,
            once=args.once,
            migrate=not args.no_migrate,
            token=lambda: common.settings_from(args).access_token(),
        )
    )
    if args.once and totals.paused_reason:
        hint = (
            "TikTok accepted none of the last requests; `forwarder status` shows its message"
            if totals.paused_reason.startswith(STORM_PREFIX)
            else "check TIKTOK_ACCESS_TOKEN and the pixel's permissions"
        )
        reason = printable(totals.paused_reason)
        print(f"forwarder: delivery is paused ({reason}): {hint}", file=sys.stderr)
        return common.EXIT_PAUSED
    return common.EXIT_OK
