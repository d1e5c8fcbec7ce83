"""What each command's ``--help`` says: what it does, its defaults, the settings it reads, an
example and its exit codes; one table, so every command teaches the same way."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

TOP_EPILOG = """\
Settings come from the environment, then ./.env (or --env-file); .env.example documents each.
`forwarder COMMAND --help` shows a command's defaults, settings, an example and exit codes.

exit codes:
  0  done
  1  a runtime failure: database unreachable or not migrated, a failed check
  2  a bad setting or bad usage (the message names the setting)
  3  run --once ended with delivery paused (token, permissions or the pixel)
  4  the event was refused (enqueue, check --payload)"""

_DATABASE = "FORWARDER_DATABASE_URL (default sqlite:///forwarder.db), FORWARDER_POSTGRES_POLL_ONLY"
_FAILURE = "  1  the database is unreachable, missing or not migrated"
_CONFIG = "  2  a bad setting or bad usage"


@dataclass(frozen=True, slots=True)
class Help:
    """The help of one command."""

    summary: str  # one line, in `forwarder --help`
    description: str  # what it does, with its defaults
    reads: str  # the settings it reads
    example: str
    exits: str  # the exit codes it uses, one per line


COMMANDS: dict[str, Help] = {
    "run": Help(
        "run the daemon (migrates first)",
        "Migrate the outbox schema, then deliver due rows to TikTok until SIGTERM or SIGINT\n"
        "(in-flight requests get FORWARDER_SHUTDOWN_GRACE, then every lease is given back).\n"
        "Serves /metrics, /healthz and /readyz on FORWARDER_HTTP_ADDR (not with --once).\n"
        "Logs one line a minute while it delivers (delivered by code, retried, dead).",
        "every setting: TIKTOK_ACCESS_TOKEN (or TIKTOK_ACCESS_TOKEN_FILE, or the systemd\n"
        "credential tiktok-access-token), TIKTOK_PIXEL_CODE, TIKTOK_API_URL, " + _DATABASE + ",\n"
        "FORWARDER_HTTP_ADDR (default 127.0.0.1:9464; port 0 picks a free one), ...",
        "forwarder run --env-file /etc/forwarder/forwarder.env\n"
        "  forwarder run --once        # deliver what is due now, then exit",
        "  0  stopped by SIGTERM/SIGINT, or --once delivered everything due\n"
        + _FAILURE
        + "\n"
        + _CONFIG
        + "\n  3  --once ended with delivery paused (token, permissions or the pixel)",
    ),
    "migrate": Help(
        "create or upgrade the outbox schema (idempotent)",
        "Apply the migrations not yet applied and print their names, or `up to date`.\n"
        "Creates a missing SQLite file (its folder must exist); safe when two daemons start.",
        _DATABASE,
        "forwarder migrate --database-url sqlite:////var/lib/forwarder/forwarder.db",
        "  0  applied, or up to date\n  1  the database is unreachable or a migration failed\n"
        + _CONFIG,
    ),
    "enqueue": Help(
        "insert one event given as JSON; prints its row id",
        "Insert one event, given as a JSON object of outbox columns (event_id, event, and\n"
        "optionally event_time, payload as an object, pixel_code, event_source,\n"
        "test_event_code, payload_format), from FILE or stdin. It is checked exactly as the\n"
        "daemon checks rows; a duplicate (same pixel_code, event, event_id) prints the existing\n"
        "row's id. --payload-format meta_capi: payload is one Meta Conversions API server event.",
        _DATABASE + ", and the settings that shape events (TIKTOK_PIXEL_CODE,\n"
        "FORWARDER_PHONE_REGION, FORWARDER_CONSENT_DEFAULT, FORWARDER_MAX_EVENT_AGE)",
        'echo \'{"event_id": "lead-7", "event": "Lead", "payload": {"user": {"email": '
        '"a@example.com"}}}\' | forwarder enqueue',
        "  0  inserted, or already there\n" + _FAILURE + "\n" + _CONFIG + "\n"
        "  4  the event was refused (the reason is printed)",
    ),
    "status": Help(
        "show the outbox and the destination",
        "Rows by status, age of the oldest pending row, when the next is due, whether delivery\n"
        "is paused and why, and the failure codes of pending and dead rows in the last 24 h.\n"
        "Read-only: never creates a database.",
        _DATABASE,
        "sudo forwarder status --env-file /etc/forwarder/forwarder.env",
        "  0  shown\n" + _FAILURE + "\n" + _CONFIG,
    ),
    "dead": Help(
        "list, replay or purge dead letters",
        "Dead rows are events TikTok refused, or rows that could not be sent (malformed,\n"
        "too_old, oversize); each keeps its code and reason until replayed or purged.",
        _DATABASE,
        "forwarder dead list --since 1h\n  forwarder dead replay --code 40002 --dry-run",
        "  0  done\n" + _FAILURE + "\n" + _CONFIG,
    ),
    "dead list": Help(
        "show dead rows, newest failures last",
        "Dead rows with their code, attempts, time, TikTok request_id and reason.\n"
        "Filters combine: --code, --event, --since (2h, 7d or a date); at most --limit rows\n"
        "(default 50). Read-only.",
        _DATABASE,
        "forwarder dead list --code malformed --since 7d --json",
        "  0  shown (also when none match)\n" + _FAILURE + "\n" + _CONFIG,
    ),
    "dead replay": Help(
        "return dead rows to pending (keeps the failure)",
        "Return matching dead rows to pending with their attempts reset, in batches, after\n"
        "recording each row's failure in tiktok_outbox_replays. Needs row ids, a filter or\n"
        "--all; --dry-run only counts.",
        _DATABASE,
        "forwarder dead replay --code 40002 --since 1d",
        "  0  replayed (or counted)\n" + _FAILURE + "\n  2  no ids, filter or --all; bad usage",
    ),
    "dead purge": Help(
        "delete dead rows",
        "Delete matching dead rows for good. Needs row ids, a filter or --all, and --yes.",
        _DATABASE,
        "forwarder dead purge --code too_old --yes",
        "  0  purged\n" + _FAILURE + "\n  2  no --yes, or no ids, filter or --all",
    ),
    "inspect": Help(
        "one event's life, identifiers shown hashed",
        "Every row with this event_id: status, attempts, codes, TikTok request ids, times,\n"
        "earlier failures, and the event as TikTok gets it (identifiers hashed). Read-only.",
        _DATABASE + ", and the settings that shape events (TIKTOK_PIXEL_CODE,\n"
        "FORWARDER_PHONE_REGION, FORWARDER_CONSENT_DEFAULT)",
        "forwarder inspect order-10492",
        "  0  found\n  1  no row has this event_id, or the database is unreachable\n" + _CONFIG,
    ),
    "check": Help(
        "check settings and database; lint a payload",
        "Validate the settings exactly as `run` does (nothing is printed as ok before an error),\n"
        "then check that the database is reachable and migrated (read-only).\n"
        "--send-test also sends one Test Event with TIKTOK_TEST_EVENT_CODE and shows TikTok's\n"
        "answer. --payload FILE lints one event as TikTok's Payload Helper would instead.",
        "every setting, as `run` reads them",
        "forwarder check --env-file /etc/forwarder/forwarder.env\n"
        "  forwarder check --payload event.json",
        "  0  everything checked is fine\n  1  the database is unreachable, missing or not "
        "migrated, or the test event was refused\n" + _CONFIG + "\n"
        "  4  --payload found errors",
    ),
}


def common_options() -> argparse.ArgumentParser:
    """The options every command takes: where its settings and its database are."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("settings")
    group.add_argument(
        "--env-file",
        metavar="FILE",
        help="read settings from FILE instead of ./.env (the environment still wins)",
    )
    group.add_argument(
        "--database-url",
        metavar="URL",
        help="the outbox database, over FORWARDER_DATABASE_URL "
        "(sqlite:///relative.db, sqlite:////absolute.db, postgresql://...)",
    )
    return common


def command(sub: Any, name: str, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the subcommand *name* (``"dead list"`` for a verb) with its help from COMMANDS."""
    text = COMMANDS[name]
    epilog = (
        f"settings read:\n  {text.reads.replace(chr(10), chr(10) + '  ')}\n\n"
        f"example:\n  {text.example}\n\nexit codes:\n{text.exits}"
    )
    parser: argparse.ArgumentParser = sub.add_parser(
        name.rsplit(maxsplit=1)[-1],
        help=text.summary,
        description=text.description,
        epilog=epilog,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(parser=parser)
    return parser
