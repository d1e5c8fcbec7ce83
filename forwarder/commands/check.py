"""`forwarder check`: the settings as `run` validates them, the database; a test event; a
payload linted as TikTok's Payload Helper would."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from forwarder import startup
from forwarder.commands import common, helptext
from forwarder.errors import ConfigError, StoreError, TransportError
from forwarder.migrate import load
from forwarder.outcome import Verdict
from forwarder.printable import printable
from forwarder.settings import Settings
from forwarder.store import redact_url
from forwarder.store.base import OutboxStore
from forwarder.tiktok import shapes
from forwarder.tiktok.classify import classify, classify_transport
from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.lint_meta import Conversion


def add(sub: Any, common_options: argparse.ArgumentParser) -> None:
    """Add `check` to the command line."""
    check = helptext.command(sub, "check", common_options)
    check.add_argument(
        "--send-test",
        action="store_true",
        help="send one Test Event with TIKTOK_TEST_EVENT_CODE and show the answer",
    )
    check.add_argument(
        "--payload",
        metavar="FILE",
        help="lint an event instead: an outbox row, a TikTok event or a whole /event/track/ "
        "body (JSON; - for stdin)",
    )
    check.set_defaults(func=check_command)


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
        applied = common.with_store(settings, database, migrated=False)
    except StoreError as error:
        print(f"database      FAILED: {error}")
        return common.EXIT_FAILURE
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
    return common.EXIT_FAILURE if failed else common.EXIT_OK


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
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        raise ConfigError(f"--payload {source}: {error.strerror}") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        print(f"error    (input): not JSON: {printable(error)}")
        return common.EXIT_REFUSED
    report = shapes.check(
        document,
        now=time.time(),
        phone_region=settings.phone_region or None,
        max_age_s=settings.max_event_age,
    )
    print(f"read as {report.read_as}")
    if report.conversion is not None:
        _print_conversion(report.conversion)
    findings = report.findings
    for finding in findings:
        # An error shows its reason code, the one the daemon stores in last_error.
        code = f" [{finding.code}]" if finding.code else ""
        field = printable(finding.field)
        print(f"{finding.level:<8} {field}{code}: {printable(finding.message)}")
    errors = sum(1 for f in findings if f.level == "error")
    warnings = len(findings) - errors
    print(f"{errors} error(s), {warnings} warning(s)" if findings else "no problems found")
    return common.EXIT_REFUSED if errors else common.EXIT_OK


def _print_conversion(conversion: Conversion) -> None:
    """What each Meta field became, then the TikTok event as sent (identifiers hashed)."""
    print("converted from Meta's shape:")
    for how, meta, tiktok in conversion.fields:
        arrow = ":" if how == "dropped" else " ->"
        print(f"  {how:<10} {printable(meta)}{arrow} {printable(tiktok)}")
    if conversion.event is None:
        print("TikTok event: none, the row is refused (errors below)")
        return
    print("TikTok event, as sent (identifiers hashed):")
    shown = orjson.dumps(conversion.event, option=orjson.OPT_INDENT_2).decode()
    for line in shown.split("\n"):
        print("  " + printable(line))
