"""``forwarder check --payload`` for Meta's shape: one Meta Conversions API server event, or an
outbox row whose ``payload_format`` is ``meta_capi``.

The row is converted exactly as the daemon converts it (``forwarder.tiktok.build_meta``). What
cannot be converted is an error with the daemon's reason code; the lint then sets that Meta field
aside and converts again, so that every such field is reported. The TikTok row it becomes is
linted as any row (``forwarder.tiktok.lint``), and the conversion is shown: each Meta field
mapped (sent as given), normalised (sent otherwise: hashed, fixed), not sent (a warning says
why), applied (consent, which is never sent) or dropped (and why), then the TikTok event as
sent. Nothing shown holds a value but that event, whose identifiers are hashed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from forwarder.tiktok.build_meta import converted_row
from forwarder.tiktok.build_row import COLUMNS
from forwarder.tiktok.checks import Invalid
from forwarder.tiktok.findings import ERROR, WARNING, Finding
from forwarder.tiktok.lint import lint
from forwarder.tiktok.lint_refusals import outbox_row, refusals_of
from forwarder.tiktok.meta_capi import META_CAPI, Converted, NotConvertible, shown

MAPPED = "mapped"
NORMALISED = "normalised"
NOT_SENT = "not sent"
APPLIED = "applied"
DROPPED = "dropped"

#: More refusals than a Meta event has objects: the bound of the conversion's loop.
_MAX_REFUSALS = 20
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Conversion:
    """What a Meta event became: a line per Meta field, and the TikTok event as sent."""

    #: (how, Meta field, TikTok field or why), how being MAPPED, NORMALISED, NOT_SENT, APPLIED
    #: or DROPPED.
    fields: list[tuple[str, str, str]] = field(default_factory=list)
    event: dict[str, Any] | None = None  # None when the row is refused


def meta_row(event: dict[str, Any]) -> dict[str, Any]:
    """The outbox row a bare Meta server event is inserted as: its event_name, event_id and
    event_time in the row's columns, itself as the payload."""
    row: dict[str, Any] = {"payload": event, "payload_format": META_CAPI}
    for column in ("event", "event_id", "event_time"):
        key = "event_name" if column == "event" else column
        if key in event:
            row[column] = event[key]
    return row


def lint_meta(
    document: dict[str, Any], *, now: float, phone_region: str | None, max_age_s: float
) -> tuple[list[Finding], Conversion]:
    """Lint a meta_capi row as the daemon converts and builds it, errors first; show how."""

    def lint_row(row: dict[str, Any]) -> list[Finding]:
        return lint(row, now=now, phone_region=phone_region, max_age_s=max_age_s)

    meta = _editable(document.get("payload"))
    errors: list[Finding] = []
    converted: Converted | None = None
    for _ in range(_MAX_REFUSALS):
        try:
            _, converted = converted_row(outbox_row({**document, "payload": meta}, now))
            break
        except NotConvertible as error:
            where = error.field.removeprefix("payload.")
            message = f"{error}; enqueue refuses the event and the daemon would dead-letter it"
            errors.append(Finding(ERROR, where, message, f"malformed/{error.rule}"))
            if not _set_aside(meta, error.field):
                break
        except Invalid:
            break  # a column, or the payload's JSON: the row's own lint reports it
    if converted is None:
        return errors or lint_row(document), Conversion()
    tiktok = {key: value for key, value in document.items() if key in COLUMNS}
    tiktok.pop("payload_format", None)
    tiktok.update(event=converted.event, event_source=converted.event_source)
    tiktok["payload"] = orjson.loads(orjson.dumps(converted.payload))
    findings = errors + lint_row(tiktok) + _dropped(converted) + _event_id(document, meta)
    refused = any(finding.level == ERROR for finding in findings)
    built = refusals_of(tiktok, now=now, phone_region=phone_region, max_age_s=max_age_s)[1]
    event = built.event if built is not None else None
    conversion = Conversion(_lines(converted, event), None if refused else event)
    return sorted(findings, key=lambda finding: finding.level != ERROR), conversion


def _editable(raw: object) -> object:
    """The payload as a fresh object the lint may change, or as given when it is not JSON."""
    try:
        if isinstance(raw, str):
            return orjson.loads(raw) if raw.strip() else {}
        return orjson.loads(orjson.dumps(raw)) if raw is not None else {}
    except (orjson.JSONDecodeError, TypeError):
        return raw


def _set_aside(meta: object, where: str) -> bool:
    """Remove the Meta field *where* (``payload.<path>``) names; False when there is none."""
    parts: list[str | int] = [
        int(index) if index else name for name, index in _PART.findall(where)
    ][1:]
    if not parts:
        return False
    node: Any = meta
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) and isinstance(part, str) else None
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        del node[last]
        return True
    return False


def _dropped(converted: Converted) -> list[Finding]:
    return [
        Finding(WARNING, shown(name), f"{shown(name)} is not carried over to TikTok: {why}")
        for name, why in dict.fromkeys(converted.dropped)
    ]


def _event_id(document: dict[str, Any], meta: object) -> list[Finding]:
    given = meta.get("event_id") if isinstance(meta, dict) else None
    if given is None or given == document.get("event_id"):
        return []
    return [
        Finding(
            WARNING,
            "event_id",
            "the Meta event's event_id differs from the row's event_id column, which TikTok "
            "gets: browser and server events deduplicate only when the Pixel sends that one",
        )
    ]


def _lines(converted: Converted, event: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    lines = []
    for meta, target in converted.mapped:
        if target.startswith("consent."):
            how = APPLIED
        elif event is None:
            how = MAPPED
        else:
            sent = _at(event, target)
            if sent is _ABSENT:
                how = NOT_SENT
            else:
                how = MAPPED if sent == _at(converted.payload, target) else NORMALISED
        lines.append((how, meta, target))
    lines.extend((DROPPED, shown(name), why) for name, why in dict.fromkeys(converted.dropped))
    return lines


def _at(obj: object, path: str) -> object:
    """The value at *path* (``user.email``, ``properties.contents[0].content_name``)."""
    node = obj
    for name, index in _PART.findall(path):
        if index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        elif name and isinstance(node, dict) and name in node:
            node = node[name]
        else:
            return _ABSENT
    return node
