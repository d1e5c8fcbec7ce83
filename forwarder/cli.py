"""The ``forwarder`` command: run, migrate, enqueue, status (and tools.py's dead, inspect, check).

Exit codes: 0 done; 1 a runtime failure (database unreachable, unexpected error, a failed
check); 2 a bad setting or bad usage (also `dead purge` without --yes); 3 ``run --once`` stopped
with the destination paused (credentials); 4 the event was refused (`enqueue`, `check --payload`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from forwarder import __version__, app, helptext, lint, logs, payload, startup, tools
from forwarder.errors import ConfigError, ForwarderError
from forwarder.events import OutboxRow
from forwarder.pacing import STORM_PREFIX
from forwarder.printable import printable
from forwarder.settings import Settings, load_settings
from forwarder.store.base import NewEvent, Summary

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_PAUSED, EXIT_REFUSED = 0, 1, 2, 3, 4

COLUMNS = lint.COLUMNS  # the outbox columns an event is given as


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
    common = helptext.common_options()
    run = helptext.command(sub, "run", common)
    run.add_argument("--once", action="store_true", help="deliver everything due, then exit")
    run.add_argument("--no-migrate", action="store_true", help="do not migrate on start")
    run.set_defaults(func=_run)
    helptext.command(sub, "migrate", common).set_defaults(func=_migrate)
    enqueue = helptext.command(sub, "enqueue", common)
    enqueue.add_argument("file", nargs="?", default="-", help="a JSON file, or - for stdin")
    enqueue.set_defaults(func=_enqueue)
    status = helptext.command(sub, "status", common)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)
    tools.add_parsers(sub, common)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    args, extra = parser().parse_known_args(argv)
    if extra:
        # The command's own usage line, not the top level's: the unknown option was given to it.
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = settings_from(args)
        logs.configure(settings.log_format, settings.log_level)
        command: Callable[[Settings, argparse.Namespace], int] = args.func
        return command(settings, args)
    except ConfigError as error:
        print(f"forwarder: {printable(error)}", file=sys.stderr)
        return EXIT_CONFIG
    except ForwarderError as error:
        print(f"forwarder: {printable(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`forwarder inspect ... | head`): stop quietly, as Unix tools do;
        # stdout goes to /dev/null so that flushing it at exit raises nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings for a command: ``--env-file`` (default ./.env, if there) and
    ``--database-url`` over the environment."""
    env_file: str | None = args.env_file
    if env_file is None:
        env_file = ".env"
    elif not Path(env_file).exists():
        raise ConfigError(f"--env-file {env_file}: no such file")
    return load_settings(env_file, database_url=args.database_url)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    # SIGHUP reads the token again from the same places: the same --env-file, the environment.
    totals = asyncio.run(
        app.run(
            settings,
            once=args.once,
            migrate=not args.no_migrate,
            token=lambda: settings_from(args).access_token(),
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
        return EXIT_PAUSED
    return EXIT_OK


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = tools.with_store(settings, lambda store: store.migrate(), create=True, migrated=False)
    print(f"applied {', '.join(applied)}" if applied else "up to date")
    return EXIT_OK


def _read_event(source: str) -> NewEvent:
    """Parse and check one event given as the outbox columns in a JSON object."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {source}: {error.strerror}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"the input is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError("the input must be a JSON object with the outbox columns")
    unknown = sorted(set(data) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}")
    body = data.get("payload", {})
    if isinstance(body, dict):
        body = orjson.dumps(body).decode()
    for name in ("event_id", "event", "pixel_code", "event_source", "test_event_code"):
        if name in data and not isinstance(data[name], str):
            raise ValueError(f"{name} must be a string")
    event_time = data.get("event_time")
    if event_time is not None and (isinstance(event_time, bool) or not isinstance(event_time, int)):
        raise ValueError("event_time must be an integer (Unix seconds)")
    return NewEvent(
        event_id=data.get("event_id", ""),
        event=data.get("event", ""),
        event_time=event_time,
        payload=body if isinstance(body, str) else orjson.dumps(body).decode(),
        pixel_code=data.get("pixel_code", ""),
        event_source=data.get("event_source", "web"),
        test_event_code=data.get("test_event_code", ""),
    )


def _enqueue(settings: Settings, args: argparse.Namespace) -> int:
    try:
        event = _read_event(args.file)
    except ValueError as error:
        print(f"forwarder: refused: {printable(error)}", file=sys.stderr)
        return EXIT_REFUSED
    now = time.time()
    # The daemon's own validation, so what enqueue accepts the daemon will send.
    row = OutboxRow(
        0,
        event.event_id,
        event.event,
        event.event_time,
        event.payload,
        event.pixel_code,
        event.event_source,
        event.test_event_code,
        0,
        now,
    )
    checked = payload.build(row, startup.build_options(settings), now)
    if isinstance(checked, payload.Refused):
        print(f"forwarder: refused ({checked.code}): {printable(checked.reason)}", file=sys.stderr)
        return EXIT_REFUSED
    row_id, new = tools.with_store(settings, lambda store: store.insert(event))
    print(row_id)
    if not new:
        print(
            "forwarder: already in the outbox (same pixel_code, event, event_id)", file=sys.stderr
        )
    return EXIT_OK


def _status(settings: Settings, args: argparse.Namespace) -> int:
    summary: Summary = tools.with_store(settings, lambda store: store.summary(time.time()))
    destination: dict[str, Any] = summary.state.get("destination") or {"paused": False}
    if args.json:
        document = {
            "counts": summary.counts,
            "oldest_pending_age_s": summary.oldest_pending_age_s,
            "next_due_in_s": summary.next_due_in_s,
            "recent_codes": summary.recent_codes,
            "destination": destination,
        }
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    print(_format_status(summary, destination))
    return EXIT_OK


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _format_status(summary: Summary, destination: dict[str, Any]) -> str:
    counts = "  ".join(f"{printable(name)} {count:,}" for name, count in summary.counts.items())
    codes = (
        ", ".join(f"{printable(code)} x{n}" for code, n in summary.recent_codes.items()) or "none"
    )
    now = time.time()
    if destination.get("paused"):
        ago = _ago(destination.get("since"), now)
        reason, message = destination.get("reason"), destination.get("message")
        state = f"PAUSED ({printable(reason)}, {ago} ago): {printable(message)}"
    else:
        state = "delivering"
    lines = [
        f"outbox          {counts}",
        f"oldest pending  {_age(summary.oldest_pending_age_s)}",
        f"next due in     {_age(summary.next_due_in_s)}",
        f"destination     {state}",
    ]
    held = destination.get("held_pixels")
    for pixel, hold in held.items() if isinstance(held, dict) else ():
        detail = hold if isinstance(hold, dict) else {}
        lines.append(
            f"held pixel      {printable(pixel)} ({printable(detail.get('code'))}, "
            f"{_ago(detail.get('since'), now)} ago): {printable(detail.get('message'))}"
        )
    lines.append(f"failing codes   {codes}  (pending or dead rows, last 24h)")
    return "\n".join(lines)


def _ago(since: object, now: float) -> str:
    return _age(now - since) if isinstance(since, (int, float)) else "?"


if __name__ == "__main__":
    raise SystemExit(main())
