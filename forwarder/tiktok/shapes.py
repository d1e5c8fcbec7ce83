"""Read what ``forwarder check --payload`` is given, in any of the four shapes it accepts.

- an **outbox row**: the JSON object ``forwarder enqueue`` takes (its columns, with ``payload``);
  one whose ``payload_format`` is ``meta_capi`` is converted first (``lint_meta``);
- **one TikTok event**, as TikTok's Payload Helper and docs show an element of ``data[]``
  (``event``, ``event_time``, ``event_id``, ``user``, ``properties``, ``page``, ...);
- a whole **/event/track/ request body** (``event_source``, ``event_source_id``, optional
  ``test_event_code``, ``data``), whose events are each checked, named by their index;
- **one Meta server event** (``event_name``, ``user_data``, ``custom_data``, ``action_source``,
  ...), checked as the ``meta_capi`` row that carries it.

The shape is told by keys alone: ``data`` makes a request body (Meta's, whose events have Meta's
keys, is refused: a row holds one event); ``payload`` or a column only a row has
(``pixel_code``, ``event_source``, ``test_event_code``, ``payload_format``) makes a row; one of
Meta's event keys makes a Meta event; one of the objects of an event (``user``, ``properties``,
...) at the top makes a TikTok event; anything else is read as a row (with only ``event``,
``event_id`` and ``event_time`` the two shapes are the same). A TikTok event is checked as the
row ``forwarder enqueue`` would make of it: the lint's errors are the builder's refusals whatever
the shape. § are to tiktok-events-api.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from forwarder.tiktok.build_row import DEFAULT_EVENT_SOURCE
from forwarder.tiktok.checks import MISSING, TYPE, VALUE, type_name
from forwarder.tiktok.lint import ERROR, WARNING, Finding, lint
from forwarder.tiktok.lint_meta import Conversion, lint_meta, meta_row
from forwarder.tiktok.meta_capi import META_CAPI
from forwarder.tiktok.spec import EVENT_SOURCES, HASHED_LIST_KEYS, HASHED_SCALAR_KEYS, MAX_EVENTS

OUTBOX_ROW = "outbox row"
TIKTOK_EVENT = "TikTok event"
TIKTOK_REQUEST = "TikTok request"
META_EVENT = "Meta server event"
META_REQUEST = "Meta request"

#: The keys an outbox row has and a TikTok event has not (event_source is the request's, §2.1).
_ROW_ONLY = frozenset(
    ("payload", "pixel_code", "event_source", "test_event_code", "payload_format")
)
#: Keys of a Meta server event that neither a row nor a TikTok event has.
_META_ONLY = frozenset(
    ("event_name", "user_data", "custom_data", "action_source", "app_data", "event_source_url")
)
#: The objects of a TikTok event (§2.2), which a row holds inside payload.
_EVENT_ONLY = frozenset(("user", "properties", "page", "app", "ad", "lead", "limited_data_use"))
#: The columns a TikTok event shares with a row.
_SHARED = ("event_id", "event", "event_time")
#: §2.1: the top-level fields of a request.
_REQUEST_KEYS = ("event_source", "event_source_id", "test_event_code", "partner_name", "data")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Report:
    """What was read, and the findings, errors first (fields of a request start ``data[i].``)."""

    shape: str  # OUTBOX_ROW, TIKTOK_EVENT, TIKTOK_REQUEST, META_EVENT or META_REQUEST
    read_as: str  # one line saying how the input was read
    findings: list[Finding]
    conversion: Conversion | None = None  # a Meta event's: what became of each field


class _Options(NamedTuple):
    now: float
    phone_region: str | None
    max_age_s: float

    def lint(self, document: object) -> list[Finding]:
        return lint(
            document, now=self.now, phone_region=self.phone_region, max_age_s=self.max_age_s
        )


def shape_of(document: object) -> str:
    """Tell which of the three shapes *document* is."""
    if isinstance(document, dict):
        if "data" in document:
            data = document["data"]
            events = data if isinstance(data, list) else []
            meta = any(isinstance(event, dict) and event.keys() & _META_ONLY for event in events)
            return META_REQUEST if meta else TIKTOK_REQUEST
        if document.keys() & _ROW_ONLY:
            return OUTBOX_ROW
        if document.keys() & _META_ONLY:
            return META_EVENT
        if document.keys() & _EVENT_ONLY:
            return TIKTOK_EVENT
    return OUTBOX_ROW


def check(document: object, *, now: float, phone_region: str | None, max_age_s: float) -> Report:
    """Lint *document* in whichever shape it is."""
    options = _Options(now, phone_region, max_age_s)
    shape = shape_of(document)
    if shape == TIKTOK_REQUEST:
        assert isinstance(document, dict)
        return _request(document, options)
    if shape == TIKTOK_EVENT:
        assert isinstance(document, dict)
        findings = _event(document, DEFAULT_EVENT_SOURCE, "", None, options)
        read_as = (
            "one TikTok event (an element of data[]), checked as an event_source web event; "
            "give the whole /event/track/ body to check it for another source"
        )
        return Report(shape, read_as, _ordered(findings))
    if shape == META_REQUEST:
        return _meta_request()
    if shape == META_EVENT or _converted(document):
        assert isinstance(document, dict)
        row = meta_row(document) if shape == META_EVENT else document
        findings, conversion = lint_meta(
            row, now=now, phone_region=phone_region, max_age_s=max_age_s
        )
        read_as = (
            "one Meta server event, checked as the outbox row (payload_format meta_capi) that "
            "carries it: its event_name, event_id and event_time are the row's columns"
            if shape == META_EVENT
            else "an outbox row in Meta's shape (payload_format meta_capi), converted as the "
            "daemon converts it"
        )
        return Report(shape, read_as, findings, conversion)
    read_as = "an outbox row, as forwarder enqueue takes it"
    return Report(shape, read_as, options.lint(document))


def _converted(document: object) -> bool:
    """Whether *document* is a row the daemon converts from Meta's shape."""
    if not isinstance(document, dict):
        return False
    given = document.get("payload_format")
    return isinstance(given, str) and given.strip() == META_CAPI


