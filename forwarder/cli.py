"""The ``forwarder`` command: run, migrate, enqueue, status (and tools.py's dead, inspect, check).

Exit codes: 0 done; 1 a runtime failure (database unreachable, unexpected error, a failed
check); 2 a bad setting or bad usage (also `dead purge` without --yes); 3 ``run --once`` stopped
with the destination paused (credentials); 4 the event was refused (`enqueue`, `check --payload`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from forwarder import __version__, app, lint, logs, payload, tools
from forwarder.errors import ConfigError, ForwarderError
from forwarder.events import OutboxRow
from forwarder.settings import Settings, load_settings, store_options
from forwarder.store import open_store
from forwarder.store.base import NewEvent, Summary

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_PAUSED, EXIT_REFUSED = 0, 1, 2, 3, 4

COLUMNS = lint.COLUMNS  # the outbox columns an event is given as


def parser() -> argparse.ArgumentParser:
    """Build the argument parser."""
    top = argparse.ArgumentParser(
        prog="forwarder",
        description="Deliver the tiktok_outbox table to TikTok's Events API.",
        epilog="Settings come from the environment and ./.env; see .env.example.",
    )
    top.add_argument("--version", action="version", version=f"forwarder {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon (migrates first)")
    run.add_argument("--once", action="store_true", help="deliver everything due, then exit")
    run.add_argument("--no-migrate", action="store_true", help="do not migrate on start")
    sub.add_parser("migrate", help="create or upgrade the outbox schema (idempotent)")
    enqueue = sub.add_parser("enqueue", help="insert one event given as JSON; prints its row id")
    enqueue.add_argument("file", nargs="?", default="-", help="a JSON file, or - for stdin")
    status = sub.add_parser("status", help="show the outbox and the destination")
    status.add_argument("--json", action="store_true", help="print JSON")
    run.set_defaults(func=_run)
    sub.choices["migrate"].set_defaults(func=_migrate)
    enqueue.set_defaults(func=_enqueue)
    status.set_defaults(func=_status)
    tools.add_parsers(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        logs.configure(settings.log_format, settings.log_level)
        command: Callable[[Settings, argparse.Namespace], int] = args.func
        return command(settings, args)
    except ConfigError as error:
        print(f"forwarder: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except ForwarderError as error:
        print(f"forwarder: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


def _run(settings: Settings, args: argparse.Namespace) -> int:
    totals = asyncio.run(app.run(settings, once=args.once, migrate=not args.no_migrate))
    if args.once and totals.paused_reason:
        print(
            f"forwarder: delivery is paused ({totals.paused_reason}): "
            "check TIKTOK_ACCESS_TOKEN and the pixel's permissions",
            file=sys.stderr,
        )
        return EXIT_PAUSED
    return EXIT_OK


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> list[str]:
        store = await open_store(settings.database_url, **store_options(settings))
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = asyncio.run(go())
    print(f"applied {', '.join(applied)}" if applied else "up to date")
    return EXIT_OK


def _read_event(source: str) -> NewEvent:
    """Parse and check one event given as the outbox columns in a JSON object."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()  # noqa: SIM115
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
    if isinstance(event_time, float):
        event_time = int(event_time)  # the builder truncates a fraction of a second too
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
        print(f"forwarder: refused: {error}", file=sys.stderr)
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
    options = app.worker_config(settings).build
    checked = payload.build(row, options, now)
    if isinstance(checked, payload.Refused):
        print(f"forwarder: refused: {checked.reason}", file=sys.stderr)
        return EXIT_REFUSED

    async def go() -> tuple[int, bool]:
        store = await open_store(settings.database_url, **store_options(settings))
        try:
            await store.migrate()
            return await store.insert(event)
        finally:
            await store.close()

    row_id, new = asyncio.run(go())
    print(row_id)
    if not new:
        print(
            "forwarder: already in the outbox (same pixel_code, event, event_id)", file=sys.stderr
        )
    return EXIT_OK


def _status(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> Summary:
        store = await open_store(settings.database_url, **store_options(settings))
        try:
            await store.ping()
            return await store.summary(time.time())
        finally:
            await store.close()

    summary = asyncio.run(go())
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
    counts = "  ".join(f"{name} {count:,}" for name, count in summary.counts.items())
    codes = ", ".join(f"{code} x{n}" for code, n in summary.recent_codes.items()) or "none"
    if destination.get("paused"):
        since = destination.get("since")
        ago = _age(time.time() - since) if isinstance(since, (int, float)) else "?"
        state = f"PAUSED ({destination.get('reason')}, {ago} ago): {destination.get('message')}"
    else:
        state = "delivering"
    return "\n".join(
        [
            f"outbox          {counts}",
            f"oldest pending  {_age(summary.oldest_pending_age_s)}",
            f"next due in     {_age(summary.next_due_in_s)}",
            f"destination     {state}",
            f"failing codes   {codes}  (pending or dead rows, last 24h)",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
