"""`forwarder status`: the outbox by status, the lag, and the destination's state."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from forwarder.commands import common, helptext
from forwarder.printable import printable
from forwarder.settings import Settings
from forwarder.store.base import Summary


def add(sub: Any, common_options: argparse.ArgumentParser) -> None:
    """Add `status` to the command line."""
    status = helptext.command(sub, "status", common_options)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=show_status)


def show_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the outbox's counts, lag and destination state (text or JSON)."""
    summary: Summary = common.with_store(settings, lambda store: store.summary(time.time()))
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
        return common.EXIT_OK
    print(_format_status(summary, destination))
    return common.EXIT_OK


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
