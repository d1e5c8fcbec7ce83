"""`forwarder inspect EVENT_ID`: one event's life, and the event as sent, identifiers hashed."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import orjson

from forwarder import startup
from forwarder.commands import common, helptext
from forwarder.destination import Refused
from forwarder.events import OutboxRow
from forwarder.printable import printable
from forwarder.settings import Settings
from forwarder.store.base import RowDetail
from forwarder.tiktok.build import build


def add(sub: Any, common_options: argparse.ArgumentParser) -> None:
    """Add `inspect` to the command line."""
    inspect = helptext.command(sub, "inspect", common_options)
    inspect.add_argument("event_id")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=inspect_event)


def _default_pixel(settings: Settings) -> str:
    """How `inspect` names a row's empty pixel_code: the default pixel, as far as it knows."""
    pixel = settings.tiktok_pixel_code
    return f"(default: {pixel})" if pixel else "(default: TIKTOK_PIXEL_CODE, not set here)"


def _hashed_view(row: RowDetail, settings: Settings) -> dict[str, Any] | str:
    """The row's event as TikTok gets it (identifiers hashed), or why it cannot be built."""
    options = startup.build_options(settings)
    outbox = OutboxRow(
        row.id,
        row.event_id,
        row.event,
        row.event_time,
        row.payload,
        row.pixel_code,
        row.event_source,
        row.test_event_code,
        row.attempts,
        row.created_at,
        row.payload_format,
    )
    # The event's body does not depend on the pixel (a placeholder stands in when none is
    # set here) nor on its age (an old event is still shown).
    shown = dataclasses.replace(
        options, max_age_s=1e12, default_pixel=options.default_pixel or "DEFAULT"
    )
    built = build(outbox, shown, time.time())
    if isinstance(built, Refused):
        return f"not shown ({built.code}): {built.reason}"
    return built.event


def inspect_event(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder inspect EVENT_ID`: every row with that event_id, and its history."""
    found = common.with_store(settings, lambda store: store.find(args.event_id))
    if not found:
        print(f"forwarder: no row with event_id {printable(args.event_id)}", file=sys.stderr)
        return common.EXIT_FAILURE
    documents = []
    for row, replays in found:
        document = common.row_json(row)
        document["event_time"] = row.event_time
        document["payload_format"] = row.payload_format
        document["next_attempt_at"] = row.next_attempt_at
        document["event_as_sent"] = _hashed_view(row, settings)
        document["replays"] = [
            {
                "replayed_at": r.replayed_at,
                "attempts": r.attempts,
                "code": r.last_code,
                "reason": r.last_error,
                "request_id": r.request_id,
                "dead_at": r.dead_at,
            }
            for r in replays
        ]
        documents.append(document)
    if args.json:
        sys.stdout.write(orjson.dumps(documents, option=orjson.OPT_INDENT_2).decode() + "\n")
        return common.EXIT_OK
    for document in documents:
        print(_inspect_text(document, _default_pixel(settings)))
    return common.EXIT_OK


def _inspect_text(document: dict[str, Any], default_pixel: str) -> str:
    """One row of `inspect` as text, every value from the row escaped (printable)."""
    p = printable
    lines = [
        f"row {document['id']}: {p(document['event'])} '{p(document['event_id'])}' "
        f"pixel {p(document['pixel_code'] or default_pixel)}",
        f"  status      {p(document['status'])}  attempts {document['attempts']}",
        f"  created     {common.when(document['created_at'])}   event_time "
        f"{_event_time(document['event_time'])}",
        f"  updated     {common.when(document['updated_at'])}   "
        f"sent {common.when(document['sent_at'])}",
    ]
    if document["payload_format"] is not None:  # NULL, the usual, is TikTok's shape
        lines.append(f"  format      {p(document['payload_format'])}")
    if document["status"] == "pending":
        due = document["next_attempt_at"]
        lines.append(f"  next try    {common.when(due) if due else 'now'}")
    code, request_id = document["last_code"] or "-", document["request_id"] or "-"
    lines.append(f"  last code   {p(code)}   request_id {p(request_id)}")
    if document["reason"]:
        lines.append(f"  reason      {p(document['reason'])}")
    for replay in document["replays"]:
        lines.append(
            f"  replayed    {common.when(replay['replayed_at'])}: was dead since "
            f"{common.when(replay['dead_at'])} with {p(replay['code'])} after {replay['attempts']} "
            f"attempt(s): {p(replay['reason'])}"
        )
    sent = document["event_as_sent"]
    lines.append("  event (identifiers hashed):")
    if isinstance(sent, str):
        lines.append("    " + p(sent))
    else:
        # The JSON's own line breaks stay; JSON escapes those inside a value, and p() the
        # characters it leaves raw (C1 controls, bidi overrides, line separators).
        shown = orjson.dumps(sent, option=orjson.OPT_INDENT_2).decode()
        lines.extend("    " + p(line) for line in shown.split("\n"))
    return "\n".join(lines)


def _event_time(value: object) -> str:
    """An event_time as a date; any other value the application wrote, escaped."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return common.when(value)
        except (OverflowError, OSError, ValueError):
            pass
    return printable(value)
