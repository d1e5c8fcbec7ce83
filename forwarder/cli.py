"""The ``forwarder`` command line: the entry point that assembles the commands and runs one.

Exit codes: 0 done; 1 a runtime failure (database unreachable, unexpected error, a failed
check); 2 a bad setting or bad usage (also `dead purge` without --yes); 3 ``run --once`` stopped
with the destination paused; 4 the event was refused (`enqueue`, `check --payload`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from forwarder import __version__, logs
from forwarder.commands import check, common, dead, enqueue, helptext, inspect, migrate, run, status
from forwarder.errors import ConfigError, ForwarderError
from forwarder.printable import printable
from forwarder.settings import Settings

#: The command groups, in the order `forwarder --help` lists them.
GROUPS = (run, migrate, enqueue, status, dead, inspect, check)


def parser() -> argparse.ArgumentParser:
    """Build the argument parser."""
    top = argparse.ArgumentParser(
        prog="forwarder",
        description="Deliver the tiktok_outbox table to TikTok's Events API.",
        epilog=helptext.TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"forwarder {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common_options = helptext.common_options()
    for group in GROUPS:
        group.add(sub, common_options)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    args, extra = parser().parse_known_args(argv)
    if extra:
        # The command's own usage line, not the top level's: the unknown option was given to it.
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = common.settings_from(args)
        logs.configure(settings.log_format, settings.log_level)
        command: Callable[[Settings, argparse.Namespace], int] = args.func
        return command(settings, args)
    except ConfigError as error:
        print(f"forwarder: {printable(error)}", file=sys.stderr)
        return common.EXIT_CONFIG
    except ForwarderError as error:
        print(f"forwarder: {printable(error)}", file=sys.stderr)
        return common.EXIT_FAILURE
    except KeyboardInterrupt:
        return common.EXIT_OK
    except BrokenPipeError:
        # The reader went away (`forwarder inspect ... | head`): stop quietly, as Unix tools do;
        # stdout goes to /dev/null so that flushing it at exit raises nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return common.EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