def _meta_request() -> Report:
    message = (
        "a Meta request body: a row holds one Meta server event (one element of data) as its "
        "payload; a row with this payload is dead-lettered. Check one event at a time"
    )
    finding = Finding(ERROR, "data", message, f"malformed/{VALUE}")
    return Report(META_REQUEST, "a Meta Conversions API request body", [finding])


def _event(
    event: dict[str, Any], source: str, source_id: str, test_code: object, options: _Options
) -> list[Finding]:
    """Lint one TikTok event as the row enqueue would make of it, in TikTok's field names."""
    row: dict[str, Any] = {key: event[key] for key in _SHARED if key in event}
    row["event_source"] = source
    row["pixel_code"] = source_id
    if isinstance(test_code, str):
        row["test_event_code"] = test_code
    row["payload"] = {key: value for key, value in event.items() if key not in _SHARED}
    findings = [
        replace(
            finding,
            field=finding.field.removeprefix("payload."),
            message=finding.message.removeprefix("payload."),
        )
        for finding in options.lint(row)
    ]
    findings.extend(_unhashed(event.get("user")))
    return findings


def _unhashed(user: object) -> list[Finding]:
    # §6: in a body sent to TikTok these identifiers must already be SHA-256 hashes; enqueued,
    # the daemon hashes raw ones, so this is a warning.
    if not isinstance(user, dict):
        return []
    found = []
    for key in HASHED_LIST_KEYS + HASHED_SCALAR_KEYS:
        value = user.get(key)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(item, str) and not _SHA256.fullmatch(item) for item in values):
            found.append(
                Finding(
                    WARNING,
                    f"user.{key}",
                    f"user.{key} is not a lower-case SHA-256: TikTok's shape wants it hashed "
                    "(docs/tiktok-events-api.md §6), so this body cannot be sent to TikTok as it "
                    "is; enqueued, the daemon normalises and hashes it",
                )
            )
    return found


def _request(body: dict[str, Any], options: _Options) -> Report:
    findings = list(_request_fields(body))
    source = body.get("event_source")
    source = source if source in EVENT_SOURCES else DEFAULT_EVENT_SOURCE
    source_id = body.get("event_source_id")
    source_id = source_id if isinstance(source_id, str) else ""
    data = body.get("data")
    events = data if isinstance(data, list) else []
    for index, event in enumerate(events):
        where = f"data[{index}]"
        if not isinstance(event, dict):
            message = f"{where} must be an event object, got {type_name(event)}; TikTok rejects it"
            findings.append(Finding(ERROR, where, message, f"request/{TYPE}"))
            continue
        for finding in _event(event, source, source_id, body.get("test_event_code"), options):
            field = where if finding.field == "document" else f"{where}.{finding.field}"
            findings.append(replace(finding, field=field))
    read_as = (
        f"a TikTok /event/track/ request body with {len(events)} event(s), "
        f"checked as event_source {source}"
    )
    return Report(TIKTOK_REQUEST, read_as, _ordered(findings))


def _request_fields(body: dict[str, Any]) -> list[Finding]:
    """The request's own fields (§2.1, §3.1), whose faults TikTok answers with 40002 or 40061."""
    found: list[Finding] = []

    def error(field: str, rule: str, message: str) -> None:
        found.append(
            Finding(ERROR, field, f"{message}; TikTok rejects the request", f"request/{rule}")
        )

    source = body.get("event_source")
    if source not in EVENT_SOURCES:
        rule = MISSING if source is None else VALUE
        error("event_source", rule, f"event_source must be one of {', '.join(EVENT_SOURCES)}")
    source_id = body.get("event_source_id")
    if not (isinstance(source_id, str) and source_id.strip()):
        rule = MISSING if source_id is None or isinstance(source_id, str) else TYPE
        error(
            "event_source_id",
            rule,
            "event_source_id must be the pixel code (web), app id, offline or CRM event set id",
        )
    code = body.get("test_event_code")
    if code is not None and not isinstance(code, str):
        error("test_event_code", TYPE, f"test_event_code must be a string, got {type_name(code)}")
    data = body.get("data")
    if not isinstance(data, list):
        error("data", TYPE, f"data must be a list of events, got {type_name(data)}")
    elif not data:
        error("data", MISSING, "data holds no event")
    elif len(data) > MAX_EVENTS:
        error(
            "data",
            VALUE,
            f"data holds {len(data)} events, more than {MAX_EVENTS} "
            "(docs/tiktok-events-api.md §3.1)",
        )
    if "partner_name" in body:
        found.append(
            Finding(
                WARNING,
                "partner_name",
                "partner_name is for integrations TikTok registered as partners; another name "
                "gets 40063 (docs/tiktok-events-api.md §2.1); the daemon does not send one",
            )
        )
    for key in body:
        if key not in _REQUEST_KEYS:
            name = (
                f"unknown top-level key {key!r}" if _quotable(key) else "an unknown top-level key"
            )
            found.append(
                Finding(
                    WARNING,
                    key if _quotable(key) else "document",
                    f"{name}: a request has {', '.join(_REQUEST_KEYS)}; event fields go inside "
                    "each element of data",
                )
            )
    return found


def _quotable(key: object) -> bool:
    return isinstance(key, str) and _FIELD_NAME.fullmatch(key) is not None


def _ordered(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda finding: finding.level != ERROR)
