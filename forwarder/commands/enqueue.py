"""`forwarder enqueue`: insert one event given as JSON, checked as the daemon checks rows."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from forwarder import startup
from forwarder.commands import common, helptext
from forwarder.destination import Refused
from forwarder.errors import ConfigError
from forwarder.events import OutboxRow
from forwarder.printable import printable
from forwarder.settings import Settings
from forwarder.store.base import NewEvent
from forwarder.tiktok.build import build
from forwarder.tiktok.build_row import COLUMNS
from forwarder.tiktok.meta_capi import FORMATS


def add(sub: Any, common_options: argparse.ArgumentParser) -> None:
    """Add `enqueue` to the command line."""
    enqueue = helptext.command(sub, "enqueue", common_options)
    enqueue.add_argument("file", nargs="?", default="-", help="a JSON file, or - for stdin")
    enqueue.add_argument(
        "--payload-format",
        choices=FORMATS,
        help="the payload's shape: tiktok (the default) or meta_capi (one Meta server event, "
        "converted); sets the payload_format column",
    )
    enqueue.set_defaults(func=enqueue_event)


def _read_event(source: str, payload_format: str | None) -> NewEvent:
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
    given = data.get("payload_format")
    if given is not None and not isinstance(given, str):
        raise ValueError("payload_format must be a string or null")
    if payload_format is not None and given is not None and given != payload_format:
        raise ValueError("payload_format in the input differs from --payload-format")
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
        payload_format=payload_format or given,
    )


def enqueue_event(settings: Settings, args: argparse.Namespace) -> int:
    """Insert the event given, unless the daemon would refuse it."""
    try:
        event = _read_event(args.file, args.payload_format)
    except ValueError as error:
        print(f"forwarder: refused: {printable(error)}", file=sys.stderr)
        return common.EXIT_REFUSED
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
        event.payload_format,
    )
    checked = build(row, startup.build_options(settings), now)
    if isinstance(checked, Refused):
        print(f"forwarder: refused: {printable(checked.reason)}", file=sys.stderr)
        return common.EXIT_REFUSED
    row_id, new = common.with_store(settings, lambda store: store.insert(event))
    print(row_id)
    if not new:
        print(
            "forwarder: already in the outbox (same pixel_code, event, event_id)", file=sys.stderr
        )
    return common.EXIT_OK
