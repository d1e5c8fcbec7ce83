"""The operator's and marketer's commands: dead letters, inspect, check."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import orjson

from forwarder import app, payload, shapes
from forwarder.classify import Verdict, classify, classify_transport
from forwarder.errors import ConfigError, TransportError
from forwarder.events import OutboxRow
from forwarder.migrate import load
from forwarder.settings import Settings, parse_duration, store_options
from forwarder.store import open_store
from forwarder.store.base import DeadFilter, OutboxStore, RowDetail
from forwarder.tiktok import TikTokClient

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 4
LIST_LIMIT = 50  # rows `dead list` shows unless told otherwise

_T = TypeVar("_T")


def add_parsers(sub: Any) -> None:
    """Add `dead`, `inspect` and `check` to the command line."""
    dead = sub.add_parser("dead", help="list, replay or purge dead letters")
    verbs = dead.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="show dead rows, newest failures last")
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=dead_list)
    replay = verbs.add_parser("replay", help="return dead rows to pending (keeps the failure)")
    _filters(replay, ids=True)
    replay.add_argument("--dry-run", action="store_true", help="only count what would replay")
    replay.add_argument("--all", action="store_true", help="replay every dead row")
    replay.set_defaults(func=dead_replay)
    purge = verbs.add_parser("purge", help="delete dead rows")
    _filters(purge, ids=True)
    purge.add_argument("--all", action="store_true", help="purge every dead row")
    purge.add_argument("--yes", action="store_true", help="really delete")
    purge.set_defaults(func=dead_purge)

    inspect = sub.add_parser("inspect", help="one event's life, identifiers shown hashed")
    inspect.add_argument("event_id")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=inspect_event)

    check = sub.add_parser("check", help="check settings and database; lint a payload")
    check.add_argument(
        "--send-test",
        action="store_true",
        help="send one Test Event with TIKTOK_TEST_EVENT_CODE and show the answer",
    )
    check.add_argument(
        "--payload",
        metavar="FILE",
        help="lint an event: an outbox row, a TikTok event or a whole /event/track/ body "
        "(JSON; - for stdin)",
    )
    check.set_defaults(func=check_command)


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


def with_store(settings: Settings, work: Callable[[OutboxStore], Awaitable[_T]]) -> _T:
    """Open the store, run *work* on it, close it."""

    async def go() -> _T:
        store = await open_store(settings.database_url, **store_options(settings))
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _row_json(row: RowDetail) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "event": row.event,
        "pixel_code": row.pixel_code,
        "status": row.status,
        "attempts": row.attempts,
        "last_code": row.last_code,
        "reason": row.last_error,
        "request_id": row.request_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "sent_at": row.sent_at,
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def dead_list(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder dead list`: the dead rows with their reasons."""
    where = _where(args, time.time(), default_limit=LIST_LIMIT)
    rows = with_store(settings, lambda store: store.dead_rows(where))
    if args.json:
        sys.stdout.write(
            orjson.dumps([_row_json(r) for r in rows], option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        return EXIT_OK
    if not rows:
        print("no dead rows match")
        return EXIT_OK
    table = [["ID", "EVENT_ID", "EVENT", "CODE", "ATTEMPTS", "DEAD AT", "REQUEST_ID", "REASON"]]
    for r in rows:
        reason = (r.last_error or "")[:80]
        table.append(
            [
                str(r.id),
                r.event_id,
                r.event,
                r.last_code or "-",
                str(r.attempts),
                _when(r.updated_at),
                r.request_id or "-",
                reason,
            ]
        )
    print(_table(table))
    if len(rows) == where.limit:
        print(f"(first {where.limit}; --limit N for more)")
    return EXIT_OK


def dead_replay(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder dead replay`: matching dead rows back to pending, failure kept on record."""
    now = time.time()
    where = _where(args, now)
    if not _narrowed(where) and not args.all:
        raise ConfigError("dead replay needs row ids, a filter (--code, --event, --since) or --all")
    if args.dry_run:
        rows = with_store(settings, lambda store: store.dead_rows(where))
        print(f"would replay {len(rows)} dead row(s)")
        for code, count in _by_code(rows).items():
            print(f"  {code}: {count}")
        return EXIT_OK
    replayed = with_store(settings, lambda store: store.replay_dead(where, now))
    print(f"replayed {replayed} dead row(s); they are pending again")
    return EXIT_OK


def dead_purge(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder dead purge --yes`: delete matching dead rows."""
    where = _where(args, time.time())
    if not _narrowed(where) and not args.all:
        raise ConfigError("dead purge needs row ids, a filter (--code, --event, --since) or --all")
    if not args.yes:
        rows = with_store(settings, lambda store: store.dead_rows(where))
        print(
            f"forwarder: refusing to delete {len(rows)} dead row(s) without --yes", file=sys.stderr
        )
        return EXIT_USAGE
    purged = with_store(settings, lambda store: store.purge_dead(where))
    print(f"purged {purged} dead row(s)")
    return EXIT_OK


def _by_code(rows: list[RowDetail]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.last_code or "-"] = counts.get(row.last_code or "-", 0) + 1
    return counts


def _hashed_view(row: RowDetail, settings: Settings) -> dict[str, Any] | str:
    """The row's event as TikTok gets it (identifiers hashed), or why it cannot be built."""
    options = app.worker_config(settings).build
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
    )
    # max_age is ignored here: an old event is still shown.
    built = payload.build(
        outbox, options.__class__(**{**_fields(options), "max_age_s": 1e12}), time.time()
    )
    if isinstance(built, payload.Refused):
        return f"not shown ({built.code}): {built.reason}"
    return built.event


def _fields(options: payload.BuildOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__slots__}


def inspect_event(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder inspect EVENT_ID`: every row with that event_id, and its history."""
    found = with_store(settings, lambda store: store.find(args.event_id))
    if not found:
        print(f"forwarder: no row with event_id {args.event_id!r}", file=sys.stderr)
        return EXIT_FAILURE
    documents = []
    for row, replays in found:
        document = _row_json(row)
        document["event_time"] = row.event_time
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
        return EXIT_OK
    for document in documents:
        print(
            f"row {document['id']}: {document['event']} {document['event_id']!r} "
            f"pixel {document['pixel_code'] or '(default)'}"
        )
        print(f"  status      {document['status']}  attempts {document['attempts']}")
        print(
            f"  created     {_when(document['created_at'])}   event_time "
            f"{_when(document['event_time']) if document['event_time'] else '-'}"
        )
        print(f"  updated     {_when(document['updated_at'])}   sent {_when(document['sent_at'])}")
        if document["status"] == "pending":
            due = document["next_attempt_at"]
            print(f"  next try    {_when(due) if due else 'now'}")
        code, request_id = document["last_code"] or "-", document["request_id"] or "-"
        print(f"  last code   {code}   request_id {request_id}")
        if document["reason"]:
            print(f"  reason      {document['reason']}")
        for replay in document["replays"]:
            print(
                f"  replayed    {_when(replay['replayed_at'])}: was dead since "
                f"{_when(replay['dead_at'])} with {replay['code']} after {replay['attempts']} "
                f"attempt(s): {replay['reason']}"
            )
        sent = document["event_as_sent"]
        shown = (
            sent
            if isinstance(sent, str)
            else orjson.dumps(sent, option=orjson.OPT_INDENT_2).decode()
        )
        print("  event (identifiers hashed):")
        print("    " + shown.replace("\n", "\n    "))
    return EXIT_OK


def check_command(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder check`: settings, token, database; optionally a test event or a payload lint."""
    if args.payload:
        return _lint_payload(settings, args.payload)
    failed = False
    print(
        f"settings      ok (pixel {settings.tiktok_pixel_code or 'NOT SET'}, "
        f"API {settings.tiktok_api_url})"
    )
    try:
        settings.access_token()
        print("token         set")
    except ConfigError as error:
        print(f"token         MISSING: {error}")
        failed = True

    async def database(store: OutboxStore) -> list[str]:
        return await store.applied_migrations()

    applied = with_store(settings, database)
    dialect = "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"
    wanted = [m.name for m in load(dialect)]
    missing = [name for name in wanted if name not in applied]
    if missing:
        print(
            f"database      reachable, NOT MIGRATED ({', '.join(missing)}): run forwarder migrate"
        )
        failed = True
    else:
        print(f"database      ok, migrated ({', '.join(applied)})")
    if args.send_test and not failed:
        failed = not asyncio.run(_send_test(settings))
    return EXIT_FAILURE if failed else EXIT_OK


async def _send_test(settings: Settings) -> bool:
    """Send one Test Event and print TikTok's answer; return whether it was accepted."""
    code = settings.tiktok_test_event_code
    if not code:
        print("test event    NOT SENT: set TIKTOK_TEST_EVENT_CODE (Events Manager > Test Events)")
        return False
    now = time.time()
    event = {
        "event": "ViewContent",
        "event_time": int(now),
        "event_id": f"forwarder-check-{int(now)}",
        "page": {"url": "https://forwarder.invalid/check"},
    }
    body = orjson.dumps(
        {
            "event_source": "web",
            "event_source_id": settings.tiktok_pixel_code,
            "test_event_code": code,
            "data": [event],
        }
    )
    async with aiohttp.ClientSession() as session:
        client = TikTokClient(
            session, settings.tiktok_api_url, settings.access_token(), settings.request_timeout
        )
        try:
            outcome = classify(await client.send(body), time.time())
        except TransportError as error:
            outcome = classify_transport(error)
    print(
        f"test event    {outcome.verdict.value}: code {outcome.code}, {outcome.message} "
        f"(request_id {outcome.request_id or '-'})"
    )
    return outcome.verdict is Verdict.ACCEPTED


def _lint_payload(settings: Settings, source: str) -> int:
    try:
        raw = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()  # noqa: SIM115
    except OSError as error:
        raise ConfigError(f"--payload {source}: {error.strerror}") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        print(f"error    (input): not JSON: {error}")
        return EXIT_REFUSED
    report = shapes.check(
        document,
        now=time.time(),
        phone_region=settings.phone_region or None,
        max_age_s=settings.max_event_age,
    )
    print(f"read as {report.read_as}")
    findings = report.findings
    for finding in findings:
        # An error shows its reason code, the one the daemon stores in last_error.
        code = f" [{finding.code}]" if finding.code else ""
        print(f"{finding.level:<8} {finding.field}{code}: {finding.message}")
    errors = sum(1 for f in findings if f.level == "error")
    warnings = len(findings) - errors
    print(f"{errors} error(s), {warnings} warning(s)" if findings else "no problems found")
    return EXIT_REFUSED if errors else EXIT_OK
