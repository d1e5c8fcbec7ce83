"""The operator's and marketer's commands: dead letters, inspect, check."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import orjson

from forwarder import helptext, lint, payload, startup
from forwarder.classify import Verdict, classify, classify_transport
from forwarder.errors import ConfigError, StoreError, TransportError
from forwarder.events import OutboxRow
from forwarder.migrate import load
from forwarder.printable import printable
from forwarder.settings import Settings, parse_duration, store_options
from forwarder.store import open_store, redact_url
from forwarder.store.base import DeadFilter, OutboxStore, RowDetail
from forwarder.tiktok import TikTokClient

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 4
LIST_LIMIT = 50  # rows `dead list` shows unless told otherwise
REASON_CHARS = 80  # the longest reason `dead list` prints in its table (--json has all of it)

_T = TypeVar("_T")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `dead`, `inspect` and `check` to the command line; *common* holds the options
    every command takes."""
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
    listing = helptext.command(verbs, "dead list", common)
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=dead_list)
    replay = helptext.command(verbs, "dead replay", common)
    _filters(replay, ids=True)
    replay.add_argument("--dry-run", action="store_true", help="only count what would replay")
    replay.add_argument("--all", action="store_true", help="replay every dead row")
    replay.set_defaults(func=dead_replay)
    purge = helptext.command(verbs, "dead purge", common)
    _filters(purge, ids=True)
    purge.add_argument("--all", action="store_true", help="purge every dead row")
    purge.add_argument("--yes", action="store_true", help="really delete")
    purge.set_defaults(func=dead_purge)

    inspect = helptext.command(sub, "inspect", common)
    inspect.add_argument("event_id")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=inspect_event)

    check = helptext.command(sub, "check", common)
    check.add_argument(
        "--send-test",
        action="store_true",
        help="send one Test Event with TIKTOK_TEST_EVENT_CODE and show the answer",
    )
    check.add_argument(
        "--payload",
        metavar="FILE",
        help="lint one event instead (outbox columns as JSON; - for stdin)",
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


def with_store(
    settings: Settings,
    work: Callable[[OutboxStore], Awaitable[_T]],
    *,
    create: bool = False,
    migrated: bool = True,
) -> _T:
    """Open the store, run *work* on it, close it: the one way every command reaches the outbox.

    Only *create* makes a missing SQLite file (``migrate``); with *migrated*, a database the
    daemon's schema is not in yet is refused with one line instead of a missing-table error.
    """

    async def go() -> _T:
        store = await open_store(settings.database_url, create=create, **store_options(settings))
        try:
            if migrated and not await store.applied_migrations():
                raise StoreError(
                    f"the database {redact_url(settings.database_url)} has no outbox yet: "
                    "run `forwarder migrate` (or point --database-url at the daemon's database)"
                )
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
    rows = [[printable(cell) for cell in row] for row in rows]
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
        reason = _cut(r.last_error or "", REASON_CHARS)
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
            print(f"  {printable(code)}: {count}")
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


def _default_pixel(settings: Settings) -> str:
    """How `inspect` names a row's empty pixel_code: the default pixel, as far as it knows."""
    pixel = settings.tiktok_pixel_code
    return f"(default: {pixel})" if pixel else "(default: TIKTOK_PIXEL_CODE, not set here)"


def _cut(text: str, most: int) -> str:
    """*text* shortened to *most* characters, an ellipsis marking the cut."""
    return text if len(text) <= most else text[: most - 1] + "…"


def _by_code(rows: list[RowDetail]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.last_code or "-"] = counts.get(row.last_code or "-", 0) + 1
    return counts


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
    )
    # The event's body does not depend on the pixel (a placeholder stands in when none is
    # set here) nor on its age (an old event is still shown).
    shown = dataclasses.replace(
        options, max_age_s=1e12, default_pixel=options.default_pixel or "DEFAULT"
    )
    built = payload.build(outbox, shown, time.time())
    if isinstance(built, payload.Refused):
        return f"not shown ({built.code}): {built.reason}"
    return built.event


