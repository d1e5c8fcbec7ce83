"""`forwarder dead list|replay|purge`: the dead letters, sent again, or deleted."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from forwarder.commands import common, helptext
from forwarder.errors import ConfigError
from forwarder.printable import printable
from forwarder.settings import Settings, parse_duration
from forwarder.store.base import DeadFilter, RowDetail

LIST_LIMIT = 50  # rows `dead list` shows unless told otherwise
REASON_CHARS = 80  # the longest reason `dead list` prints in its table (--json has all of it)


def add(sub: Any, common_options: argparse.ArgumentParser) -> None:
    """Add `dead` and its verbs to the command line."""
    text = helptext.COMMANDS["dead"]
    dead = sub.add_parser(
        "dead",
        help=text.summary,
        description=text.description,
        epilog=(
            "Each verb takes --env-file FILE and --database-url URL; `forwarder dead VERB --help`"
            f" shows its filters.\n\nsettings read:\n  {text.reads}\n\nexample:\n"
            f"  {text.example}\n\nexit codes:\n{text.exits}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dead.set_defaults(parser=dead)
    verbs = dead.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = helptext.command(verbs, "dead list", common_options)
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=dead_list)
    replay = helptext.command(verbs, "dead replay", common_options)
    _filters(replay, ids=True)
    replay.add_argument("--dry-run", action="store_true", help="only count what would replay")
    replay.add_argument("--all", action="store_true", help="replay every dead row")
    replay.set_defaults(func=dead_replay)
    purge = helptext.command(verbs, "dead purge", common_options)
    _filters(purge, ids=True)
    purge.add_argument("--all", action="store_true", help="purge every dead row")
    purge.add_argument("--yes", action="store_true", help="really delete")
    purge.set_defaults(func=dead_purge)


def _filters(parser: argparse.ArgumentParser, *, ids: bool = False) -> None:
    if ids:
        parser.add_argument("ids", nargs="*", type=int, help="row ids")
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        help="last code, e.g. 40002 or malformed (repeatable)",
    )
    parser.add_argument("--event", action="append", default=[], help="event name (repeatable)")
    parser.add_argument(
        "--since", help="dead within this long (2h, 7d) or since a date (2026-11-20)"
    )
    parser.add_argument("--limit", type=int, help="at most this many rows")


def _since(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    try:
        return now - float(parse_duration(value))  # type: ignore[arg-type]
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r}: give a duration like 2h or 7d, or a date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _where(args: argparse.Namespace, now: float, *, default_limit: int | None = None) -> DeadFilter:
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    return DeadFilter(
        codes=tuple(c for code in args.code for c in code.split(",") if c),
        events=tuple(e for event in args.event for e in event.split(",") if e),
        since=_since(args.since, now),
        ids=tuple(getattr(args, "ids", ()) or ()),
        limit=args.limit if args.limit is not None else default_limit,
    )


def _narrowed(where: DeadFilter) -> bool:
    return bool(where.codes or where.events or where.ids or where.since is not None)


def dead_list(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder dead list`: the dead rows with their reasons."""
    where = _where(args, time.time(), default_limit=LIST_LIMIT)
    rows = common.with_store(settings, lambda store: store.dead_rows(where))
    if args.json:
        sys.stdout.write(
            orjson.dumps([common.row_json(r) for r in rows], option=orjson.OPT_INDENT_2).decode()
            + "\n"
        )
        return common.EXIT_OK
    if not rows:
        print("no dead rows match")
        return common.EXIT_OK
    table = [["ID", "EVENT_ID", "EVENT", "CODE", "ATTEMPTS", "DEAD AT", "REQUEST_ID", "REASON"]]
    for r in rows:
        reason = common.cut(r.last_error or "", REASON_CHARS)
        table.append(
            [
                str(r.id),
                r.event_id,
                r.event,
                r.last_code or "-",
                str(r.attempts),
                common.when(r.updated_at),
                r.request_id or "-",
                reason,
            ]
        )
    print(common.table(table))
    if len(rows) == where.limit:
        print(f"(first {where.limit}; --limit N for more)")
    return common.EXIT_OK


def dead_replay(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder dead replay`: matching dead rows back to pending, failure kept on record."""
    now = time.time()
    where = _where(args, now)
    if not _narrowed(where) and not args.all:
        raise ConfigError("dead replay needs row ids, a filter (--code, --event, --since) or --all")
    if args.dry_run:
        rows = common.with_store(settings, lambda store: store.dead_rows(where))
        print(f"would replay {len(rows)} dead row(s)")
        for code, count in _by_code(rows).items():
            print(f"  {printable(code)}: {count}")
        return common.EXIT_OK
    replayed = common.with_store(settings, lambda store: store.replay_dead(where, now))
    print(f"replayed {replayed} dead row(s); they are pending again")
    return common.EXIT_OK


def dead_purge(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder dead purge --yes`: delete matching dead rows."""
    where = _where(args, time.time())
    if not _narrowed(where) and not args.all:
        raise ConfigError("dead purge needs row ids, a filter (--code, --event, --since) or --all")
    if not args.yes:
        rows = common.with_store(settings, lambda store: store.dead_rows(where))
        print(
            f"forwarder: refusing to delete {len(rows)} dead row(s) without --yes", file=sys.stderr
        )
        return common.EXIT_CONFIG
    purged = common.with_store(settings, lambda store: store.purge_dead(where))
    print(f"purged {purged} dead row(s)")
    return common.EXIT_OK


def _by_code(rows: list[RowDetail]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.last_code or "-"] = counts.get(row.last_code or "-", 0) + 1
    return counts
