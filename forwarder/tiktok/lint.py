"""Lint one event as TikTok's Payload Helper would: ``forwarder check --payload FILE``.

The input is one event exactly as ``forwarder enqueue`` takes it: a JSON object of outbox columns
(``event_id``, ``event``, ``event_time``, ``event_source``, ``pixel_code``, ``test_event_code``,
``payload_format`` and ``payload``, an object or a JSON string of one); ``forwarder.tiktok.shapes``
turns TikTok's own shapes into such objects, and ``forwarder.tiktok.lint_meta`` Meta's. The lint
reports

* as an **error** exactly what the daemon refuses. It builds the event with
  ``forwarder.tiktok.build``, the daemon's own code reading ``forwarder.tiktok.schema``'s table,
  and reports the refusal with its reason code (``malformed/<rule>`` or ``too_old/age``) as the
  daemon stores it; then it sets that field aside and builds again, so that every refused field
  is reported, not only the first (``lint_refusals``). The one other error is what ``enqueue``
  refuses before a row exists: an unknown column.
* as a **warning** what is sent but costs matching, attribution or optimisation: what the
  builder drops, the fields it had to fix (a lower-case currency, a number in a string), and
  what TikTok does with a name, a hash or an event time (``lint_names``, ``lint_payload``).

It is pure: no I/O and no clock (*now* is passed in). No message ever holds an identifier's
value: messages name fields, and quote only key names, event names and currency codes from
TikTok's own closed lists.

References (§) are to tiktok-events-api.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from forwarder.tiktok.build_meta import is_tiktok
from forwarder.tiktok.build_row import COLUMNS, DEFAULT_EVENT_SOURCE, PAYLOAD_KEYS
from forwarder.tiktok.checks import FIELD_NAME, type_name
from forwarder.tiktok.findings import ENQUEUE_UNKNOWN_COLUMN, ERROR, WARNING, Finding
from forwarder.tiktok.lint_names import name_advice, time_advice
from forwarder.tiktok.lint_payload import (
    fix_advice,
    match_key_advice,
    payload_advice,
    usable_payload,
)
from forwarder.tiktok.lint_refusals import error_for, refusals_of
from forwarder.tiktok.spec import EVENT_SOURCES

__all__ = ["ERROR", "WARNING", "Finding", "lint"]

#: A builder warning starts with the field it is about, e.g. "user.phone[0]".
_LEADING_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*")


def lint(
    document: object, *, now: float, phone_region: str | None, max_age_s: float
) -> list[Finding]:
    """Return the problems in one ``enqueue`` document, errors first; [] for a clean event."""
    if not isinstance(document, dict):
        return [
            Finding(
                ERROR,
                "document",
                f"the event must be a JSON object of outbox columns, got {type_name(document)}; "
                f"enqueue refuses it. Columns: {', '.join(COLUMNS)}",
                ENQUEUE_UNKNOWN_COLUMN,
            )
        ]
    findings = list(_columns(document))
    refusals, built = refusals_of(document, now=now, phone_region=phone_region, max_age_s=max_age_s)
    findings.extend(error_for(refused, document) for refused in refusals)
    if not is_tiktok(document.get("payload_format")):
        # Not TikTok's shape: only the builder's refusals apply (``forwarder.tiktok.lint_meta``
        # lints a meta_capi row as the TikTok row it becomes).
        return sorted(findings, key=lambda finding: finding.level != ERROR)
    source = _source(document.get("event_source", DEFAULT_EVENT_SOURCE))
    event = document.get("event")
    name = event.strip() if isinstance(event, str) else None
    advice: list[Finding] = []
    if name and source:
        advice.extend(name_advice(name, source))
    advice.extend(time_advice(document.get("event_time"), now, max_age_s))
    body = usable_payload(document.get("payload"))
    if body is not None:  # an unusable payload is reported once, not once per thing it lacks
        advice.extend(payload_advice(body, name, source, phone_region))
    if built is not None:
        advice.extend(fix_advice(document, body, built))
        for warning in built.warnings:
            field = _leading_field(warning)
            if field != "event_time" and not _covered(field, advice):
                advice.append(Finding(WARNING, field, warning))
        user = body.get("user") if body is not None else None
        if body is not None and (user is None or isinstance(user, dict)):
            # Built.match_keys is what is really sent, after drops and consent.
            advice.extend(match_key_advice(built.match_keys, source))
    errors = list(findings)
    findings.extend(finding for finding in advice if not _covered(finding.field, errors))
    return sorted(findings, key=lambda finding: finding.level != ERROR)


def _columns(document: Mapping[Any, Any]) -> Iterator[Finding]:
    # The columns' types are the builder's to check; their names are enqueue's.
    for key in document:
        if key in COLUMNS:
            continue
        where = "; it belongs inside payload" if key in PAYLOAD_KEYS else ""
        yield Finding(
            ERROR,
            key if _quotable(key) else "document",
            f"{_key_text(key, 'column')}: enqueue refuses the event{where}. "
            f"Columns: {', '.join(COLUMNS)}",
            ENQUEUE_UNKNOWN_COLUMN,
        )


def _source(value: object) -> str | None:
    # The builder's rule: blank means web; anything outside EVENT_SOURCES is refused by it.
    if not isinstance(value, str):
        return None
    source = value.strip() or DEFAULT_EVENT_SOURCE
    return source if source in EVENT_SOURCES else None


def _leading_field(text: str) -> str:
    """The field a builder reason or warning is about, in the lint's naming."""
    match = _LEADING_FIELD.match(text)
    field = match.group(0) if match else "document"
    if field.startswith("payload."):
        return field.removeprefix("payload.")
    return field if field in COLUMNS or "." in field or "[" in field else "document"


def _covered(field: str, findings: list[Finding], level: str | None = None) -> bool:
    """Whether a finding (of *level*) is already about *field*, or inside or around it."""
    return any(
        (level is None or finding.level == level) and _related(field, finding.field)
        for finding in findings
    )


def _related(a: str, b: str) -> bool:
    return a == b or _inside(a, b) or _inside(b, a)


def _inside(a: str, b: str) -> bool:
    return a.startswith((b + ".", b + "["))


def _quotable(key: object) -> bool:
    """Whether *key* may be quoted: a field name, not something that might be personal data."""
    return isinstance(key, str) and FIELD_NAME.fullmatch(key) is not None


def _key_text(key: object, what: str) -> str:
    if _quotable(key):
        return f"unknown {what} {key!r}"
    return f"an unknown {what} (not shown: it does not look like a field name)"