def inspect_event(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder inspect EVENT_ID`: every row with that event_id, and its history."""
    found = with_store(settings, lambda store: store.find(args.event_id))
    if not found:
        print(f"forwarder: no row with event_id {printable(args.event_id)}", file=sys.stderr)
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
        print(_inspect_text(document, _default_pixel(settings)))
    return EXIT_OK


def _inspect_text(document: dict[str, Any], default_pixel: str) -> str:
    """One row of `inspect` as text, every value from the row escaped (printable)."""
    p = printable
    lines = [
        f"row {document['id']}: {p(document['event'])} '{p(document['event_id'])}' "
        f"pixel {p(document['pixel_code'] or default_pixel)}",
        f"  status      {p(document['status'])}  attempts {document['attempts']}",
        f"  created     {_when(document['created_at'])}   event_time "
        f"{_event_time(document['event_time'])}",
        f"  updated     {_when(document['updated_at'])}   sent {_when(document['sent_at'])}",
    ]
    if document["status"] == "pending":
        due = document["next_attempt_at"]
        lines.append(f"  next try    {_when(due) if due else 'now'}")
    code, request_id = document["last_code"] or "-", document["request_id"] or "-"
    lines.append(f"  last code   {p(code)}   request_id {p(request_id)}")
    if document["reason"]:
        lines.append(f"  reason      {p(document['reason'])}")
    for replay in document["replays"]:
        lines.append(
            f"  replayed    {_when(replay['replayed_at'])}: was dead since "
            f"{_when(replay['dead_at'])} with {p(replay['code'])} after {replay['attempts']} "
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
            return _when(value)
        except (OverflowError, OSError, ValueError):
            pass
    return printable(value)


def check_command(settings: Settings, args: argparse.Namespace) -> int:
    """`forwarder check`: settings, token, database; optionally a test event or a payload lint."""
    if args.payload:
        return _lint_payload(settings, args.payload)
    failed = False
    # The validation `run` does, first: a settings error ends the check (exit 2) before any
    # line says ok.
    checked = startup.validate(settings)
    print(
        f"settings      ok (pixel {printable(settings.tiktok_pixel_code or 'NOT SET')}, "
        f"API {printable(settings.tiktok_api_url)}, database {redact_url(settings.database_url)})"
    )
    print(f"token         set ({checked.token.source})")
    for warning in checked.warnings:
        print(f"warning       {warning}")

    async def database(store: OutboxStore) -> list[str]:
        return await store.applied_migrations()

    try:
        applied = with_store(settings, database, migrated=False)
    except StoreError as error:
        print(f"database      FAILED: {error}")
        return EXIT_FAILURE
    dialect = "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"
    wanted = [m.name for m in load(dialect)]
    missing = [name for name in wanted if name not in applied]
    if missing:
        print(
            f"database      reachable, NOT MIGRATED ({printable(', '.join(missing))}): "
            "run forwarder migrate"
        )
        failed = True
    else:
        print(f"database      ok, migrated ({printable(', '.join(applied))})")
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
        f"test event    {outcome.verdict.value}: code {printable(outcome.code)}, "
        f"{printable(outcome.message)} (request_id {printable(outcome.request_id or '-')})"
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
        print(f"error    (input): not JSON: {printable(error)}")
        return EXIT_REFUSED
    findings = lint.lint(
        document,
        now=time.time(),
        phone_region=settings.phone_region or None,
        max_age_s=settings.max_event_age,
    )
    for finding in findings:
        print(f"{finding.level:<8} {printable(finding.field)}: {printable(finding.message)}")
    errors = sum(1 for f in findings if f.level == "error")
    warnings = len(findings) - errors
    print(f"{errors} error(s), {warnings} warning(s)" if findings else "no problems found")
    return EXIT_REFUSED if errors else EXIT_OK
